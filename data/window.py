"""The moving-window training stream and the held-out evaluation day.

Paper protocol (Tang et al. 2023, section 5.1.2; ../shared/DESIGN.md section
5): days are trained in time order; for training day d every batch is drawn
uniformly at random from the examples of days [d - W + 1, d]; a later day
(by default the last) is evaluated and never trained on.

The row ids of step k's batch are drawn by a stateless generator seeded with
(seed, k), so the stream is a pure function of (seed, step): starting at step
k yields exactly batches k, k+1, ... of the uninterrupted stream, and every
replica layout sees the same global batch (replica r takes its slice of it).
"""

import math
from typing import Callable, Optional

import gin
import numpy as np
import tensorflow as tf

from data.source import Source


@gin.configurable
class MovingWindow:
  """Schedules a source's days into training steps and an evaluation day.

  Attributes:
    train_days: the training days, in order.
    eval_day: the held-out day.
    steps_per_day: steps of each training day (aligned with train_days).
    total_steps: steps of the whole run.
  """

  def __init__(self,
               source: Source,
               batch_size: int = gin.REQUIRED,
               window_days: int = 3,
               eval_day: int = -1,
               first_train_day: int = 0,
               steps_per_day: Optional[int] = None,
               epochs_per_day: float = 1.0,
               seed: int = 0,
               faults: Optional[Callable] = None):
    """Plans the run; raises ValueError naming the day at fault.

    Args:
      source: the dataset.
      batch_size: global batch size.
      window_days: W, days in the moving window (>= 1).
      eval_day: the evaluation day; negative counts from the end (-1: last).
      first_train_day: the first day trained on.
      steps_per_day: steps per training day; None derives them from each
        day's volume: ceil(epochs_per_day * examples of the day / batch).
      epochs_per_day: passes over each new day's volume when derived.
      seed: seed of the stream.
      faults: fault injection for tests and demos (data/faults.py): called
        as faults(step, rows, schema) on every training batch.
    """
    self.source = source
    self.faults = faults
    name = source.name
    for key, value in (("batch_size", batch_size),
                       ("window_days", window_days), ("seed", seed),
                       ("eval_day", eval_day),
                       ("first_train_day", first_train_day)) + (
                           (("steps_per_day", steps_per_day),)
                           if steps_per_day is not None else ()):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"MovingWindow.{key} must be a whole number, got "
                         f"{value!r}.")
    self.batch_size = int(batch_size)
    self.window_days = int(window_days)
    self.seed = int(seed)
    if self.batch_size < 1:
      raise ValueError(f"MovingWindow.batch_size must be >= 1, got "
                       f"{batch_size}.")
    if self.window_days < 1:
      raise ValueError(f"MovingWindow.window_days must be >= 1, got "
                       f"{window_days}.")
    if steps_per_day is not None and steps_per_day < 1:
      raise ValueError("MovingWindow.steps_per_day must be >= 1 (or None: "
                       f"from each day's volume), got {steps_per_day}.")
    if not (isinstance(epochs_per_day, (int, float)) and
            math.isfinite(epochs_per_day) and epochs_per_day > 0):
      raise ValueError("MovingWindow.epochs_per_day must be a number > 0, "
                       f"got {epochs_per_day!r}.")
    if source.num_days < 2:
      raise ValueError(f"{name}: the log spans a single day ({source.num_rows}"
                       " examples on day 0); the protocol trains on earlier "
                       "days and evaluates on a later one, so it needs at "
                       "least two days.")
    if not -source.num_days <= eval_day < source.num_days:
      raise ValueError(f"{name}: evaluation day {eval_day} is absent; the "
                       f"source has days 0..{source.num_days - 1}.")
    self.eval_day = eval_day % source.num_days
    if source.day_size(self.eval_day) == 0:
      raise ValueError(f"{name}: evaluation day {self.eval_day} has no "
                       "examples.")
    if not 0 <= first_train_day < self.eval_day:
      raise ValueError(f"{name}: first_train_day must be in [0, "
                       f"{self.eval_day}) (before the evaluation day), got "
                       f"{first_train_day}.")
    self.train_days = np.arange(first_train_day, self.eval_day)
    steps = []
    for day in self.train_days:
      lo, hi = self._window_rows(day)
      if steps_per_day is not None:
        n = int(steps_per_day)
      else:
        n = math.ceil(epochs_per_day * source.day_size(day) / self.batch_size)
      if n > 0 and hi == lo:
        raise ValueError(f"{name}: the window of training day {day} (days "
                         f"{max(day - self.window_days + 1, 0)}..{day}) has "
                         "no examples.")
      steps.append(n)
    self.steps_per_day = np.array(steps, np.int64)
    self._step_offsets = np.concatenate([[0], np.cumsum(steps)])
    self.total_steps = int(self._step_offsets[-1])
    if self.total_steps == 0:
      raise ValueError(f"{name}: no training steps: days "
                       f"{first_train_day}..{self.eval_day - 1} are empty.")

  def _window_rows(self, day):
    first = max(day - self.window_days + 1, 0)
    offsets = self.source.day_offsets
    return int(offsets[first]), int(offsets[day + 1])

  def day_of_step(self, step: int) -> int:
    """The training day that step `step` belongs to."""
    if not 0 <= step < self.total_steps:
      raise ValueError(f"step {step} is outside [0, {self.total_steps}).")
    i = np.searchsorted(self._step_offsets[1:], step, side="right")
    return int(self.train_days[i])

  def first_step_of_day(self, day: int) -> int:
    return int(self._step_offsets[np.searchsorted(self.train_days, day)])

  def row_ids(self, step, part=0, num_parts=1):
    """Global row ids of step `step`'s batch, slice `part` of `num_parts`."""
    step = tf.cast(step, tf.int64)
    index = tf.searchsorted(tf.constant(self._step_offsets[1:], tf.int64),
                            tf.reshape(step, [1]), side="right")[0]
    lows, highs = zip(*(self._window_rows(d) for d in self.train_days))
    lo = tf.gather(tf.constant(lows, tf.int64), index)
    hi = tf.gather(tf.constant(highs, tf.int64), index)
    seed = tf.random.experimental.stateless_fold_in(
        tf.constant([self.seed, 0], tf.int64), step)
    rows = tf.random.stateless_uniform([self.batch_size], seed=seed,
                                       minval=lo, maxval=hi, dtype=tf.int64)
    per_part = self.batch_size // num_parts
    return rows[part * per_part:(part + 1) * per_part]

  def train_batch(self, step, part=0, num_parts=1):
    """Slice `part` of `num_parts` of step `step`'s batch (in the graph)."""
    rows = self.source.rows(self.row_ids(step, part, num_parts))
    if self.faults is not None:
      rows = self.faults(step, rows, self.source.schema)
    return rows

  def train_dataset(self, start_step: int = 0,
                    input_context: Optional[tf.distribute.InputContext] = None
                    ) -> tf.data.Dataset:
    """Batches of steps start_step .. total_steps - 1, in order.

    With an input_context (strategy.distribute_datasets_from_function), each
    input pipeline yields the per-replica slices of the replicas it feeds,
    step after step.
    """
    if not 0 <= start_step <= self.total_steps:
      raise ValueError(f"start_step {start_step} is outside "
                       f"[0, {self.total_steps}].")
    replicas, pipelines, pipeline = 1, 1, 0
    if input_context is not None:
      replicas = input_context.num_replicas_in_sync
      pipelines = input_context.num_input_pipelines
      pipeline = input_context.input_pipeline_id
    if self.batch_size % replicas:
      raise ValueError(f"batch_size {self.batch_size} is not divisible by "
                       f"the {replicas} replicas.")
    local = replicas // pipelines

    def batch(i):
      return self.train_batch(i // local, pipeline * local + i % local,
                              replicas)

    return (tf.data.Dataset.range(start_step * local, self.total_steps * local)
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .prefetch(tf.data.AUTOTUNE))

  def eval_dataset(self, batch_size: Optional[int] = None,
                   drop_remainder: bool = False) -> tf.data.Dataset:
    """Every example of the evaluation day, in row order, batched."""
    lo, hi = (int(x) for x in self.source.day_offsets[
        self.eval_day:self.eval_day + 2])
    return (tf.data.Dataset.range(lo, hi)
            .batch(batch_size or self.batch_size,
                   drop_remainder=drop_remainder)
            .map(self.source.rows, num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .prefetch(tf.data.AUTOTUNE))
