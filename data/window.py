"""The moving-window training stream and the held-out evaluation day.

Paper protocol (Tang et al. 2023, section 5.1.2; ../shared/DESIGN.md section
5): days are trained in time order; for training day d every batch is drawn
uniformly at random from the examples of days [d - W + 1, d]; a later day
(by default the last) is evaluated and never trained on.

The row ids of step k's batch are drawn by a stateless generator seeded with
(seed, k), so the stream is a pure function of (seed, step): starting at step
k yields exactly batches k, k+1, ... of the uninterrupted stream, and every
replica layout sees the same global batch (replica r takes its slice of it).

Days can be named by date on a source with a calendar (Source.first_date):
first_train_date and eval_date ('YYYY-MM-DD') in place of first_train_day
and eval_day.
"""

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

from data.source import Source


def _row_bytes(batches: tf.data.Dataset) -> int:
  """Bytes of one row of `batches` (every dimension after the batch's)."""
  return sum(int(np.prod(spec.shape[1:].as_list())) * spec.dtype.size
             for spec in tf.nest.flatten(batches.element_spec))


@gin.configurable
class MovingWindow:
  """Schedules a source's days into training steps and an evaluation day.

  Attributes:
    train_days: the training days, in order.
    eval_day: the held-out day.
    eval_date: its date (None: the source has no calendar).
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
               faults: Optional[Callable] = None,
               first_train_date: Optional[str] = None,
               eval_date: Optional[str] = None,
               min_eval_examples: int = 1000,
               eval_sample_rows: Optional[int] = None,
               eval_cache_bytes: int = 1 << 30,
               prefetch_bytes: int = 256 << 20):
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
      first_train_date: the first day trained on, by its date
        ('YYYY-MM-DD'), in place of first_train_day.
      eval_date: the evaluation day by its date, in place of eval_day.
      min_eval_examples: check_eval_day warns when the evaluation day has
        fewer examples (its AUCs are noise); 0: never.
      eval_sample_rows: evaluate a fixed sample of this many examples of
        the evaluation day, evenly spaced in row order (the same ones at
        every evaluation); None: every example.
      eval_cache_bytes: the evaluation batches are built once and kept in
        memory when they take at most this many bytes (0: never; they are
        built again at every evaluation). A day too large for it: size a
        sample with eval_sample_rows.
      prefetch_bytes: training batches built ahead of the step, at most
        this many bytes of them (at least one batch; 0: tf.data's own
        autotuned buffer, a few batches). A deep buffer lets the input
        pipeline work while the trainer compiles, evaluates or
        checkpoints, instead of beside the training step on the same
        cores: make train takes about 3 s (6%) less with it, and its peak
        memory is 0.3 GB more. A rollback or an early stop discards what
        is buffered.
    """
    self.source = source
    self.faults = faults
    name = source.name
    for key, value in (("batch_size", batch_size),
                       ("window_days", window_days), ("seed", seed),
                       ("eval_day", eval_day),
                       ("first_train_day", first_train_day),
                       ("min_eval_examples", min_eval_examples),
                       ("eval_cache_bytes", eval_cache_bytes),
                       ("prefetch_bytes", prefetch_bytes)) + (
                           (("eval_sample_rows", eval_sample_rows),)
                           if eval_sample_rows is not None else ()) + (
                           (("steps_per_day", steps_per_day),)
                           if steps_per_day is not None else ()):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"MovingWindow.{key} must be a whole number, got "
                         f"{value!r}.")
    if min_eval_examples < 0:
      raise ValueError("MovingWindow.min_eval_examples must be >= 0 (0: no "
                       f"warning), got {min_eval_examples}.")
    self.min_eval_examples = int(min_eval_examples)
    if eval_cache_bytes < 0:
      raise ValueError("MovingWindow.eval_cache_bytes must be >= 0 (0: no "
                       f"cache), got {eval_cache_bytes}.")
    if eval_sample_rows is not None and eval_sample_rows < 1:
      raise ValueError("MovingWindow.eval_sample_rows must be >= 1 (or None:"
                       f" every example), got {eval_sample_rows}.")
    self.eval_cache_bytes = int(eval_cache_bytes)
    if prefetch_bytes < 0:
      raise ValueError("MovingWindow.prefetch_bytes must be >= 0 (0: "
                       f"tf.data's autotuned buffer), got {prefetch_bytes}.")
    self.prefetch_bytes = int(prefetch_bytes)
    self.eval_sample_rows = (None if eval_sample_rows is None
                             else int(eval_sample_rows))
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
    eval_day = self._day_of_date(eval_date, "eval_date", eval_day,
                                 "eval_day", -1)
    first_train_day = self._day_of_date(first_train_date, "first_train_date",
                                        first_train_day, "first_train_day", 0)
    if not -source.num_days <= eval_day < source.num_days:
      raise ValueError(f"{name}: evaluation day {eval_day} is absent; the "
                       f"source has days 0..{source.num_days - 1}.")
    self.eval_day = eval_day % source.num_days
    self.eval_date = source.date_of_day(self.eval_day)
    if source.day_size(self.eval_day) == 0:
      raise ValueError(f"{name}: evaluation "
                       f"{source.describe_day(self.eval_day)} has no "
                       "examples.")
    if not 0 <= first_train_day < self.eval_day:
      got = (source.describe_day(first_train_day)
             if 0 <= first_train_day < source.num_days else first_train_day)
      raise ValueError(f"{name}: first_train_day must be in [0, "
                       f"{self.eval_day}) (before the evaluation "
                       f"{source.describe_day(self.eval_day)}), got {got}.")
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

  def _day_of_date(self, date, date_key, day, day_key, default_day) -> int:
    """The day a date binding names, or `day` when the date is None."""
    if date is None:
      return day
    if day != default_day:
      raise ValueError(f"MovingWindow.{date_key} = {date!r} and "
                       f"MovingWindow.{day_key} = {day} both name the day; "
                       "set one of them.")
    return self.source.day_of_date(date, f"MovingWindow.{date_key}",
                                   f"MovingWindow.{day_key}")

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
                    input_context: Optional[tf.distribute.InputContext] = None,
                    stop_step: Optional[int] = None) -> tf.data.Dataset:
    """Batches of steps start_step .. stop_step - 1 (None: total_steps),
    in order: a run that stops early builds no batches past its end.

    With an input_context (strategy.distribute_datasets_from_function), each
    input pipeline yields the per-replica slices of the replicas it feeds,
    step after step.
    """
    stop_step = self.total_steps if stop_step is None else stop_step
    if not 0 <= start_step <= stop_step <= self.total_steps:
      raise ValueError(f"steps {start_step}..{stop_step} are outside "
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

    @tf.autograph.experimental.do_not_convert  # pure TF: nothing to convert
    def batch(i):
      return self.train_batch(i // local, pipeline * local + i % local,
                              replicas)

    batches = (tf.data.Dataset.range(start_step * local, stop_step * local)
               .map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True))
    return batches.prefetch(self.prefetch_batches(
        batches, self.batch_size // replicas))

  def prefetch_batches(self, batches: tf.data.Dataset, rows: int) -> int:
    """The prefetch buffer for `batches` of `rows` rows each: as many as
    fit in prefetch_bytes, at least one; tf.data.AUTOTUNE when it is 0."""
    if not self.prefetch_bytes:
      return tf.data.AUTOTUNE
    return max(1, self.prefetch_bytes // (_row_bytes(batches) * rows))

  def eval_rows(self) -> np.ndarray:
    """Row ids of the examples evaluated, in row order: the evaluation
    day's, or eval_sample_rows of them evenly spaced."""
    lo, hi = (int(x) for x in self.source.day_offsets[
        self.eval_day:self.eval_day + 2])
    if self.eval_sample_rows is None or self.eval_sample_rows >= hi - lo:
      return np.arange(lo, hi, dtype=np.int64)
    return lo + (np.arange(self.eval_sample_rows, dtype=np.int64) *
                 (hi - lo)) // self.eval_sample_rows

  def eval_cached(self, dataset: tf.data.Dataset) -> bool:
    """Whether eval_dataset() keeps `dataset`'s batches in memory: they
    take at most eval_cache_bytes."""
    return 0 < _row_bytes(dataset) * len(
        self.eval_rows()) <= self.eval_cache_bytes

  def eval_dataset(self, batch_size: Optional[int] = None,
                   drop_remainder: bool = False) -> tf.data.Dataset:
    """The evaluated examples (eval_rows()), in row order, batched; built
    once and cached in memory when they fit in eval_cache_bytes."""
    rows = self.eval_rows()
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
      ids = tf.data.Dataset.range(int(rows[0]), int(rows[-1]) + 1)
    else:
      ids = tf.data.Dataset.from_tensor_slices(rows)
    dataset = (ids.batch(batch_size or self.batch_size,
                         drop_remainder=drop_remainder)
               .map(tf.autograph.experimental.do_not_convert(self.source.rows),
                    num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True))
    if self.eval_cached(dataset):
      dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE)

  def check_eval_day(self, tasks: Optional[Sequence[str]] = None,
                     log: Callable[[str], None] = print,
                     dataset: Optional[tf.data.Dataset] = None
                     ) -> Dict[str, Tuple[int, int]]:
    """Checks that the evaluation day can give an AUC; logs one line.

    Counts, in one pass over the evaluated examples (eval_rows(); no
    other day is read; the pass fills eval_dataset()'s cache), the
    positives and negatives of each binary label among `tasks` (None: every
    label), from `dataset`: eval_dataset()'s batches (None: builds them;
    passing the ones already built saves tracing the source again). The
    line names the day, its date, its examples and the first binary task's
    counts; it is a warning when the day has fewer than min_eval_examples
    examples, whose AUCs are noise.

    Returns:
      {binary task: (positives, negatives)}.

    Raises:
      ValueError: a binary task whose labels that day are all one class:
        its AUC is undefined (Keras reports 0.0 for it, not a measurement).
    """
    binary = [l.name for l in self.source.schema.labels if l.kind == "binary"
              and (tasks is None or l.name in tasks)]
    lo, hi = (int(x) for x in self.source.day_offsets[
        self.eval_day:self.eval_day + 2])
    examples = len(self.eval_rows())
    sample = (f" (MovingWindow.eval_sample_rows of its {hi - lo:,})"
              if examples < hi - lo else "")
    positives = dict.fromkeys(binary, 0)
    if binary and dataset is None:
      dataset = self.eval_dataset(1 << 16)
    for batch in dataset if binary else ():
      for k in binary:
        positives[k] += int(tf.math.count_nonzero(batch[k] > 0.5))
    counts = {k: (p, examples - p) for k, p in positives.items()}
    day = self.source.describe_day(self.eval_day)
    one_class = [f"{k} has {p} positive and {n} negative examples"
                 for k, (p, n) in counts.items() if not p or not n]
    if one_class:
      raise ValueError(
          f"{self.source.name}: on the evaluation {day} "
          f"({examples} examples{sample}), {'; '.join(one_class)}: an AUC "
          "needs both classes and is undefined. Evaluate another day "
          "(MovingWindow.eval_day or eval_date) or leave the task out "
          "(build_model.tasks).")
    shown = (f"; {binary[0]}: {counts[binary[0]][0]:,} positives, "
             f"{counts[binary[0]][1]:,} negatives" if binary else "")
    if examples < self.min_eval_examples:
      log(f"WARNING: the evaluation {day} has {examples:,} examples{sample}, "
          f"fewer than MovingWindow.min_eval_examples = {self.min_eval_examples:,}"
          f"{shown}: its AUCs are noisy; evaluate a larger day "
          "(MovingWindow.eval_day or eval_date).")
    else:
      log(f"evaluation {day}: {examples:,} examples{sample}{shown}")
    return counts
