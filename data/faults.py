"""Fault injection for tests and demos: corrupted batches at given steps.

A bad batch is how a production log blows a ranking model up: a logging bug
multiplies a watch time by 1000, a join flips a label. `CorruptBatches`
does that to the training batches of the given steps, as a function of the
stream position like the stream itself, so a run that is rolled back and
skips those batches never sees them, and a resumed run sees them again.

  MovingWindow.faults = @CorruptBatches()
  CorruptBatches.steps = (120,)
"""

from typing import Dict, Sequence

import gin
import tensorflow as tf

from data.schema import Schema


@gin.configurable
class CorruptBatches:
  """Corrupts the labels of the training batches of `steps`."""

  def __init__(self, steps: Sequence[int] = gin.REQUIRED,
               label_scale: float = 1e3, flip_binary: bool = True,
               nonfinite: bool = False):
    """Args:
      steps: the steps whose batches are corrupted, numbered as the logs
        number them (step s trains on batch s - 1 of the stream).
      label_scale: regression labels are multiplied by this.
      flip_binary: binary labels become 1 - label.
      nonfinite: regression labels become NaN instead (a non-finite step).
    """
    steps = tuple(steps)
    for step in steps:
      if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError("CorruptBatches.steps must be whole numbers >= 1, "
                         f"got {step!r}.")
    if not steps:
      raise ValueError("CorruptBatches.steps is empty: nothing to corrupt.")
    self.steps, self.label_scale = steps, float(label_scale)
    self.flip_binary, self.nonfinite = flip_binary, nonfinite

  def __call__(self, step: tf.Tensor, rows: Dict[str, tf.Tensor],
               schema: Schema) -> Dict[str, tf.Tensor]:
    hit = tf.reduce_any(tf.equal(tf.cast(step, tf.int64) + 1,
                                 tf.constant(self.steps, tf.int64)))
    out = dict(rows)
    for label in schema.labels:
      value = rows[label.name]
      if label.kind == "binary":
        if not self.flip_binary:
          continue
        bad = tf.cast(1, value.dtype) - value
      elif self.nonfinite:
        bad = tf.fill(tf.shape(value), tf.constant(float("nan"), value.dtype))
      else:
        bad = value * tf.cast(self.label_scale, value.dtype)
      out[label.name] = tf.where(hit, bad, value)
    return out
