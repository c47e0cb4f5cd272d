"""A source: a dataset's examples, addressable by row, rows sorted by day.

Every dataset (the synthetic stream, the TFDS builders, a user's files) is a
Source: its Schema, the number of examples of each day, and a traceable
`rows(row_ids)` that returns the batch dict for any global row ids. Rows are
numbered day after day, so day d holds rows [day_offsets[d],
day_offsets[d + 1]) and a moving window of days is one contiguous range of
rows. The window pipeline (data/window.py) needs nothing else, which is what
makes a stream position a pure function of (seed, step).

A source may know its calendar: `first_date`, the local date of day 0, so
that day d is the date first_date + d days (None: the days have no dates).
"""

import abc
import datetime
import re
from typing import Dict, Mapping, Optional, Union

import numpy as np
import tensorflow as tf

from data import schema as schema_lib


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: Union[str, datetime.date], what: str) -> datetime.date:
  """An ISO 8601 calendar date 'YYYY-MM-DD' (or a datetime.date).

  Raises:
    ValueError: anything else (other forms, impossible dates such as
      '2024-02-30'), naming `what` and the value.
  """
  if isinstance(value, datetime.date) and not isinstance(
      value, datetime.datetime):
    return value
  if isinstance(value, str) and _ISO_DATE.fullmatch(value):
    try:
      return datetime.date.fromisoformat(value)
    except ValueError:
      pass
  raise ValueError(f"{what} = {value!r} is not a date 'YYYY-MM-DD' (e.g. "
                   "'2024-03-01').")


class Source(abc.ABC):
  """Examples addressable by global row id, sorted by day."""

  def __init__(self, schema: schema_lib.Schema, day_sizes, name: str,
               first_date: Optional[datetime.date] = None):
    self.schema = schema
    self.name = name
    self.first_date = (None if first_date is None else
                       parse_date(first_date, f"{name}: first_date"))
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

  def date_of_day(self, day: int) -> Optional[datetime.date]:
    """The date of day `day`, or None for a source without a calendar."""
    if self.first_date is None:
      return None
    return self.first_date + datetime.timedelta(days=int(day))

  def describe_day(self, day: int) -> str:
    """'day 5 (2024-03-06)', or 'day 5' without a calendar."""
    date = self.date_of_day(day)
    return f"day {day}" + (f" ({date.isoformat()})" if date else "")

  def calendar(self) -> str:
    """The log's span in messages: days and, if known, their dates."""
    last = self.num_days - 1
    if self.first_date is None:
      return f"days 0..{last}, without dates"
    return (f"days 0..{last}, dates {self.first_date.isoformat()}.."
            f"{self.date_of_day(last).isoformat()}")

  def day_of_date(self, value: Union[str, datetime.date], what: str,
                  instead: str) -> int:
    """The day of a date given by binding `what` (e.g. MovingWindow.eval_date).

    Raises:
      ValueError: a malformed date, a source without a calendar (pointing
        to the binding to use `instead`), or a date outside the log; each
        naming the value and the log's days and dates.
    """
    date = parse_date(value, what)
    if self.first_date is None:
      raise ValueError(f"{what} = {value!r}: {self.name} has no calendar "
                       f"({self.calendar()}); name the day with {instead}.")
    day = (date - self.first_date).days
    if not 0 <= day < self.num_days:
      raise ValueError(f"{what} = {value!r} is outside the log of "
                       f"{self.name} ({self.calendar()}).")
    return day

  def day_of_rows(self, row_ids: tf.Tensor) -> tf.Tensor:
    """The day of each global row id (int64)."""
    offsets = tf.constant(self.day_offsets[1:], tf.int64)
    return tf.searchsorted(offsets, tf.cast(row_ids, tf.int64),
                           side="right", out_type=tf.int64)

  @abc.abstractmethod
  def rows(self, row_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The batch dict (features, labels, `day`) of the given row ids."""


def to_tensor(array: np.ndarray) -> tf.Tensor:
  """`array` as a tensor that does not keep `array` alive: an eager
  tf.constant of a numpy array holds on to the array beside its own copy
  (twice the memory: bench/file_source_memory.py); tf.identity's result
  does not."""
  return tf.identity(tf.constant(array))


class InMemorySource(Source):
  """A source held as arrays, one per schema name, rows sorted by day.

  What the file sources and the TFDS builders produce after reading: the
  arrays are already in batch form (ids mapped into [0, vocab_size), dense
  features normalised, labels transformed). `num_days` keeps trailing days
  without rows (default: up to the last day that has rows); `first_date`
  is the date of day 0 (None: no calendar).
  """

  def __init__(self, schema: schema_lib.Schema,
               columns: Mapping[str, np.ndarray], days: np.ndarray,
               name: str = "in-memory source",
               num_days: Optional[int] = None,
               first_date: Optional[datetime.date] = None):
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
    super().__init__(schema, np.bincount(days, minlength=num_days or 0),
                     name, first_date)
    expected = self._expected_shapes(len(days))
    missing = sorted(set(expected) - set(columns))
    if missing:
      raise ValueError(f"{name}: missing columns for {missing}.")
    self._columns = {}
    for key, (shape, dtype) in expected.items():
      # A tf.Tensor of the right dtype is kept as it is (np.asarray views
      # it): a source that converts its columns as it makes them (the file
      # sources) hands them over without a copy.
      array = np.asarray(columns[key])
      if array.shape != shape:
        raise ValueError(f"{name}: column {key!r} has shape {array.shape}, "
                         f"expected {shape}.")
      if dtype == np.float32 and not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array.reshape(len(days), -1))
                                 .all(axis=1))[0])
        raise ValueError(f"{name}: column {key!r} has a NaN or infinite value "
                         f"(first at row {bad}, day {days[bad]}).")
      column = columns[key]
      self._columns[key] = (column if isinstance(column, tf.Tensor) and
                            column.dtype == dtype else
                            to_tensor(array.astype(dtype, copy=False)))
    self._columns[schema_lib.DAY] = to_tensor(days)

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
