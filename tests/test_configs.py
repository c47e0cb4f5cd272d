"""Every shipped gin file parses against the registered configurables."""

import glob
import os
import re

import gin
import pytest

from ranking import launch


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
  finally:
    gin.clear_config()
