"""What the MovieLens and KuaiRand tests compute independently of data/:
local times and days with pandas, and every row of a source."""

import pandas as pd
import tensorflow as tf


def all_rows(source):
  """Every row of a source, as numpy arrays."""
  return {k: v.numpy()
          for k, v in source.rows(tf.range(source.num_rows)).items()}


def local_time(values, unit: str, time_zone: str) -> pd.Series:
  """Unix timestamps in `unit` ('s', 'ms') as local times of `time_zone`."""
  return pd.to_datetime(values, unit=unit, utc=True).dt.tz_convert(time_zone)


def local_days(local: pd.Series):
  """Local calendar days since the earliest local date."""
  dates = local.dt.tz_localize(None).dt.normalize()
  return (dates - dates.min()).dt.days.to_numpy()
