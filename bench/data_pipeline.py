"""Throughput and memory of the data pipelines (the moving-window stream).

  python bench/data_pipeline.py --output=results/bench/data_pipeline.md

Measures examples per second at batch 4096 (~100 features: 25 categorical,
72 dense, 6 labels) of (1) the synthetic stream generated on the fly and
(2) the file pipeline: the stream materialised to Parquet, read back with
data.files.file_source and served by the same window; and (3) the peak
memory of a process that serves the synthetic stream for D and for 10 D
days, each measured in a fresh subprocess.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import gin
import tensorflow as tf

from bench import report as report_lib
from data import files, materialize
from data.synthetic import SyntheticStream
from data.window import MovingWindow

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/data_pipeline.md",
                    "Markdown report; raw numbers go beside it (.json).")
flags.DEFINE_integer("batch_size", 4096, "Examples per batch.")
flags.DEFINE_integer("batches", 60, "Timed batches per pipeline.")
flags.DEFINE_integer("days", 14, "Days of the stream (memory: D and 10 D).")
flags.DEFINE_integer("file_days", 3, "Days materialised for the file test.")
flags.DEFINE_integer("examples_per_day", 100_000, "Examples per day.")
flags.DEFINE_integer("memory_days", None, "Internal: serve this many days "
                     "and print the peak RSS (the memory subprocess).")


def _throughput(window):
  """Examples per second over FLAGS.batches batches after 5 warm-up ones."""
  it = iter(window.train_dataset())
  for _ in range(5):
    next(it)
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(it)["day"].numpy()
  return FLAGS.batches * window.batch_size / (time.perf_counter() - start)


def _stream(days):
  return SyntheticStream(num_days=days,
                         examples_per_day=FLAGS.examples_per_day)


def _peak_rss_mb(days):
  out = subprocess.run(
      [sys.executable, __file__, f"--memory_days={days}",
       f"--batches={FLAGS.batches}", f"--batch_size={FLAGS.batch_size}",
       f"--examples_per_day={FLAGS.examples_per_day}"],
      check=True, capture_output=True, text=True).stdout
  return float(out.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.memory_days:
    window = MovingWindow(_stream(FLAGS.memory_days), FLAGS.batch_size,
                          window_days=3, steps_per_day=FLAGS.batches)
    _throughput(window)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return

  results = {}
  stream = _stream(FLAGS.days)
  results["synthetic examples/s"] = _throughput(
      MovingWindow(stream, FLAGS.batch_size, window_days=3,
                   steps_per_day=FLAGS.batches))
  print(f"synthetic: {results['synthetic examples/s']:,.0f} examples/s",
        flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    small = _stream(FLAGS.file_days)
    start = time.perf_counter()
    materialize.materialize(small, tmp, log=lambda _: None)
    results["materialise s"] = time.perf_counter() - start
    gin.parse_config_file(os.path.join(tmp, "columns.gin"))
    start = time.perf_counter()
    source = files.file_source()
    results["file load s"] = time.perf_counter() - start
    features = len(source.schema.feature_names)
    results["file features"] = features
    results["file examples/s"] = _throughput(
        MovingWindow(source, FLAGS.batch_size, window_days=3,
                     steps_per_day=FLAGS.batches))
  print(f"file: {results['file examples/s']:,.0f} examples/s", flush=True)

  results["peak MB, D days"] = _peak_rss_mb(FLAGS.days)
  results["peak MB, 10 D days"] = _peak_rss_mb(10 * FLAGS.days)
  growth = results["peak MB, 10 D days"] / results["peak MB, D days"] - 1
  results["memory growth"] = growth

  report = "\n".join([
      "# Data pipeline throughput and memory", "",
      f"Batch {FLAGS.batch_size}; {len(stream.schema.categorical)} categorical "
      f"features, {sum(f.dim for f in stream.schema.dense)} dense, "
      f"{len(stream.schema.labels)} labels; {FLAGS.examples_per_day:,} "
      f"examples per day; mean over {FLAGS.batches} batches after "
      "5 warm-up batches. "
      f"{report_lib.machine(tf.__version__)} "
      "Command: `python bench/data_pipeline.py`.",
      "",
      "| measurement | value |", "|---|---:|",
      f"| synthetic stream, {FLAGS.days} days | "
      f"{results['synthetic examples/s']:,.0f} examples/s |",
      f"| file pipeline (Parquet, {FLAGS.file_days} days, {features} feature "
      f"columns) | {results['file examples/s']:,.0f} examples/s |",
      f"| materialise {FLAGS.file_days} days to Parquet | "
      f"{results['materialise s']:.1f} s |",
      f"| load them with file_source | {results['file load s']:.1f} s |",
      f"| peak memory, {FLAGS.days} days | "
      f"{results['peak MB, D days']:,.0f} MB |",
      f"| peak memory, {10 * FLAGS.days} days | "
      f"{results['peak MB, 10 D days']:,.0f} MB |",
      f"| memory growth for 10x the days | {100 * growth:+.1f}% |", ""])
  report_lib.write(FLAGS.output, report, results)


if __name__ == "__main__":
  app.run(main)
