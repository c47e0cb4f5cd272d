"""Every shipped gin file parses against the registered configurables."""

import glob
import os
import re

import gin
import pytest

from ranking import gin_files, launch
from sweeps import kinds as sweeps_main
from sweeps import ablation  # registers Ablation (table3*.gin)
from sweeps import grid  # registers Sweep, which the table2*.gin files bind


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"),
                           recursive=True))


def test_there_are_configs():
  assert len(CONFIGS) >= 30
  for model in ("small", "large", "large_dcn"):
    for method in ("naive", "gc", "agc", "lamb", "clippy", "clippy_adam"):
      assert os.path.join(ROOT, "configs", f"{model}_{method}.gin") in CONFIGS


@pytest.mark.parametrize("path", CONFIGS,
                         ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_parses(path):
  gin.clear_config()
  try:
    # As train.py parses: includes resolve from the repository root, and
    # unknown configurables or parameters raise here. What a file marks
    # %gin.REQUIRED gets a placeholder, as a user would supply it.
    with open(path) as f:
      required = re.findall(r"^(\S+) = %gin.REQUIRED", f.read(), re.M)
    launch.parse_gin([path], [f"{name} = 'placeholder'" for name in required])
    # Every macro a shipped file binds is read by a binding.
    assert not gin_files.unused_macro_warnings()
  finally:
    gin.clear_config()


def test_a_macro_nothing_reads_is_named_with_the_one_meant():
  gin.clear_config()
  try:
    launch.parse_gin(["configs/large_dcn_clippy.gin"],
                     ["LEARNIN_RATE = 0.05", "learning_rate = 0.05",
                      "UNRELATED = 1", "LEARNING_RATE = 0.03"])
    assert gin_files.unused_macro_warnings() == [
        f"WARNING: gin macro {name} is bound but no binding reads %{name}, "
        f"so it changes nothing{hint}" for name, hint in (
            ("LEARNIN_RATE", "; did you mean LEARNING_RATE?"),
            ("UNRELATED", ""),
            ("learning_rate", "; did you mean LEARNING_RATE?"))]
    # A macro read inside a list counts as read.
    gin.clear_config()
    launch.parse_gin(["configs/large_dcn_clippy.gin"],
                     ["MY_WIDTH = 8", "build_model.bottom_widths = [%MY_WIDTH]"])
    assert not gin_files.unused_macro_warnings()
  finally:
    gin.clear_config()


SWEEPS = sorted(glob.glob(os.path.join(ROOT, "configs", "table2*.gin")))


@pytest.mark.parametrize("path", SWEEPS,
                         ids=[os.path.relpath(p, ROOT) for p in SWEEPS])
def test_sweep_config_builds(path):
  gin.clear_config()
  try:
    sweep = grid.load_sweep([path], [])
    assert sweep.total_runs() == len(set(
        r.name for r in _play_out(sweep)))
  finally:
    gin.clear_config()


def _play_out(sweep):
  """Every run of the protocol, with made-up results."""
  results = {}
  while True:
    missing = [r for r in grid.plan(sweep, results) if r.name not in results]
    if not missing:
      return grid.plan(sweep, results)
    for r in missing:
      results[r.name] = (0.5 + 0.001 * len(results), False)


TABLE3 = sorted(glob.glob(os.path.join(ROOT, "configs", "table3*.gin")))


@pytest.mark.parametrize("path", TABLE3,
                         ids=[os.path.relpath(p, ROOT) for p in TABLE3])
def test_table3_config_builds(path):
  gin.clear_config()
  try:
    sweep = sweeps_main.load([path], [])
  finally:
    gin.clear_config()
  if isinstance(sweep, ablation.Ablation):  # every run known at once
    runs = sweep.plan({})
  else:  # the calibration ladder
    runs = _play_out(sweep)
  assert sweep.total_runs() == len(set(r.name for r in runs)) > 1


def test_cpu_preset_is_the_paper_grid():
  gin.clear_config()
  try:
    sweep = grid.load_sweep(["configs/table2_cpu.gin"], [])
  finally:
    gin.clear_config()
  assert list(sweep.models) == ["Small", "Large", "Large+DCN"]
  assert sweep.methods == ("naive", "gc", "agc", "lamb", "clippy")
  # The paper's grids moved up to this scale's gradients, keeping each
  # one's loosest value.
  assert sweep.thresholds == {"gc": (10.0, 1.0, 0.1),
                              "agc": (1.0, 0.1, 0.01),
                              "lamb": (1.0, 0.1, 0.01)}
  for method, values in grid.PAPER_THRESHOLDS.items():
    assert max(values) in sweep.thresholds[method]
  assert sweep.lr_multipliers == (1.0, 2.0) and sweep.seeds == (0, 1, 2)
  # Thresholds searched on every model: naive 2+2, GC/AGC/LAMB 3x2+2 each,
  # Clippy 2+2 = 32 runs a model.
  assert sweep.threshold_search_model is None
  assert sweep.total_runs() == 3 * 32
