"""Scalars to TensorBoard and, the same ones, to metrics.jsonl."""

import os
from typing import Mapping

import tensorflow as tf

from ranking.integrity import dumps_strict


class ScalarWriter:
  """Writes {name: value} at a step to TensorBoard (a directory per split:
  train/, eval/, recovery/, sharpness/) and as one JSON line {"step",
  "split", name: value, ...} to metrics.jsonl; and, to TensorBoard only,
  histograms and the custom-scalars layout.
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

  def write(self, split: str, step: int, scalars: Mapping[str, float],
            to_jsonl: bool = True):
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    with self._writer(split).as_default(step=step):
      for name, value in clean.items():
        tf.summary.scalar(name, value)
    if not to_jsonl:
      return
    record = {"step": int(step), "split": split}
    record.update(clean)
    with open(self._jsonl, "a") as f:
      f.write(dumps_strict(record) + "\n")

  def _writer(self, split: str):
    if split not in self._writers:
      self._writers[split] = tf.summary.create_file_writer(
          os.path.join(self.model_dir, split))
    return self._writers[split]

  def histograms(self, split: str, step: int,
                 tensors: Mapping[str, tf.Tensor]):
    """TensorBoard histograms (not in metrics.jsonl: they are not scalars)."""
    if not self.enabled or not tensors:
      return
    with self._writer(split).as_default(step=step):
      for name, values in tensors.items():
        tf.summary.histogram(name, values)

  def write_layout(self, split: str, step: int, layout):
    """A custom-scalars layout (ranking/dashboard.py) into `split`'s logs."""
    if not self.enabled:
      return
    from ranking import dashboard  # pylint: disable=g-import-not-at-top
    with self._writer(split).as_default():
      dashboard.write_layout(layout, step)

  def flush(self):
    for writer in self._writers.values():
      writer.flush()
