"""Gin files of this repository: where they resolve from, and the one
parser every entry point uses (train.py, eval.py, param_count, sweeps).

Imports nothing heavy, so the sweep runner can parse its grid without
loading TensorFlow; the configurables a file binds must be registered by
the caller (ranking.launch registers every training one).
"""

import os
from typing import Sequence

import gin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path: str) -> str:
  """`path` as given if it exists, else relative to the repository root."""
  return path if os.path.isfile(path) else os.path.join(REPO, path)


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str]):
  """Parses the files (includes resolve from the repository root) and
  bindings; an unknown configurable or parameter raises here, naming it."""
  if not gin_files:
    raise ValueError("Give at least one --gin_file, e.g. "
                     "configs/large_dcn_clippy.gin.")
  for path in gin_files:
    if not os.path.isfile(resolve(path)):
      raise FileNotFoundError(f"Gin file not found: {path}")
  gin.add_config_file_search_path(REPO)
  gin.parse_config_files_and_bindings([resolve(p) for p in gin_files],
                                      gin_params)
