"""Every shipped gin file parses against the registered configurables."""

import glob
import os

import gin
import pytest

# Importing registers every configurable a config may bind.
import data.files  # pylint: disable=unused-import
import data.kuairand  # pylint: disable=unused-import
import data.movielens  # pylint: disable=unused-import
import data.synthetic  # pylint: disable=unused-import
import data.window  # pylint: disable=unused-import
import optim  # pylint: disable=unused-import

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"),
                           recursive=True))


def test_there_are_configs():
  assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS,
                         ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_parses(path):
  gin.clear_config()
  try:
    gin.parse_config_file(path)  # unknown bindings or typos raise here
  finally:
    gin.clear_config()
