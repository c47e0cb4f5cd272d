"""A user's own logs in CSV or Parquet, declared column by column in gin.

  file_source.paths = ['/logs/2024-*.parquet']
  file_source.timestamp_column = 'ts'           # unix seconds, ms or a date
  file_source.time_zone = 'Asia/Shanghai'       # days are local dates
  file_source.categorical = {'user_id': 1000000, 'item_id': 500000}
  file_source.multivalued = {'genres': (32, 6)} # vocab, max ids; '|'-joined
  file_source.dense = {'age': 'none', 'views': 'log1p'}
  file_source.labels = {'click': 'binary', 'watch_s': 'regression:log1p'}

Categorical values of any type are hashed (stably, by their string form)
into [0, vocab_size). Dense features are transformed, then normalised with
the mean and standard deviation of the days before the last, so the default
evaluation day (the last) does not leak into them. Rows are sorted by time.
"""

import glob
import os
from typing import Dict, Mapping, Sequence, Tuple, Union

import gin
import numpy as np
import pandas as pd

from data import schema as schema_lib
from data.encoding import local_calendar, stable_hash, standardize
from data.source import InMemorySource


def read_table(path: str, sep: str = ",") -> pd.DataFrame:
  """Reads one CSV (any separator) or Parquet file; errors name the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Log file not found: {path}")
  try:
    if path.endswith((".parquet", ".pq")):
      frame = pd.read_parquet(path)
    else:
      frame = pd.read_csv(path, sep=sep)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot read {path}: {e}") from e
  if frame.empty:
    raise ValueError(f"{path}: no rows.")
  return frame


def parse_timestamps(timestamps: pd.Series, where: str) -> np.ndarray:
  """Unix nanoseconds of a timestamp column.

  Numbers are unix seconds, or milliseconds when they exceed 1e11; anything
  else is parsed as a date string (naive strings are taken as UTC).

  Raises:
    ValueError: a value is neither, naming `where` and the row.
  """
  numbers = pd.to_numeric(timestamps, errors="coerce").to_numpy(np.float64)
  is_number = np.isfinite(numbers)
  parsed = pd.Series(pd.NaT, index=timestamps.index,
                     dtype="datetime64[ns, UTC]")
  if is_number.any():
    unit = "ms" if np.abs(numbers[is_number]).max() > 1e11 else "s"
    parsed[is_number] = pd.to_datetime(numbers[is_number], unit=unit,
                                       utc=True)
  if (~is_number).any():
    parsed[~is_number] = pd.to_datetime(timestamps[~is_number], utc=True,
                                        errors="coerce", format="mixed")
  if parsed.isna().any():
    row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
    raise ValueError(f"{where}: unparsable timestamp {timestamps.iloc[row]!r} "
                     f"at row {row}.")
  return parsed.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").view(
      np.int64)


def _cell_values(cell, sep: str) -> list:
  """The values of one multi-valued cell: a joined string, a list, or empty."""
  if isinstance(cell, str):
    return [v for v in cell.split(sep) if v]
  if cell is None or (np.isscalar(cell) and pd.isna(cell)):
    return []
  return [str(v) for v in cell]


def _transform(values: np.ndarray, transform: str) -> np.ndarray:
  if transform == "log1p":
    return np.sign(values) * np.log1p(np.abs(values))
  return values


def _split_kind(spec: str) -> Tuple[str, str]:
  kind, _, transform = spec.partition(":")
  return kind, transform or "none"


@gin.configurable
def file_source(paths: Union[str, Sequence[str]] = gin.REQUIRED,
                timestamp_column: str = gin.REQUIRED,
                labels: Mapping[str, str] = gin.REQUIRED,
                categorical: Mapping[str, int] = None,
                multivalued: Mapping[str, Tuple[int, int]] = None,
                dense: Mapping[str, str] = None,
                time_zone: str = "UTC",
                sep: str = ",",
                multivalue_sep: str = "|",
                name: str = None) -> InMemorySource:
  """Reads log files into a source (see the module doc for the bindings).

  Args:
    paths: files or glob patterns; CSV (any `sep`) or Parquet by extension.
    timestamp_column: unix seconds / milliseconds, or date strings.
    labels: {column: "binary" | "regression" | "regression:log1p"}.
    categorical: {column: vocab_size}; values hashed into the vocabulary.
    multivalued: {column: (vocab_size, max_len)}; values joined by
      `multivalue_sep` (or lists, in Parquet).
    dense: {column: "none" | "log1p"}.
    time_zone: the logs' time zone; days are its local dates.
    sep: CSV separator.
    multivalue_sep: separator inside a multi-valued CSV cell.
    name: the source's name in messages (default: the paths).

  Returns:
    An InMemorySource whose batches carry these features and labels.

  Raises:
    FileNotFoundError: a path matches no file.
    ValueError: a missing column, NaN label, unparsable timestamp or bad
      declaration, naming the file and column.
  """
  categorical, multivalued, dense = (categorical or {}, multivalued or {},
                                     dense or {})
  files = []
  for pattern in [paths] if isinstance(paths, str) else list(paths):
    matched = sorted(glob.glob(pattern))
    if not matched:
      raise FileNotFoundError(f"No log file matches {pattern!r}.")
    files += matched
  frames = []
  needed = ([timestamp_column] + list(labels) + list(categorical) +
            list(multivalued) + list(dense))
  for path in files:
    frame = read_table(path, sep)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; it has "
                       f"{list(frame.columns)}.")
    frame = frame[needed].copy()
    frame["__file"] = path
    frame["__line"] = np.arange(len(frame))
    frames.append(frame)
  frame = pd.concat(frames, ignore_index=True)
  where = name or ", ".join(files)
  nanos = parse_timestamps(frame[timestamp_column], where)
  order = np.argsort(nanos, kind="stable")
  frame = frame.iloc[order].reset_index(drop=True)
  _, _, days = local_calendar(nanos[order] // 10**9, time_zone)

  def origin(column, row):
    return (f"{frame['__file'].iloc[row]}: column {column!r}, data row "
            f"{frame['__line'].iloc[row]}")

  columns: Dict[str, np.ndarray] = {}
  label_specs = []
  for column, spec in labels.items():
    kind, transform = _split_kind(spec)
    label_specs.append(schema_lib.Label(column, kind, transform))
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(
        np.float64)
    if np.isnan(values).any():
      raise ValueError(f"{origin(column, int(np.flatnonzero(np.isnan(values))[0]))}"
                       ": NaN or non-numeric label.")
    if kind == "binary" and not np.isin(values, (0, 1)).all():
      raise ValueError(f"{origin(column, int(np.flatnonzero(~np.isin(values, (0, 1)))[0]))}"
                       ": a binary label must be 0 or 1.")
    columns[column] = _transform(values, transform).astype(np.float32)

  cat_specs = []
  for column, vocab in categorical.items():
    cat_specs.append(schema_lib.CategoricalFeature(column, int(vocab)))
    columns[column] = stable_hash(frame[column].to_numpy(), int(vocab))
  for column, (vocab, max_len) in multivalued.items():
    cat_specs.append(schema_lib.CategoricalFeature(column, int(vocab),
                                                   int(max_len)))
    cells = [_cell_values(cell, multivalue_sep)[:int(max_len)]
             for cell in frame[column].to_numpy()]
    lengths = np.array([len(c) for c in cells], np.int64)
    ids = np.full((len(frame), int(max_len)), schema_lib.PAD_ID, np.int64)
    if lengths.sum():
      flat = np.array([v for c in cells for v in c], dtype=object)
      rows = np.repeat(np.arange(len(cells)), lengths)
      slots = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths,
                                               lengths)
      ids[rows, slots] = stable_hash(flat.astype(str), int(vocab))
    columns[column] = ids

  dense_specs = []
  for column, transform in dense.items():
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(
        np.float64)
    if np.isnan(values).any():
      raise ValueError(f"{origin(column, int(np.flatnonzero(np.isnan(values))[0]))}"
                       ": NaN or non-numeric value.")
    columns[column], mean, std = standardize(_transform(values, transform),
                                             days)
    dense_specs.append(schema_lib.DenseFeature(column, 1, transform, mean,
                                               std))

  schema = schema_lib.Schema(categorical=cat_specs, dense=dense_specs,
                             labels=label_specs)
  return InMemorySource(schema, columns, days, name=where)
