"""Writes any source to disk, day by day, for `on_disk_source` to serve.

  python -m data.prepare --gin_file=configs/data/synthetic.gin \
      --source=SyntheticStream --output_dir=/data/synthetic_prepared

The source is the configurable named by --source, built from the gin files
and --gin_param bindings (default: what the config binds to Trainer.source,
so a training config prepares its own data). The layout and why it is
Arrow IPC are in data/on_disk.py.

Each day is read from the source in chunks of --chunk rows
(`source.rows(tf.range(lo, hi))`), assembled and written as one record
batch, so preparing holds a few times one day's size in memory: the synthetic stream is
generated chunk by chunk. The file sources and the TFDS builders
(data/files.py, data/movielens.py, data/kuairand.py) still read their whole
log into memory when they are built; only serving it afterwards is
bounded.

Nothing half-written looks complete: each day file is written under a
temporary name, synced and renamed; the manifest (schema, day sizes, file
sizes and sha256 digests, fingerprint) is written the same way, last, and
an existing manifest is removed before anything else is rewritten.
"""

import json
import os
import re
import sys
from typing import Callable, Dict, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import pyarrow as pa
import tensorflow as tf

from data import on_disk
from data.source import Source

_OURS = re.compile(r"^(day_\d{5}\.arrow|manifest\.json)(\.tmp)?$")


def _sync_rename(tmp: str, path: str):
  fd = os.open(tmp, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
  os.replace(tmp, path)


def _sync_dir(path: str):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def day_batch(source: Source, day: int, chunk: int) -> pa.RecordBatch:
  """One day of the source as an Arrow record batch, read chunk by chunk."""
  lo, hi = (int(x) for x in source.day_offsets[day:day + 2])
  cols = on_disk.columns(source.schema)
  parts = {name: [] for name, _, _ in cols}
  for start in range(lo, hi, chunk):
    rows = source.rows(tf.range(start, min(start + chunk, hi),
                                dtype=tf.int64))
    for name, _, _ in cols:
      parts[name].append(rows[name].numpy())
  arrays = []
  for name, dtype, shape in cols:
    values = (np.concatenate(parts[name]) if parts[name] else
              np.zeros((0,) + shape, dtype))
    if values.dtype != dtype or values.shape[1:] != shape:
      raise ValueError(f"{source.name}: column {name!r} of day {day} is "
                       f"{values.dtype} {values.shape[1:]}, the schema says "
                       f"{dtype} {shape}.")
    flat = pa.array(values.reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, shape[0])
                  if shape else flat)
  return pa.RecordBatch.from_arrays(arrays,
                                    schema=on_disk.arrow_schema(source.schema))


