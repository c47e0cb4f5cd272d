"""A user's own logs in CSV or Parquet, declared column by column in gin.

  file_source.paths = ['/logs/2024-*.parquet']
  file_source.timestamp_column = 'ts'           # unix time, or a date
  file_source.timestamp_unit = 'ms'             # None: from the magnitude
  file_source.timestamp_format = None           # None: ISO 8601 only
  file_source.time_zone = 'Asia/Shanghai'       # days are local dates; and
                                                # naive date strings local
  file_source.categorical = {'user_id': 1000000, 'item_id': 500000}
  file_source.multivalued = {'genres': (32, 6)} # vocab, max ids; '|'-joined
  file_source.dense = {'age': 'none', 'views': 'log1p'}
  file_source.labels = {'click': 'binary', 'watch_s': 'regression:log1p'}

Categorical values of any type are hashed (stably, by their string form)
into [0, vocab_size). Dense features are transformed, then normalised with
the mean and standard deviation of the days before the last, so the default
evaluation day (the last) does not leak into them. Rows are sorted by time.
Every data error names the file, the column and the line of the CSV file
(its header is line 1) or the row of the Parquet file (1-based).
"""

import collections
import ctypes
import ctypes.util
import glob
import math
import os
import re
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import gin
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from data import schema as schema_lib
from data.encoding import (first_local_date, local_calendar, stable_hash,
                           standardize)
from data.source import InMemorySource, to_tensor


def _malloc_trim():
  """glibc's malloc_trim, or None: a column's memory is many small blocks
  (one per file and column) that free() keeps in the heap; trimming hands
  the freed pages back, so RSS falls as columns are converted."""
  try:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
  except (OSError, AttributeError):
    return None


_TRIM = _malloc_trim()


def _release_freed_memory():
  if _TRIM is not None:
    _TRIM(0)


def is_parquet(path: str) -> bool:
  return path.endswith((".parquet", ".pq"))


