"""A prepared log on disk: one memory-mapped Arrow IPC file per day.

`python -m data.prepare` (data/prepare.py) writes any source into a
directory like this; `on_disk_source(path=...)` serves it with the same
schema, the same days and exactly the same batches as the source it was
prepared from, so the moving window's (seed, step) addressing is unchanged
while the log no longer has to fit in memory.

  DIR/day_00000.arrow ... day_NNNNN.arrow   one record batch per day
  DIR/manifest.json                         written last: schema, day sizes,
                                            file sizes and digests,
                                            fingerprint

Why Arrow IPC files, memory-mapped: a day's columns are contiguous,
aligned buffers inside one file, so pyarrow maps them and numpy gathers
rows from them with no copy of the day and no decoding (a TFDS ArrayRecord
file stores serialized records that must be parsed row by row; a
row-major structured array would need a second copy to split each gathered
batch into columns). One file per day holds every column (a file per
column would keep a descriptor per day and column), carries its own schema
and a footer, so a truncated or foreign file is refused rather than read,
and any Arrow tool (pandas, DuckDB, polars) can inspect it.

Memory: mapped pages count in the process's RSS (RssFile) once touched,
and the window only touches the days it draws from. Days are mapped on
first use and unmapped when they fall out of a small least-recently-used
set (never smaller than the most days one batch has touched, plus one), so
resident memory follows the window, not the length of the log; the
kernel's page cache keeps recently used files warm either way.
"""

import collections
import dataclasses
import hashlib
import json
import os
import threading
from typing import Dict, List, Optional, Tuple

import gin
import numpy as np
import pyarrow as pa
import tensorflow as tf

from data import schema as schema_lib
from data.source import Source

FORMAT = "ranking-on-disk/arrow-ipc-days/1"
MANIFEST = "manifest.json"


class PreparedDataError(ValueError):
  """A prepared directory that cannot be served; the message says why."""


class NotPreparedError(PreparedDataError, FileNotFoundError):
  """No directory, or no manifest: never prepared, or the prepare stopped
  before it finished."""


class ManifestError(PreparedDataError):
  """A manifest that cannot be read, or does not describe this format."""


class DayFileError(PreparedDataError):
  """A day file that is missing, truncated, or not what the manifest says."""


class FingerprintMismatchError(PreparedDataError):
  """The prepared data is not the data the configuration asks for."""


def day_file(day: int) -> str:
  return f"day_{day:05d}.arrow"


def columns(schema: schema_lib.Schema) -> List[Tuple[str, np.dtype, Tuple]]:
  """(name, dtype, shape of one row) of every stored column, in batch order
  (the order InMemorySource returns them; `day` is not stored)."""
  out = []
  for f in schema.categorical:
    out.append((f.name, np.dtype(np.int64),
                (f.max_len,) if f.multivalent else ()))
  for f in schema.dense:
    out.append((f.name, np.dtype(np.float32), (f.dim,)))
  for label in schema.labels:
    out.append((label.name, np.dtype(np.float32), ()))
  return out


def arrow_schema(schema: schema_lib.Schema) -> pa.Schema:
  """Scalars as int64 / float32; rows of k values as fixed-size lists."""
  fields = []
  for name, dtype, shape in columns(schema):
    kind = pa.from_numpy_dtype(dtype)
    fields.append(pa.field(name, pa.list_(kind, shape[0]) if shape else kind,
                           nullable=False))
  return pa.schema(fields)


def schema_to_json(schema: schema_lib.Schema) -> Dict:
  return {"categorical": [dataclasses.asdict(f) for f in schema.categorical],
          "dense": [dataclasses.asdict(f) for f in schema.dense],
          "labels": [dataclasses.asdict(f) for f in schema.labels]}


def schema_from_json(data: Dict) -> schema_lib.Schema:
  return schema_lib.Schema(
      categorical=[schema_lib.CategoricalFeature(**f)
                   for f in data["categorical"]],
      dense=[schema_lib.DenseFeature(**f) for f in data["dense"]],
      labels=[schema_lib.Label(**f) for f in data["labels"]])


def fingerprint(schema_json: Dict, day_sizes, digests) -> str:
  """sha256 of what the data is: schema, day sizes and every day file's
  digest (not where it lives, nor how it was made)."""
  text = json.dumps({"format": FORMAT, "schema": schema_json,
                     "day_sizes": [int(n) for n in day_sizes],
                     "sha256": list(digests)}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 23), b""):
      digest.update(block)
  return digest.hexdigest()


