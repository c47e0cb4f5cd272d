"""The collector policy of the entry points (ranking/collector.py)."""

import gc
import os
import subprocess
import sys
import weakref

import pytest

from ranking import collector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class _Node:
  pass


def _cycle():
  """A weak reference to an object kept alive only by a reference cycle."""
  node = _Node()
  node.self = node
  return weakref.ref(node)


@pytest.fixture(autouse=True)
def _restore_gc():
  enabled = gc.isenabled()
  yield
  gc.unfreeze()
  if enabled:
    gc.enable()
  else:
    gc.disable()


def test_the_block_pauses_the_collector_and_freezes_what_it_made():
  gc.enable()
  with collector.long_lived():
    assert not gc.isenabled()
    made_inside = _cycle()
  assert gc.isenabled()
  assert gc.get_freeze_count() > 0
  made_after = _cycle()
  gc.collect()
  assert made_after() is None  # collections go on for new objects
  assert made_inside() is not None  # the frozen ones are skipped
  gc.unfreeze()
  gc.collect()
  assert made_inside() is None  # it was garbage, kept only by the freeze


def test_a_collector_switched_off_before_stays_off_also_when_the_block_raises():
  gc.disable()
  with pytest.raises(KeyError):
    with collector.long_lived():
      raise KeyError("while importing")
  assert not gc.isenabled()
  assert gc.get_freeze_count() > 0
  gc.enable()
  with pytest.raises(KeyError):
    with collector.long_lived():
      raise KeyError("while importing")
  assert gc.isenabled()


def test_the_exit_freeze_runs_after_the_handlers_registered_later():
  code = (
      "import atexit, gc\n"
      "from ranking import collector\n"
      "atexit.register(lambda: print('last', gc.get_freeze_count() > 0))\n"
      "collector.freeze_at_exit()\n"
      "atexit.register(lambda: print('first', gc.get_freeze_count()))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  assert out.split("\n") == ["first 0", "last True", ""]
