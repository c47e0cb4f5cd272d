"""Scalars to TensorBoard and, the same ones, to metrics.jsonl."""

import os
from typing import Mapping

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.util import tensor_util
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
    summary = summary_pb2.Summary()
    for name, value in clean.items():
      summary.value.extend(scalar_summary.scalar_pb(name, value).value)
    self._write_record(split, step, summary)
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
                 tensors: Mapping[str, tf.Tensor], buckets: int = 30):
    """TensorBoard histograms (not in metrics.jsonl: they are not scalars):
    of each tensor's finite values, in `buckets` equal buckets.

    Binned by numpy and written as one summary record: tf.summary.histogram
    runs dozens of eager ops per tensor (a quarter of a second for a
    Large+DCN's 30 layers at every summary).
    """
    if not self.enabled or not tensors:
      return
    summary = summary_pb2.Summary()
    for name, values in tensors.items():
      summary.value.add(
          tag=name, metadata=histogram_metadata.create_summary_metadata(
              display_name=None, description=None),
          tensor=tensor_util.make_tensor_proto(_buckets(values, buckets)))
    self._write_record(split, step, summary)

  def _write_record(self, split: str, step: int, summary):
    """One event holding every value of `summary` (a Summary proto): one
    op, where tf.summary.scalar and .histogram run several per value."""
    if summary.value:
      with self._writer(split).as_default(step=step):
        tf.summary.experimental.write_raw_pb(summary.SerializeToString())

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


def _buckets(values, buckets: int) -> np.ndarray:
  """[buckets, 3]: (left edge, right edge, count) of the finite values, as
  TensorBoard's histogram plugin reads them (all in the last bucket when
  they are equal; all zero when there are none)."""
  data = np.asarray(values, np.float64).ravel()
  data = data[np.isfinite(data)]
  if not data.size:
    return np.zeros((buckets, 3))
  lo, hi = float(data.min()), float(data.max())
  if lo == hi:
    counts = np.zeros(buckets)
    counts[-1] = data.size
    return np.stack([np.full(buckets, lo), np.full(buckets, hi), counts], 1)
  counts, edges = np.histogram(data, bins=buckets, range=(lo, hi))
  return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], 1)
