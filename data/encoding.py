"""How raw log values become schema values: stable id hashing, local days,
standardised dense features.

Shared by every file reader (data/files.py, data/movielens.py,
data/kuairand.py), so the same value maps to the same id and the same
timestamp to the same day whichever reader saw it.
"""

import datetime
import zlib
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd


def stable_hash(values: np.ndarray, buckets: int) -> np.ndarray:
  """CRC32 of each value's text (bytes as they are), modulo `buckets`.

  Stable across runs, processes and machines (unlike Python's hash()); for
  numbers and str, the same mapping as data/files.py's (CRC32 of str(value)
  in UTF-8).
  """
  uniques, inverse = np.unique(values, return_inverse=True)
  hashed = np.array([zlib.crc32(v if isinstance(v, bytes) else str(v).encode())
                     % buckets for v in uniques], np.int64)
  return hashed[inverse.reshape(-1)]


def local_calendar(unix_seconds: Sequence[int], time_zone: str
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Local (hour, weekday, day) of unix timestamps in `time_zone`.

  Args:
    unix_seconds: timestamps in seconds.
    time_zone: an IANA zone name, e.g. "America/Chicago".

  Returns:
    int64 arrays: hour in [0, 24), weekday in [0, 7) (Monday = 0), and day:
    local calendar days since the local date of the earliest timestamp.
  """
  local = (pd.to_datetime(np.asarray(unix_seconds, np.int64), unit="s",
                          utc=True)
           .tz_convert(time_zone))
  # Midnights of the local dates, as naive wall-clock times: their
  # differences are whole days even across daylight-saving changes.
  dates = local.tz_localize(None).normalize()
  day = (dates - dates.min()).days
  return (np.asarray(local.hour, np.int64), np.asarray(local.weekday, np.int64),
          np.asarray(day, np.int64))


def first_local_date(unix_seconds: Sequence[int], time_zone: str
                     ) -> datetime.date:
  """The local date in `time_zone` of the earliest timestamp: the date of
  day 0 of local_calendar."""
  earliest = int(np.min(np.asarray(unix_seconds, np.int64)))
  return (pd.Timestamp(earliest, unit="s", tz="UTC").tz_convert(time_zone)
          .date())


def standardize(values: np.ndarray, days: np.ndarray,
                present: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, float, float]:
  """(values - mean) / std as a float32 column [n, 1], and (mean, std).

  The statistics come from every day but the last (the default evaluation
  day, MovingWindow.eval_day = -1, which must not leak into the features;
  all days when there is only one) and from the present values only;
  values not present become 0. A zero std counts as 1.
  """
  values = np.asarray(values, np.float64)
  present = np.ones(len(values), bool) if present is None else present
  fit = (days < days.max()) if days.max() > 0 else np.ones(len(days), bool)
  fit &= present
  mean = float(values[fit].mean()) if fit.any() else 0.0
  std = (float(values[fit].std()) if fit.any() else 1.0) or 1.0
  column = np.where(present, (values - mean) / std, 0.0)
  return column.astype(np.float32)[:, None], mean, std
