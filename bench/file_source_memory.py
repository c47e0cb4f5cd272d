"""Peak memory of loading a Parquet log with data.files.file_source.

The synthetic stream (25 categorical features, one of them multi-valued,
72 dense, 6 labels: 552 bytes a row once loaded) is written to Parquet, a
file per day (data/materialize.py), for each row count; a fresh process
then loads it and reports its resident memory before loading, its peak
(VmHWM) and the bytes of the arrays the source keeps. The figure of merit
is (peak - before) / kept: the memory loading costs per byte it keeps.

  python bench/file_source_memory.py --output=results/bench/file_source_memory.md
"""

import json
import os
import subprocess
import sys
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/file_source_memory.md",
                    "Markdown report; raw numbers go beside it (.json).")
flags.DEFINE_list("rows", ["1000000", "5000000"], "Row counts of the logs.")
flags.DEFINE_integer("days", 10, "Days (files) of each log.")
flags.DEFINE_string("cache_dir", None, "Keep the written logs here (reused "
                    "when present); default: a temporary directory.")
flags.DEFINE_string("load", None, "Internal: load the log in this directory "
                    "and print the measurement (the fresh process).")


def _status_kb(key):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1])
  raise KeyError(key)


def _load(directory):
  import gin  # pylint: disable=g-import-not-at-top
  from ranking import quiet  # pylint: disable=g-import-not-at-top
  quiet.import_tensorflow()
  from data import files  # pylint: disable=g-import-not-at-top,unused-import
  gin.parse_config_file(os.path.join(directory, "columns.gin"))
  before = _status_kb("VmRSS")
  source = files.file_source()
  peak = _status_kb("VmHWM")
  kept = sum(t.numpy().nbytes for t in source._columns.values())  # pylint: disable=protected-access
  print(json.dumps({"rows": source.num_rows, "before_mb": before / 1024,
                    "peak_mb": peak / 1024, "kept_mb": kept / 2**20}))


def _write_log(rows, directory):
  from ranking import quiet  # pylint: disable=g-import-not-at-top
  quiet.import_tensorflow()
  from data import materialize  # pylint: disable=g-import-not-at-top
  from data.synthetic import SyntheticStream  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(directory, "columns.gin")):
    return
  materialize.materialize(SyntheticStream(
      num_days=FLAGS.days, examples_per_day=rows // FLAGS.days), directory,
                          log=lambda line: None)


def main(argv):
  del argv
  if FLAGS.load:
    _load(FLAGS.load)
    return
  from bench import report  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    for rows in map(int, FLAGS.rows):
      directory = os.path.join(FLAGS.cache_dir or scratch, f"log_{rows}")
      print(f"writing {rows:,} rows to {directory}", flush=True)
      _write_log(rows, directory)
      print(f"loading {rows:,} rows in a fresh process", flush=True)
      done = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f"--load={directory}"],
          cwd=ROOT, capture_output=True, text=True, check=True)
      results.append(json.loads(done.stdout.strip().splitlines()[-1]))
  lines = ["# Peak memory of loading a Parquet log (file_source)", "",
           report.machine(tf.__version__), "",
           "Written by `python bench/file_source_memory.py`. MB are MiB; "
           "cost = (peak - before) / kept.", "",
           "| rows | kept MB | bytes kept / row | RSS before MB | peak MB | "
           "cost |", "|---:|---:|---:|---:|---:|---:|"]
  for r in results:
    cost = (r["peak_mb"] - r["before_mb"]) / r["kept_mb"]
    r["cost"] = cost
    lines.append(f"| {r['rows']:,} | {r['kept_mb']:,.0f} | "
                 f"{r['kept_mb'] * 2**20 / r['rows']:.0f} | "
                 f"{r['before_mb']:,.0f} | {r['peak_mb']:,.0f} | "
                 f"**{cost:.2f}x** |")
  report.write(FLAGS.output, "\n".join(lines) + "\n", results)


if __name__ == "__main__":
  app.run(main)
