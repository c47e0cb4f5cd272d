"""Reads a run's metrics.jsonl (or .jsonl.gz) into per-split series, and
names its layers.

A run resumed after a kill logs again the steps after its last checkpoint;
the later record of a step wins.
"""

import gzip
import math
import json
import os
from typing import Dict, List, Tuple

Series = Dict[str, List[Tuple[int, float]]]

DIAGNOSTIC_PREFIX = "diagnostics/"


def read_metrics(run_directory: str) -> Dict[str, Dict[int, Dict]]:
  """{split: {step: record}} of a run's metrics.jsonl."""
  out: Dict[str, Dict[int, Dict]] = {}
  path = os.path.join(run_directory, "metrics.jsonl")
  if not os.path.exists(path) and os.path.exists(path + ".gz"):
    path += ".gz"
  if not os.path.exists(path):
    raise FileNotFoundError(f"No metrics.jsonl(.gz) in {run_directory}.")
  try:
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
      for line_number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(
              f"{path} line {line_number} is not JSON: {e}") from e
        out.setdefault(record["split"], {})[int(record["step"])] = record
  except (EOFError, OSError) as e:  # a truncated or corrupt .gz
    raise ValueError(f"{path} cannot be read: {type(e).__name__}: {e}") from e
  return out


def series(records: Dict[int, Dict], key: str) -> List[Tuple[int, float]]:
  """[(step, value)] of one scalar, by step; non-finite values (null in
  strict metrics.jsonl, strings in older runs) as NaN."""
  return [(step, math.nan if records[step][key] is None
           else float(records[step][key]))
          for step in sorted(records) if key in records[step]]


def layers(records: Dict[int, Dict], kernels_only: bool = True) -> List[str]:
  """The dense layers with diagnostics, from input to output (the order the
  optimizer was built in), e.g. 'ranker/bottom/dense_0/kernel'."""
  first = next(iter(records.values()), {})
  names = [key[len(DIAGNOSTIC_PREFIX):-len("/sigma")] for key in first
           if key.startswith(DIAGNOSTIC_PREFIX) and key.endswith("/sigma")]
  return [n for n in names if not kernels_only or "kernel" in n]


def is_head(layer: str) -> bool:
  """Task heads (top) as opposed to the shared bottom and cross layers."""
  return not layer.startswith("ranker/")


def short_name(layer: str) -> str:
  """'ranker/bottom/dense_0/kernel' -> 'bottom/dense_0'."""
  parts = [p for p in layer.split("/") if p not in ("ranker", "kernel")]
  if parts and parts[0] == "cross" and len(parts) > 1:
    parts = parts[:2]
  return "/".join(parts)