def read_manifest(path: str) -> Dict:
  """The manifest of a prepared directory, checked for completeness.

  Raises:
    NotPreparedError: no such directory, or no manifest in it.
    ManifestError: unreadable, another format, missing fields, or a
      fingerprint that does not match its own contents (edited by hand).
  """
  if not os.path.isdir(path):
    raise NotPreparedError(
        f"Prepared data directory {path} does not exist (or is not a "
        "directory); make it with `python -m data.prepare --gin_file=... "
        f"--output_dir={path}`.")
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest_path):
    raise NotPreparedError(
        f"{path} has no {MANIFEST}: it was never prepared, or the prepare "
        "was interrupted before it finished (the manifest is written "
        "last); run `python -m data.prepare` again.")
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise ManifestError(f"{manifest_path} is not readable JSON: {e}") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    found = manifest.get("format") if isinstance(manifest, dict) else None
    raise ManifestError(f"{manifest_path}: format {found!r}, expected "
                        f"{FORMAT!r}; prepare the data again.")
  missing = [k for k in ("name", "schema", "day_sizes", "days", "fingerprint")
             if k not in manifest]
  if missing:
    raise ManifestError(f"{manifest_path}: missing fields {missing}.")
  try:
    manifest["schema_obj"] = schema_from_json(manifest["schema"])
    sizes = [int(n) for n in manifest["day_sizes"]]
    days = manifest["days"]
    if len(days) != len(sizes) or any(
        int(d["rows"]) != n for d, n in zip(days, sizes)):
      raise ValueError("the day list does not match day_sizes")
    expected = fingerprint(manifest["schema"], sizes,
                           [d["sha256"] for d in days])
  except (KeyError, TypeError, ValueError) as e:
    raise ManifestError(f"{manifest_path} is corrupt: {e}") from e
  if expected != manifest["fingerprint"]:
    raise ManifestError(f"{manifest_path} is corrupt: its fingerprint "
                        f"{manifest['fingerprint']} does not match its "
                        f"contents ({expected}).")
  return manifest


