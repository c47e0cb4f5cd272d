"""A source: a dataset's examples, addressable by row, rows sorted by day.

Every dataset (the synthetic stream, the TFDS builders, a user's files) is a
Source: its Schema, the number of examples of each day, and a traceable
`rows(row_ids)` that returns the batch dict for any global row ids. Rows are
numbered day after day, so day d holds rows [day_offsets[d],
day_offsets[d + 1]) and a moving window of days is one contiguous range of
rows. The window pipeline (data/window.py) needs nothing else, which is what
makes a stream position a pure function of (seed, step).
"""

import abc
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from data import schema as schema_lib


class Source(abc.ABC):
  """Examples addressable by global row id, sorted by day."""

  def __init__(self, schema: schema_lib.Schema, day_sizes, name: str):
    self.schema = schema
    self.name = name
    sizes = np.asarray(day_sizes, np.int64)
    if sizes.ndim != 1 or len(sizes) == 0 or np.any(sizes < 0):
      raise ValueError(f"{name}: day sizes must be a non-empty list of counts "
                       f">= 0, got {day_sizes!r}.")
    self.day_offsets = np.concatenate([[0], np.cumsum(sizes)])

  @property
  def num_days(self) -> int:
    return len(self.day_offsets) - 1

  @property
  def num_rows(self) -> int:
    return int(self.day_offsets[-1])

  def day_size(self, day: int) -> int:
    return int(self.day_offsets[day + 1] - self.day_offsets[day])

  def day_of_rows(self, row_ids: tf.Tensor) -> tf.Tensor:
    """The day of each global row id (int64)."""
    offsets = tf.constant(self.day_offsets[1:], tf.int64)
    return tf.searchsorted(offsets, tf.cast(row_ids, tf.int64),
                           side="right", out_type=tf.int64)

  @abc.abstractmethod
  def rows(self, row_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The batch dict (features, labels, `day`) of the given row ids."""


class InMemorySource(Source):
  """A source held as arrays, one per schema name, rows sorted by day.

  What the file sources and the TFDS builders produce after reading: the
  arrays are already in batch form (ids mapped into [0, vocab_size), dense
  features normalised, labels transformed). `num_days` keeps trailing days
  without rows (default: up to the last day that has rows).
  """

  def __init__(self, schema: schema_lib.Schema,
               columns: Mapping[str, np.ndarray], days: np.ndarray,
               name: str = "in-memory source",
               num_days: Optional[int] = None):
    days = np.asarray(days, np.int64)
    if days.ndim != 1 or len(days) == 0:
      raise ValueError(f"{name}: no examples.")
    if np.any(np.diff(days) < 0):
      raise ValueError(f"{name}: rows must be sorted by day.")
    if days[0] < 0:
      raise ValueError(f"{name}: days must be >= 0.")
    if num_days is not None and num_days <= days[-1]:
      raise ValueError(f"{name}: num_days {num_days} but rows reach day "
                       f"{days[-1]}.")
    super().__init__(schema, np.bincount(days, minlength=num_days or 0), name)
    expected = self._expected_shapes(len(days))
    missing = sorted(set(expected) - set(columns))
    if missing:
      raise ValueError(f"{name}: missing columns for {missing}.")
    self._columns = {}
    for key, (shape, dtype) in expected.items():
      array = np.asarray(columns[key])
      if array.shape != shape:
        raise ValueError(f"{name}: column {key!r} has shape {array.shape}, "
                         f"expected {shape}.")
      if dtype == np.float32 and not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array.reshape(len(days), -1))
                                 .all(axis=1))[0])
        raise ValueError(f"{name}: column {key!r} has a NaN or infinite value "
                         f"(first at row {bad}, day {days[bad]}).")
      self._columns[key] = tf.constant(array.astype(dtype))
    self._columns[schema_lib.DAY] = tf.constant(days)

  def _expected_shapes(self, n):
    shapes = {}
    for f in self.schema.categorical:
      shapes[f.name] = ((n, f.max_len) if f.multivalent else (n,), np.int64)
    for f in self.schema.dense:
      shapes[f.name] = ((n, f.dim), np.float32)
    for label in self.schema.labels:
      shapes[label.name] = ((n,), np.float32)
    return shapes

  def rows(self, row_ids):
    row_ids = tf.cast(row_ids, tf.int64)
    return {k: tf.gather(v, row_ids) for k, v in self._columns.items()}
