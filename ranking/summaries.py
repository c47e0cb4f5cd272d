"""Scalars to TensorBoard and, the same ones, to metrics.jsonl."""

import os
from typing import Mapping

import tensorflow as tf

from ranking.integrity import dumps_strict


class ScalarWriter:
  """Writes {name: value} at a step to TensorBoard (a directory per split:
  train/, eval/, recovery/, sharpness/) and as one JSON line {"step",
  "split", name: value, ...} to metrics.jsonl.
  A writer that is not `enabled` (a worker other than the chief) writes
  nothing.

  metrics.jsonl is strict JSON: a non-finite value is null there, and its
  name and value ("nan", "inf", "-inf") are under the record's "nonfinite".
  """

  def __init__(self, model_dir: str, enabled: bool = True):
    self.model_dir = model_dir
    self.enabled = enabled
    self._writers = {}
    self._jsonl = os.path.join(model_dir, "metrics.jsonl")

  def write(self, split: str, step: int, scalars: Mapping[str, float]):
    if not self.enabled:
      return
    if split not in self._writers:
      self._writers[split] = tf.summary.create_file_writer(
          os.path.join(self.model_dir, split))
    clean = {k: float(v) for k, v in scalars.items()}
    with self._writers[split].as_default(step=step):
      for name, value in clean.items():
        tf.summary.scalar(name, value)
    record = {"step": int(step), "split": split}
    record.update(clean)
    with open(self._jsonl, "a") as f:
      f.write(dumps_strict(record) + "\n")

  def flush(self):
    for writer in self._writers.values():
      writer.flush()