class OnDiskSource(Source):
  """A prepared directory served as a source (see the module doc).

  `rows(row_ids)` is traceable: a tf.numpy_function gathers the rows from
  the mapped day files, with static dtypes and shapes from the schema, so
  it runs inside the window's tf.data map like any other source.
  """

  def __init__(self, path: str, expected_fingerprint: Optional[str] = None,
               max_mapped_days: int = 4, verify_checksums: bool = False):
    """Opens a prepared directory; raises PreparedDataError subclasses.

    Args:
      path: the directory written by `python -m data.prepare`.
      expected_fingerprint: if given, the data must be exactly this
        (the manifest's fingerprint, printed by the prepare step).
      max_mapped_days: days kept mapped at least; more are kept while one
        batch touches more (the window's days, plus one).
      verify_checksums: re-hash every day file (reads the whole log once).
    """
    manifest = read_manifest(path)
    self.path = path
    self.fingerprint = manifest["fingerprint"]
    if (expected_fingerprint is not None and
        expected_fingerprint != self.fingerprint):
      raise FingerprintMismatchError(
          f"{path} holds data with fingerprint {self.fingerprint}, but the "
          f"configuration expects {expected_fingerprint}; prepare the "
          "expected data there or point on_disk_source.path elsewhere.")
    # The calendar of the source it was prepared from (None: none, or a
    # directory prepared before sources had dates).
    super().__init__(manifest["schema_obj"], manifest["day_sizes"],
                     f"{manifest['name']} (on disk)",
                     first_date=manifest.get("first_date"))
    self._columns = columns(self.schema)
    self._arrow_schema = arrow_schema(self.schema)
    self._files = []
    for day, entry in enumerate(manifest["days"]):
      file = os.path.join(path, entry["file"])
      if not os.path.isfile(file):
        raise DayFileError(f"{self.name}: day {day} file {file} is missing; "
                           "prepare the data again.")
      size = os.path.getsize(file)
      if size != int(entry["bytes"]):
        raise DayFileError(
            f"{self.name}: day {day} file {file} is {size} bytes, the "
            f"manifest says {entry['bytes']}: truncated or replaced; prepare "
            "the data again.")
      if verify_checksums and file_sha256(file) != entry["sha256"]:
        raise DayFileError(f"{self.name}: day {day} file {file} does not "
                           "match its sha256 in the manifest.")
      self._files.append(file)
    self._min_mapped = max(1, int(max_mapped_days))
    self._most_days_per_call = 1
    self._mapped = collections.OrderedDict()  # day -> [column arrays]
    self._lock = threading.Lock()

  @property
  def mapped_days(self) -> List[int]:
    """The days mapped now, least recently used first."""
    with self._lock:
      return list(self._mapped)

  def _open_day(self, day: int) -> List[np.ndarray]:
    """Zero-copy views of a day's columns (the mapping lives as long as
    they do; the file descriptor is closed at once)."""
    file = self._files[day]
    try:
      with pa.memory_map(file, "r") as mapped:
        reader = pa.ipc.open_file(mapped)
        if reader.num_record_batches != 1:
          raise DayFileError(f"{self.name}: day {day} file {file} holds "
                             f"{reader.num_record_batches} record batches, "
                             "expected 1.")
        batch = reader.get_batch(0)
    except pa.ArrowException as e:
      raise DayFileError(f"{self.name}: day {day} file {file} is not a "
                         f"readable Arrow file: {e}") from e
    if not batch.schema.equals(self._arrow_schema):
      raise DayFileError(f"{self.name}: day {day} file {file} has columns "
                         f"{batch.schema} but the manifest's schema needs "
                         f"{self._arrow_schema}.")
    if batch.num_rows != self.day_size(day):
      raise DayFileError(f"{self.name}: day {day} file {file} has "
                         f"{batch.num_rows} rows, the manifest says "
                         f"{self.day_size(day)}.")
    arrays = []
    for (name, _, shape), column in zip(self._columns, batch.columns):
      if shape:
        values = column.flatten().to_numpy(zero_copy_only=True)
        arrays.append(values.reshape((batch.num_rows,) + shape))
      else:
        arrays.append(column.to_numpy(zero_copy_only=True))
    return arrays

  def _days(self, days) -> Dict[int, List[np.ndarray]]:
    """The columns of `days`, mapping them as needed and unmapping the
    least recently used others beyond the limit."""
    days = [int(d) for d in days]
    with self._lock:
      self._most_days_per_call = max(self._most_days_per_call, len(days))
      out = {}
      for day in days:
        if day in self._mapped:
          self._mapped.move_to_end(day)
        else:
          self._mapped[day] = self._open_day(day)
        out[day] = self._mapped[day]
      limit = max(self._min_mapped, self._most_days_per_call + 1)
      while len(self._mapped) > limit:
        self._mapped.popitem(last=False)  # unmapped once no batch uses it
    return out

  def _gather(self, row_ids: np.ndarray) -> List[np.ndarray]:
    ids = np.asarray(row_ids, np.int64)
    flat = ids.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= self.num_rows):
      bad = flat[(flat < 0) | (flat >= self.num_rows)][0]
      raise IndexError(f"{self.name}: row id {bad} is outside [0, "
                       f"{self.num_rows}).")
    day_of_row = np.searchsorted(self.day_offsets[1:], flat, side="right")
    present = np.unique(day_of_row)
    arrays = self._days(present)
    if len(present) == 1:
      day = int(present[0])
      local = flat - self.day_offsets[day]
      outs = [np.take(a, local, axis=0) for a in arrays[day]]
    else:
      outs = [np.empty((len(flat),) + shape, dtype)
              for _, dtype, shape in self._columns]
      for day in present:
        day = int(day)
        where = np.flatnonzero(day_of_row == day)
        local = flat[where] - self.day_offsets[day]
        for out, array in zip(outs, arrays[day]):
          out[where] = np.take(array, local, axis=0)
    return [o.reshape(ids.shape + shape)
            for o, (_, _, shape) in zip(outs, self._columns)]

  def rows(self, row_ids):
    row_ids = tf.cast(row_ids, tf.int64)
    values = tf.numpy_function(
        self._gather, [row_ids],
        [tf.as_dtype(dtype) for _, dtype, _ in self._columns],
        stateful=False, name="on_disk_rows")
    out = {}
    for (name, _, shape), value in zip(self._columns, values):
      value.set_shape(row_ids.shape.concatenate(shape))
      out[name] = value
    out[schema_lib.DAY] = self.day_of_rows(row_ids)
    return out


@gin.configurable
def on_disk_source(path: str = gin.REQUIRED,
                   expected_fingerprint: Optional[str] = None,
                   max_mapped_days: int = 4,
                   verify_checksums: bool = False) -> OnDiskSource:
  """A log prepared by `python -m data.prepare` (see OnDiskSource)."""
  return OnDiskSource(path, expected_fingerprint=expected_fingerprint,
                      max_mapped_days=max_mapped_days,
                      verify_checksums=verify_checksums)