def prepare(source: Source, output_dir: str, chunk: int = 65_536,
            overwrite: bool = False, provenance: Optional[Dict] = None,
            log: Callable[[str], None] = print) -> Dict:
  """Writes `source` into output_dir (see the module doc).

  Args:
    source: any source.
    output_dir: created if needed; may hold only an earlier prepare's files.
    chunk: rows read from the source at a time.
    overwrite: replace a complete earlier prepare.
    provenance: recorded in the manifest as is (e.g. the gin config).
    log: progress lines.

  Returns:
    The manifest written.

  Raises:
    FileExistsError: output_dir holds a complete prepare (without
      overwrite) or files this step did not write.
  """
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}.")
  os.makedirs(output_dir, exist_ok=True)
  manifest_path = os.path.join(output_dir, on_disk.MANIFEST)
  foreign = sorted(f for f in os.listdir(output_dir) if not _OURS.match(f))
  if foreign:
    raise FileExistsError(f"{output_dir} holds files a prepare did not write "
                          f"({foreign[:3]}...); choose an empty or new "
                          "directory.")
  if os.path.exists(manifest_path):
    if not overwrite:
      raise FileExistsError(f"{output_dir} already holds prepared data "
                            f"({on_disk.MANIFEST}); pass --overwrite to "
                            "replace it.")
    os.remove(manifest_path)  # from here on the directory is incomplete
    _sync_dir(output_dir)
  for name in os.listdir(output_dir):
    if name.endswith(".tmp"):  # left by an interrupted prepare
      os.remove(os.path.join(output_dir, name))

  schema = on_disk.arrow_schema(source.schema)
  days = []
  for day in range(source.num_days):
    path = os.path.join(output_dir, on_disk.day_file(day))
    tmp = path + ".tmp"
    try:
      batch = day_batch(source, day, chunk)
      with pa.OSFile(tmp, "wb") as sink:
        with pa.ipc.new_file(sink, schema) as writer:
          writer.write_batch(batch)
      del batch
      _sync_rename(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    days.append({"file": on_disk.day_file(day), "rows": source.day_size(day),
                 "bytes": os.path.getsize(path),
                 "sha256": on_disk.file_sha256(path)})
    log(f"day {day}: {source.day_size(day)} rows, {days[-1]['bytes']:,} "
        f"bytes -> {path}")
  keep = {d["file"] for d in days}
  for name in os.listdir(output_dir):
    if name.startswith("day_") and name not in keep:  # an older, longer log
      os.remove(os.path.join(output_dir, name))

  schema_json = on_disk.schema_to_json(source.schema)
  sizes = [source.day_size(d) for d in range(source.num_days)]
  manifest = {
      "format": on_disk.FORMAT,
      "name": source.name,
      "schema": schema_json,
      "day_sizes": sizes,
      "first_date": (source.first_date.isoformat()
                     if source.first_date else None),
      "days": days,
      "fingerprint": on_disk.fingerprint(schema_json, sizes,
                                         [d["sha256"] for d in days]),
      "provenance": provenance or {},
  }
  with open(manifest_path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1)
  _sync_rename(manifest_path + ".tmp", manifest_path)
  _sync_dir(output_dir)
  log(f"prepared {source.num_rows:,} rows of {source.num_days} days in "
      f"{output_dir}; fingerprint {manifest['fingerprint']}")
  return manifest


def _source_reference(flag_value: Optional[str]) -> str:
  """The gin reference of the source: --source, or Trainer.source."""
  import gin  # pylint: disable=g-import-not-at-top
  if flag_value:
    text = flag_value.strip()
    if not text.startswith("@"):
      text = "@" + text
    return text if text.endswith(")") else text + "()"
  try:
    return str(gin.query_parameter("Trainer.source"))
  except ValueError as e:
    raise ValueError("The config binds no Trainer.source; name the source "
                     "with --source (e.g. --source=SyntheticStream or "
                     "--source=file_source).") from e


def main(argv):
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  from ranking import launch  # pylint: disable=g-import-not-at-top
  launch.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  reference = _source_reference(FLAGS.source)
  try:
    parsed = gin.config.parse_value(reference)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--source {reference!r} is not a configurable of "
                     f"this project: {e}") from e
  if not isinstance(parsed, gin.config.ConfigurableReference):
    raise ValueError(f"--source {reference!r} names no configurable.")
  source = parsed.scoped_configurable_fn()
  if not isinstance(source, Source):
    raise ValueError(f"{reference} built a {type(source).__name__}, not a "
                     "data source.")
  prepare(source, FLAGS.output_dir, chunk=FLAGS.chunk,
          overwrite=FLAGS.overwrite,
          provenance={"source": reference, "gin_files": FLAGS.gin_file,
                      "gin_params": FLAGS.gin_param,
                      "operative_config": gin.operative_config_str()})


FLAGS = flags.FLAGS

if __name__ == "__main__":
  # Flags are defined only when run, so importing this module (benchmarks,
  # tests) defines none.
  flags.DEFINE_multi_string("gin_file", None, "Gin files configuring the "
                            "source.", required=True)
  flags.DEFINE_multi_string("gin_param", [], "Further gin bindings.")
  flags.DEFINE_string("source", None, "The source's configurable, e.g. "
                      "SyntheticStream or file_source; default: the "
                      "config's Trainer.source.")
  flags.DEFINE_string("output_dir", None, "Directory to write.",
                      required=True)
  flags.DEFINE_integer("chunk", 65_536, "Rows read from the source at a "
                       "time.")
  flags.DEFINE_bool("overwrite", False, "Replace an earlier prepare there.")
  app.run(main)