def read_table(path: str, sep: str = ",",
               columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
  """Reads one CSV (any separator) or Parquet file; errors name the file.

  With `columns`, reads only those (and names any the file lacks): a
  Parquet file is converted column by column into a frame with one block
  per column, so dropping a column frees its memory.
  """
  if os.path.isdir(path):
    raise IsADirectoryError(
        f"{path} is a directory; file_source.paths takes files or glob "
        f"patterns (e.g. '{os.path.join(path, '*.csv')}').")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Log file not found: {path}")
  header = []
  try:
    if is_parquet(path):
      names = [n for n in pq.read_schema(path).names
               if not n.startswith("__index_level_")]
    else:
      # pandas renames a repeated column (x, x.1): read the header as it is.
      header = pd.read_csv(path, sep=sep, header=None, nrows=1,
                           dtype=str).iloc[0].tolist()
      names = [c for c in header if isinstance(c, str)]
    present = (None if columns is None else
               [c for c in columns if c in names])
    if is_parquet(path):
      # The system allocator: memory a dropped column frees goes back to
      # the OS (Arrow's default pool, jemalloc or mimalloc, keeps it).
      previous = pa.default_memory_pool()
      pa.set_memory_pool(pa.system_memory_pool())
      try:
        frame = pq.read_table(path, columns=present).to_pandas(
            split_blocks=True, self_destruct=True)
      finally:
        pa.set_memory_pool(previous)
    else:
      frame = pd.read_csv(path, sep=sep, usecols=(
          None if present is None else lambda c: c in present))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot read {path}: {e}") from e
  repeated = sorted({c for c in header if header.count(c) > 1}, key=str)
  if repeated:
    raise ValueError(f"{path} line 1: the header names column(s) "
                     f"{repeated} more than once.")
  missing = [c for c in columns or () if c not in names]
  if not len(frame) and (present or not missing):
    raise ValueError(f"{path}: no rows.")
  if missing:
    raise ValueError(f"{path}: missing column(s) {missing}; it has "
                     f"{names}.")
  return frame


def row_labels(path: str, num_rows: int) -> Tuple[str, np.ndarray]:
  """How the rows of a file read by read_table are named in messages:
  ("line", the 1-based line of each row in a CSV file: the header is line
  1, blank lines are skipped as pandas skips them) or ("row", 1-based row
  numbers) for Parquet, or a CSV whose rows span lines (quoted newlines)."""
  if not is_parquet(path):
    with open(path, errors="replace") as f:
      lines = [i + 1 for i, line in enumerate(f) if line.strip()]
    if len(lines) - 1 == num_rows:
      return "line", np.array(lines[1:], np.int64)
  return "row", np.arange(1, num_rows + 1)


# Units of numeric timestamps, and the magnitude below which auto-detection
# takes a value to be in each (unix time since 1973 in s, ms, us, ns).
TIMESTAMP_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_AUTO_UNIT_BELOW = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", math.inf))
# Three numbers with / . or - between that do not start with a 4-digit
# year (d/m/Y or m/d/Y, d.m.y, ...): which is meant cannot be told.
_DAY_MONTH = re.compile(r"(?<!\d)\d{1,2}[/.\-]\d{1,2}[/.\-]\d{1,4}(?!\d)")
# An ISO 8601 UTC offset or Z after the time.
_OFFSET = re.compile(r"(?:[+\-]\d{2}:?\d{2}|Z)$")
_NS_RANGE = (pd.Timestamp.min.value, pd.Timestamp.max.value)


def _auto_unit(numbers: np.ndarray, origin: Callable[[int], str]) -> str:
  kinds = np.searchsorted([b for _, b in _AUTO_UNIT_BELOW[:-1]],
                          np.abs(numbers), side="right")
  found = np.unique(kinds)
  if len(found) > 1:
    first = [int(np.flatnonzero(kinds == k)[0]) for k in found[:2]]
    shown = ", ".join(f"{origin(r)}: {numbers[r]:.0f} "
                      f"(looks like {_AUTO_UNIT_BELOW[kinds[r]][0]})"
                      for r in first)
    raise ValueError(f"timestamps mix units ({shown}); set "
                     "file_source.timestamp_unit to one of "
                     f"{sorted(TIMESTAMP_UNITS)}.")
  return _AUTO_UNIT_BELOW[found[0]][0]


def _looks_like_yyyymmdd(numbers: np.ndarray) -> bool:
  """Whole numbers that all read as dates 1900-2100 in YYYYMMDD form (as
  unix seconds they would all fall in August 1970)."""
  if not (np.all(numbers == np.round(numbers)) and
          np.all((numbers >= 19000101) & (numbers <= 21001231))):
    return False
  dates = pd.to_datetime(pd.Series(numbers.astype(np.int64).astype(str)),
                         format="%Y%m%d", errors="coerce")
  return not dates.isna().any()


def parse_timestamps(timestamps: pd.Series, where: str,
                     unit: Optional[str] = None, fmt: Optional[str] = None,
                     origin: Optional[Callable[[int], str]] = None,
                     time_zone: str = "UTC") -> np.ndarray:
  """Unix nanoseconds of a timestamp column.

  Numbers are unix time in `unit`, or (unit None) in the one unit their
  magnitude shows: s, ms, us or ns (a column mixing them is refused).
  Strings are parsed with the strftime `fmt`, or without one only when they
  are ISO 8601 (d/m/Y vs m/d/Y forms are refused as ambiguous). Strings
  without a UTC offset are local times in `time_zone` (a DST gap or overlap
  is refused); unix numbers are UTC.

  Raises:
    ValueError: mixed units, mixed numbers and strings, an ambiguous or
      unparsable date, or a time outside pandas' range (1677-2262), naming
      `origin(row)` (default: `where`, row).
  """
  origin = origin or (lambda r: f"{where}, row {r + 1}")
  if unit is not None and unit not in TIMESTAMP_UNITS:
    raise ValueError(f"file_source.timestamp_unit must be one of "
                     f"{sorted(TIMESTAMP_UNITS)} or None, got {unit!r}.")
  raw = timestamps.to_numpy(object)
  if fmt is not None:
    parsed = pd.to_datetime(timestamps.astype(str), format=fmt,
                            errors="coerce")
    if parsed.dt.tz is None:
      parsed = parsed.dt.tz_localize(time_zone, ambiguous="NaT",
                                     nonexistent="NaT")
    parsed = parsed.dt.tz_convert("UTC")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
      raise ValueError(f"{origin(int(bad[0]))}: timestamp {raw[bad[0]]!r} "
                       f"does not match file_source.timestamp_format {fmt!r}"
                       " (or is outside 1677-2262).")
    return _nanos(parsed, raw, origin)
  numbers = pd.to_numeric(timestamps, errors="coerce").to_numpy(np.float64)
  is_number = np.isfinite(numbers)
  if is_number.all():
    if unit is None and _looks_like_yyyymmdd(numbers):
      raise ValueError(f"timestamps such as {raw[0]!r} ({origin(0)}) look "
                       "like YYYYMMDD dates, not unix seconds; set "
                       "file_source.timestamp_format = '%Y%m%d' (or "
                       "file_source.timestamp_unit = 's' if they are "
                       "seconds).")
    unit = unit or _auto_unit(numbers, origin)
    nanos = numbers * TIMESTAMP_UNITS[unit]
    bad = np.flatnonzero((nanos < _NS_RANGE[0]) | (nanos > _NS_RANGE[1]))
    if len(bad):
      raise ValueError(f"{origin(int(bad[0]))}: timestamp {raw[bad[0]]!r} "
                       f"({unit}) is outside the representable range "
                       "(years 1677-2262).")
    return pd.to_datetime(numbers, unit=unit).to_numpy().astype(
        "datetime64[ns]").view(np.int64)
  if is_number.any():
    row_n, row_s = (int(np.flatnonzero(m)[0]) for m in (is_number,
                                                        ~is_number))
    raise ValueError(f"timestamps mix numbers and other values "
                     f"({origin(row_n)}: {raw[row_n]!r}; {origin(row_s)}: "
                     f"{raw[row_s]!r}); make the column one kind, or set "
                     "file_source.timestamp_format.")
  texts = timestamps.astype(str).str.strip()
  ambiguous = np.flatnonzero(texts.str.contains(_DAY_MONTH).to_numpy())
  if len(ambiguous):
    row = int(ambiguous[0])
    raise ValueError(f"{origin(row)}: date {raw[row]!r} is ambiguous (day/"
                     "month or month/day?); set file_source.timestamp_format,"
                     " e.g. '%d/%m/%Y %H:%M:%S'.")
  parsed = _iso_8601(texts, time_zone)
  bad = np.flatnonzero(parsed.isna().to_numpy())
  if len(bad):
    raise ValueError(f"{origin(int(bad[0]))}: timestamp {raw[bad[0]]!r} is "
                     "not an ISO 8601 date such as '2024-03-01 10:00:00' (or "
                     "is outside 1677-2262, or is a local time that a DST "
                     "change skips or repeats); set "
                     "file_source.timestamp_format for other forms, e.g. "
                     "'%d/%m/%Y %H:%M'.")
  return _nanos(parsed, raw, origin)


def _iso_8601(texts: pd.Series, time_zone: str) -> pd.Series:
  """UTC times of ISO 8601 strings: those with an offset keep it, naive
  ones are local times in `time_zone`; NaT where a string is not ISO."""
  has_offset = texts.str.contains(_OFFSET).to_numpy()
  parsed = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[us, UTC]")
  if has_offset.any():
    parsed[has_offset] = pd.to_datetime(texts[has_offset], format="ISO8601",
                                        utc=True, errors="coerce")
  if (~has_offset).any():
    local = pd.to_datetime(texts[~has_offset], format="ISO8601",
                           errors="coerce")
    parsed[~has_offset] = local.dt.tz_localize(
        time_zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
  return parsed


def _nanos(parsed: pd.Series, raw: np.ndarray,
           origin: Callable[[int], str]) -> np.ndarray:
  """Unix nanoseconds of parsed UTC times; pandas may hold times beyond the
  int64 nanosecond range (1677-2262) at a coarser unit, which numpy would
  wrap around silently: those are named instead."""
  naive = parsed.dt.tz_convert(None)
  bad = np.flatnonzero(((naive < pd.Timestamp.min) |
                        (naive > pd.Timestamp.max)).to_numpy())
  if len(bad):
    raise ValueError(f"{origin(int(bad[0]))}: timestamp {raw[bad[0]]!r} is "
                     "outside the representable range (years 1677-2262).")
  return naive.to_numpy().astype("datetime64[ns]").view(np.int64)


def numeric_column(values: pd.Series, what: str,
                   origin: Callable[[int], str]) -> np.ndarray:
  """A column as finite float64 that fits in float32, or an error naming
  the first bad row: NaN / non-numeric, infinite, or beyond float32."""
  numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
  for mask, why in ((np.isnan(numbers), "NaN or non-numeric"),
                    (np.isinf(numbers), "infinite or overflowing"),
                    (np.abs(numbers) > np.finfo(np.float32).max,
                     "beyond float32 (|x| > 3.4e38)")):
    if mask.any():
      row = int(np.flatnonzero(mask)[0])
      raw = values.iloc[row]
      if isinstance(raw, np.generic):
        raw = raw.item()
      shown = ("(empty)" if isinstance(raw, float) and math.isnan(raw)
               else repr(raw))
      raise ValueError(f"{origin(row)}: {why} {what} {shown}.")
  return numbers


def _hashed_ids(values: pd.Series, vocab: int) -> np.ndarray:
  """stable_hash of each value's str form (a missing value: ""), hashing
  each distinct value once: no Python object per row."""
  codes, uniques = pd.factorize(values, use_na_sentinel=True)
  texts = np.array([str(u) for u in uniques] + [""], dtype=object)
  return stable_hash(texts, vocab)[codes]  # code -1: the last, ""


def _multivalued_ids(cells: pd.Series, sep: str, vocab: int,
                     max_len: int) -> np.ndarray:
  """[rows, max_len] ids of a multi-valued column, PAD_ID-padded: split and
  hashed in Arrow where it can be (_joined_ids), else cell by cell."""
  ids = _joined_ids(cells, sep, vocab, max_len)
  if ids is not None:
    return ids
  cells = [_cell_values(cell, sep)[:max_len] for cell in cells.to_numpy()]
  lengths = np.array([len(c) for c in cells], np.int64)
  ids = np.full((len(cells), max_len), schema_lib.PAD_ID, np.int64)
  if lengths.sum():
    flat = np.array([v for c in cells for v in c], dtype=object)
    rows = np.repeat(np.arange(len(cells)), lengths)
    slots = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths,
                                             lengths)
    ids[rows, slots] = stable_hash(flat.astype(str), vocab)
  return ids


def _joined_ids(cells: pd.Series, sep: str, vocab: int,
                max_len: int) -> Optional[np.ndarray]:
  """[rows, max_len] ids of a multi-valued column of `sep`-joined strings
  (or lists of strings), split and hashed in Arrow: no Python object per
  row or value. The same ids as _cell_values' per cell; None for cells it
  does not cover (numbers, lists of numbers, nulls inside a list)."""
  try:
    array = pa.array(cells, from_pandas=True)
  except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
    return None
  if isinstance(array, pa.ChunkedArray):
    array = array.combine_chunks()
  joined = (pa.types.is_string(array.type) or
            pa.types.is_large_string(array.type))
  if joined:
    lists = pc.split_pattern(array, sep)
  elif pa.types.is_list(array.type) and (
      pa.types.is_string(array.type.value_type) or
      pa.types.is_large_string(array.type.value_type)):
    lists = array
  else:
    return None
  del array
  flat = pc.list_flatten(lists)
  if flat.null_count:
    return None
  rows = pc.list_parent_indices(lists).to_numpy()
  if joined:  # "a||b" and "" hold no empty id (a list keeps its "")
    keep = pc.not_equal(flat, "")
    rows = rows[keep.to_numpy(zero_copy_only=False)]
    flat = flat.filter(keep)
  # The slot of each value in its row (rows are in order), then max_len.
  slots = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
  fits = slots < max_len
  encoded = pc.dictionary_encode(flat)
  if isinstance(encoded, pa.ChunkedArray):
    encoded = encoded.combine_chunks()
  hashed = stable_hash(np.array(encoded.dictionary.to_pylist(), object),
                       vocab)
  ids = np.full((len(cells), max_len), schema_lib.PAD_ID, np.int64)
  ids[rows[fits], slots[fits]] = hashed[encoded.indices.to_numpy()[fits]]
  return ids


def _cell_values(cell, sep: str) -> list:
  """The values of one multi-valued cell: a joined string, a list, or empty."""
  if isinstance(cell, str):
    return [v for v in cell.split(sep) if v]
  if cell is None or (np.isscalar(cell) and pd.isna(cell)):
    return []
  if np.isscalar(cell):  # a single id, read as a number
    return [str(cell)]
  return [str(v) for v in cell]


def _transform(values: np.ndarray, transform: str) -> np.ndarray:
  if transform == "log1p":
    return np.sign(values) * np.log1p(np.abs(values))
  return values


def _split_kind(spec: str) -> Tuple[str, str]:
  kind, _, transform = spec.partition(":")
  return kind, transform or "none"


def _roles(timestamp_column, labels, categorical, multivalued, dense):
  """Refuses a column given two roles (e.g. a label that is also a dense
  feature, which would leak the label into the input)."""
  roles = collections.defaultdict(list)
  roles[timestamp_column].append("the timestamp_column")
  for kind, columns in (("a label", labels), ("a categorical feature",
                                              categorical),
                        ("a multivalued feature", multivalued),
                        ("a dense feature", dense)):
    for column in columns:
      roles[column].append(kind)
  twice = {c: r for c, r in roles.items() if len(r) > 1}
  if twice:
    raise ValueError("file_source: a column is used twice: " + "; ".join(
        f"{c!r} as {' and as '.join(r)}" for c, r in twice.items()))


def _log_files(paths) -> list:
  patterns = [paths] if isinstance(paths, str) else list(paths or [])
  if not patterns:
    raise ValueError("file_source.paths is empty: give log files or glob "
                     "patterns, e.g. ['/logs/*.parquet'].")
  files, origin = [], {}
  for pattern in patterns:
    if not isinstance(pattern, str):
      raise ValueError(f"file_source.paths: {pattern!r} is not a path.")
    matched = sorted(glob.glob(pattern))
    if not matched:
      raise FileNotFoundError(f"No log file matches {pattern!r}.")
    for path in matched:
      if path in origin:
        raise ValueError(f"file_source.paths: {path} is matched by both "
                         f"{origin[path]!r} and {pattern!r}; each file must "
                         "be read once.")
      origin[path] = pattern
    files += matched
  return files


@gin.configurable
def file_source(paths: Union[str, Sequence[str]] = gin.REQUIRED,
                timestamp_column: str = gin.REQUIRED,
                labels: Mapping[str, str] = gin.REQUIRED,
                categorical: Mapping[str, int] = None,
                multivalued: Mapping[str, Tuple[int, int]] = None,
                dense: Mapping[str, str] = None,
                time_zone: str = "UTC",
                timestamp_unit: Optional[str] = None,
                timestamp_format: Optional[str] = None,
                sep: str = ",",
                multivalue_sep: str = "|",
                name: str = None) -> InMemorySource:
  """Reads log files into a source (see the module doc for the bindings).

  Args:
    paths: files or glob patterns; CSV (any `sep`) or Parquet by extension.
    timestamp_column: unix time (s, ms, us or ns), or date strings.
    labels: {column: "binary" | "regression" | "regression:log1p"}.
    categorical: {column: vocab_size}; values hashed into the vocabulary.
    multivalued: {column: (vocab_size, max_len)}; values joined by
      `multivalue_sep` (or lists, in Parquet).
    dense: {column: "none" | "log1p"}.
    time_zone: the logs' time zone; days are its local dates.
    timestamp_unit: "s", "ms", "us" or "ns" for numeric timestamps; None
      tells it from their magnitude (and refuses a column that mixes them).
    timestamp_format: strftime format of the timestamps (e.g.
      '%d/%m/%Y %H:%M'); None accepts ISO 8601 strings only. Strings
      without a UTC offset are local times in `time_zone`.
    sep: CSV separator.
    multivalue_sep: separator inside a multi-valued CSV cell.
    name: the source's name in messages (default: the paths).

  Returns:
    An InMemorySource whose batches carry these features and labels; day
    0 is the local date (in `time_zone`) of the earliest timestamp, which
    is the source's first_date.

  Raises:
    FileNotFoundError: a path matches no file.
    IsADirectoryError: a path is a directory.
    ValueError: empty paths, a column used twice, a missing column, a NaN,
      infinite or overflowing label or dense value, an ambiguous, mixed or
      unparsable timestamp or a bad declaration; data errors name the file,
      the column and the line (CSV) or row (Parquet).
  """
  categorical, multivalued, dense = (categorical or {}, multivalued or {},
                                     dense or {})
  _roles(timestamp_column, labels, categorical, multivalued, dense)
  files = _log_files(paths)
  # Memory: each file's frame holds only the declared columns, and each
  # column is taken out of every file at once, converted to the array
  # kept (a tf.Tensor) and dropped: at no time are the logs held twice.
  frames, units, file_of, line_of = [], [], [], []
  needed = ([timestamp_column] + list(labels) + list(categorical) +
            list(multivalued) + list(dense))
  for index, path in enumerate(files):
    frame = read_table(path, sep, needed)
    unit, numbers = row_labels(path, len(frame))
    frames.append(frame)
    units.append(unit)
    file_of.append(np.full(len(frame), index, np.int32))
    line_of.append(numbers)
  file_of, line_of = np.concatenate(file_of), np.concatenate(line_of)
  where = name or ", ".join(files)

  def origin_of(file_rows, line_rows):
    def origin(row, column=None):
      column = column or timestamp_column
      return (f"{files[file_rows[row]]} {units[file_rows[row]]}"
              f" {line_rows[row]}, column {column!r}")
    return origin

  def take(column, order=None) -> pd.Series:
    """`column` of every file (in `order`: None as read), taken out of
    the files' frames."""
    series = pd.concat([f.pop(column) for f in frames], ignore_index=True)
    _release_freed_memory()  # the files' copies of the previous column
    if order is None:
      return series
    return series.take(order).reset_index(drop=True)

  nanos = parse_timestamps(take(timestamp_column), where, timestamp_unit,
                           timestamp_format, origin_of(file_of, line_of),
                           time_zone)
  order = np.argsort(nanos, kind="stable")
  seconds = nanos[order] // 10**9
  del nanos
  _, _, days = local_calendar(seconds, time_zone)
  first_date = first_local_date(seconds, time_zone)
  del seconds
  origin = origin_of(file_of[order], line_of[order])
  del file_of, line_of

  def values_of(column, what):
    return numeric_column(take(column, order), what,
                          lambda row: origin(row, column))

  columns: Dict[str, tf.Tensor] = {}
  label_specs = []
  for column, spec in labels.items():
    kind, transform = _split_kind(spec)
    label_specs.append(schema_lib.Label(column, kind, transform))
    values = values_of(column, "label")
    if kind == "binary" and not np.isin(values, (0, 1)).all():
      raise ValueError(f"{origin(int(np.flatnonzero(~np.isin(values, (0, 1)))[0]), column)}"
                       ": a binary label must be 0 or 1.")
    columns[column] = to_tensor(
        _transform(values, transform).astype(np.float32))
  cat_specs = []
  for column, vocab in categorical.items():
    cat_specs.append(schema_lib.CategoricalFeature(column, int(vocab)))
    # A missing value is a category of its own (the empty string).
    columns[column] = to_tensor(_hashed_ids(take(column, order),
                                              int(vocab)))
  for column, (vocab, max_len) in multivalued.items():
    cat_specs.append(schema_lib.CategoricalFeature(column, int(vocab),
                                                   int(max_len)))
    columns[column] = to_tensor(_multivalued_ids(
        take(column, order), multivalue_sep, int(vocab), int(max_len)))

  dense_specs = []
  for column, transform in dense.items():
    values = values_of(column, "value")
    normalised, mean, std = standardize(_transform(values, transform), days)
    overflow = ~np.isfinite(normalised[:, 0])
    if overflow.any():
      row = int(np.flatnonzero(overflow)[0])
      raise ValueError(f"{origin(row, column)}: value {values[row]:g} "
                       f"overflows float32 once normalised (mean {mean:.3g}, "
                       f"std {std:.3g} over the training days).")
    columns[column] = to_tensor(normalised)
    del normalised, values
    dense_specs.append(schema_lib.DenseFeature(column, 1, transform, mean,
                                               std))

  schema = schema_lib.Schema(categorical=cat_specs, dense=dense_specs,
                             labels=label_specs)
  return InMemorySource(schema, columns, days, name=where,
                        first_date=first_date)
