"""A quiet console: TensorFlow's start-up lines off stderr unless asked for.

TensorFlow's C++ core logs through absl before anything initialises absl's
logging, so TF_CPP_MIN_LOG_LEVEL does not reach these lines:

  WARNING: All log messages before absl::InitializeLog() is called ...
  I0000 00:00:1796284958.673559    2744 port.cc:153] oneDNN custom ...
  E0000 00:00:1796284961.879286    2744 cuda_platform.cc:52] failed call to cuInit

Entry points import TensorFlow and scan the devices inside
`startup_filtered()`, which holds stderr (file descriptor 2, where C++
writes) in a temporary file and then passes on every line but these. The
Python-side INFO lines (absl logging, e.g. one per checkpoint written) are
silenced by `quiet_python_logging`. `--verbosity=N` (or -v N) on the command
line shows everything. No TensorFlow import here: this runs before it.
"""

import contextlib
import os
import re
import sys
import tempfile

# The start-up lines dropped: absl's note, C++ INFO and WARNING lines, and
# the CUDA probe's error on a machine without a GPU (only that one E line).
STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with "
    r"the appropriate compiler flags\."
    r"|E\d{4} [\d:.]+\s+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit")


def verbose_requested(argv) -> bool:
  """Whether the command line sets absl's --verbosity (or -v)."""
  return any(a in ("-v", "--verbosity") or a.startswith(("--verbosity=",
                                                          "-v="))
             for a in argv[1:])


def is_startup_noise(line: str) -> bool:
  return STARTUP_NOISE.match(line) is not None


@contextlib.contextmanager
def startup_filtered(enabled: bool = True):
  """Holds what is written to stderr inside the block and passes on all but
  STARTUP_NOISE when it ends (also when the block raises)."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = [line for line in held.read().decode(
          errors="replace").splitlines(keepends=True)
              if not is_startup_noise(line)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


def import_tensorflow(argv=None):
  """Imports TensorFlow and scans its devices with the start-up lines
  filtered (unless --verbosity is on the command line); returns tf."""
  with startup_filtered(not verbose_requested(argv or sys.argv)):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # the CUDA probe logs here
  return tf


def quiet_python_logging(verbosity_flag):
  """absl's INFO lines (TensorFlow's Python side logs through it: one per
  checkpoint written) would drown the progress lines: WARNING and above
  unless --verbosity is given."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not verbosity_flag.present:
    logging.set_verbosity(logging.WARNING)
