"""Writes a source's days to Parquet files, one per day, for benchmarks.

  python -m data.materialize --output_dir=/tmp/synthetic --num_days=4 \
      --examples_per_day=100000

Writes day_000.parquet, ... with one column per scalar (vector features are
split into NAME_0, NAME_1, ...; multi-valued ids are '|'-joined strings), a
unix-seconds `timestamp`, and `columns.gin`: the `file_source` bindings that
read the files back. Each file is written to a temporary name and renamed, so
an interrupted run leaves no half-written day.
"""

import calendar
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import pandas as pd
import tensorflow as tf

from data.synthetic import FIRST_DATE, SyntheticStream

FLAGS = flags.FLAGS

# Day 0 starts here (UTC midnight of the stream's FIRST_DATE, 2022-04-15:
# unix 1649980800); examples are spread evenly over their day.
EPOCH = calendar.timegm(FIRST_DATE.timetuple())


def day_frame(stream, day, chunk):
  """One day of the stream as a flat DataFrame."""
  lo, hi = int(stream.day_offsets[day]), int(stream.day_offsets[day + 1])
  parts = []
  for start in range(lo, hi, chunk):
    batch = stream.rows(tf.range(start, min(start + chunk, hi), dtype=tf.int64))
    columns = {}
    for f in stream.schema.categorical:
      ids = batch[f.name].numpy()
      columns[f.name] = (["|".join(str(i) for i in r if i >= 0) for r in ids]
                         if f.multivalent else ids)
    for f in stream.schema.dense:
      values = batch[f.name].numpy()
      for j in range(f.dim):
        columns[f"{f.name}_{j}"] = values[:, j]
    for label in stream.schema.labels:
      columns[label.name] = batch[label.name].numpy()
    parts.append(pd.DataFrame(columns))
  frame = pd.concat(parts, ignore_index=True)
  frame.insert(0, "timestamp",
               EPOCH + day * 86_400 + np.arange(hi - lo) * 86_400 // (hi - lo))
  return frame


def file_source_bindings(stream, pattern):
  """The gin bindings of data.files.file_source for the written files."""
  schema = stream.schema
  single = {f.name: f.vocab_size for f in schema.categorical
            if not f.multivalent}
  multi = {f.name: (f.vocab_size, f.max_len) for f in schema.categorical
           if f.multivalent}
  dense = {f"{f.name}_{j}": "none" for f in schema.dense for j in range(f.dim)}
  labels = {l.name: l.kind for l in schema.labels}
  return "\n".join([
      f"file_source.paths = [{pattern!r}]",
      "file_source.timestamp_column = 'timestamp'",
      f"file_source.categorical = {single!r}",
      f"file_source.multivalued = {multi!r}",
      f"file_source.dense = {dense!r}",
      f"file_source.labels = {labels!r}", ""])


def materialize(stream, output_dir, chunk=65_536, log=print):
  os.makedirs(output_dir, exist_ok=True)
  for day in range(stream.num_days):
    path = os.path.join(output_dir, f"day_{day:03d}.parquet")
    day_frame(stream, day, chunk).to_parquet(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)
    log(f"wrote {path} ({stream.day_size(day)} rows)")
  with open(os.path.join(output_dir, "columns.gin"), "w") as f:
    f.write(file_source_bindings(
        stream, os.path.join(output_dir, "day_*.parquet")))


def main(argv):
  del argv
  stream = SyntheticStream(num_days=FLAGS.num_days,
                           examples_per_day=FLAGS.examples_per_day,
                           seed=FLAGS.seed)
  materialize(stream, FLAGS.output_dir, FLAGS.chunk)


if __name__ == "__main__":
  # Flags are defined only when run, so importing this module (benchmarks,
  # tests) defines none.
  flags.DEFINE_string("output_dir", None, "Directory to write.",
                      required=True)
  flags.DEFINE_integer("num_days", 4, "Days of the synthetic stream.")
  flags.DEFINE_integer("examples_per_day", 100_000, "Examples per day.")
  flags.DEFINE_integer("seed", 0, "Seed of the stream.")
  flags.DEFINE_integer("chunk", 65_536, "Rows generated at a time.")
  app.run(main)
