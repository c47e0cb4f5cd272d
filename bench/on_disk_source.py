"""Memory and throughput of a prepared log on disk, at 1x and 10x the days.

  python bench/on_disk_source.py --output=results/bench/on_disk_source.md

Prepares the synthetic stream (full schema: 25 categorical, 72 dense, 6
labels) with data.prepare for --small_days and --large_days days of the same
size (default 10 and 100 days of 100,000 rows: 1M and 10M rows), then, in a
fresh subprocess per log, serves MovingWindow.train_dataset over
on_disk_source at batch --batch_size for --batches batches of the last
training days' windows and reports the peak RSS (VmHWM) and examples/s.
Each log is served twice: warm (its files in the page cache, as just
written) and cold (the files dropped from the cache with posix_fadvise
first, so the window's pages are read from disk).

The target is 3x what the Small model consumes: examples per second of one
Small training step (keras Adagrad, XLA off) read from
results/bench/optim_step.md.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

from bench import report as report_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/on_disk_source.md",
                    "Markdown report; raw numbers go beside it (.json).")
flags.DEFINE_integer("batch_size", 4096, "Examples per batch.")
flags.DEFINE_integer("batches", 100, "Timed batches per measurement.")
flags.DEFINE_integer("examples_per_day", 100_000, "Examples per day.")
flags.DEFINE_integer("small_days", 10, "Days of the small log.")
flags.DEFINE_integer("large_days", 100, "Days of the large log.")
flags.DEFINE_integer("window_days", 3, "Days of the moving window.")
flags.DEFINE_string("work_dir", None, "Where the logs are prepared (default: "
                    "a temporary directory, removed afterwards).")
flags.DEFINE_string("optim_report", "results/bench/optim_step.md",
                    "Step times of the Small model.")
flags.DEFINE_string("measure_dir", None, "Internal: serve this prepared log "
                    "and print the measurements (the subprocess).")

WARMUP = 5


def _status_kb(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


def _mapped_rss_mb(path):
  """Resident MB of the mappings of files under `path` (the day files)."""
  total, inside = 0, False
  with open("/proc/self/smaps") as f:
    for line in f:
      fields = line.split()
      if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        inside = len(fields) >= 6 and fields[5].startswith(path)
      elif inside and fields[0] == "Rss:":
        total += int(fields[1])
  return total / 1024


def _measure(path):
  """Serves the last training days' windows of `path`; prints a JSON line."""
  from data.on_disk import on_disk_source  # pylint: disable=g-import-not-at-top
  from data.window import MovingWindow  # pylint: disable=g-import-not-at-top
  source = on_disk_source(path)
  window = MovingWindow(source, FLAGS.batch_size,
                        window_days=FLAGS.window_days)
  start = window.total_steps - FLAGS.batches - WARMUP
  if start < 0:
    raise ValueError(f"{path}: only {window.total_steps} steps.")
  before_mb = _status_kb("VmRSS") / 1024
  it = iter(window.train_dataset(start))
  for _ in range(WARMUP):
    next(it)
  begin = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(it)["day"].numpy()
  seconds = time.perf_counter() - begin
  days = sorted({d for s in range(start, window.total_steps)
                 for d in range(max(window.day_of_step(s) -
                                    FLAGS.window_days + 1, 0),
                                window.day_of_step(s) + 1)})
  print(json.dumps({
      "examples/s": FLAGS.batches * FLAGS.batch_size / seconds,
      "peak RSS MB": _status_kb("VmHWM") / 1024,
      "RSS MB before serving": before_mb,
      "RssFile MB": _status_kb("RssFile") / 1024,
      "day files resident MB": _mapped_rss_mb(os.path.abspath(path)),
      "RssAnon MB": _status_kb("RssAnon") / 1024,
      "days touched": len(days),
      "days mapped at the end": len(source.mapped_days),
      "load average": os.getloadavg()[0]}))


def _drop_from_cache(path):
  for name in os.listdir(path):
    fd = os.open(os.path.join(path, name), os.O_RDONLY)
    try:
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def _serve(path, cold):
  if cold:
    _drop_from_cache(path)
  out = subprocess.run(
      [sys.executable, __file__, f"--measure_dir={path}",
       f"--batches={FLAGS.batches}", f"--batch_size={FLAGS.batch_size}",
       f"--window_days={FLAGS.window_days}"],
      check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def small_model_rate(path):
  """(examples/s, ms, batch) of one Small step, keras Adagrad, XLA off."""
  with open(path) as f:
    text = f.read()
  batch = int(re.search(r"batch (\d+)", text).group(1))
  section = text.split("## small, XLA off", 1)[1].split("##", 1)[0]
  ms = float(re.search(r"\| keras Adagrad \| ([\d.]+) \|", section).group(1))
  return batch / (ms / 1000), ms, batch


def main(argv):
  del argv
  if FLAGS.measure_dir:
    _measure(FLAGS.measure_dir)
    return
  from data import prepare  # pylint: disable=g-import-not-at-top
  from data.synthetic import SyntheticStream  # pylint: disable=g-import-not-at-top
  rate, step_ms, step_batch = small_model_rate(FLAGS.optim_report)
  target = 3 * rate
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="on_disk_bench_")
  results = {"small model examples/s": rate, "target examples/s": target,
             "batch": FLAGS.batch_size, "batches": FLAGS.batches,
             "window_days": FLAGS.window_days,
             "examples_per_day": FLAGS.examples_per_day, "logs": {}}
  try:
    for days in (FLAGS.small_days, FLAGS.large_days):
      stream = SyntheticStream(num_days=days,
                               examples_per_day=FLAGS.examples_per_day)
      path = os.path.join(work, f"days_{days}")
      begin = time.perf_counter()
      manifest = prepare.prepare(stream, path, overwrite=True,
                                 log=lambda _: None)
      log = {"rows": stream.num_rows, "days": days,
             "prepare s": time.perf_counter() - begin,
             "bytes": sum(d["bytes"] for d in manifest["days"]),
             "fingerprint": manifest["fingerprint"]}
      print(f"prepared {stream.num_rows:,} rows ({log['bytes'] / 2**30:.2f} "
            f"GiB) in {log['prepare s']:.0f} s", flush=True)
      for mode in ("warm", "cold"):
        log[mode] = _serve(path, cold=mode == "cold")
        print(f"  {mode}: {log[mode]}", flush=True)
      results["logs"][str(days)] = log
      shutil.rmtree(path)
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(work, ignore_errors=True)

  small, large = (results["logs"][str(d)] for d in (FLAGS.small_days,
                                                    FLAGS.large_days))
  for mode in ("warm", "cold"):
    results[f"RSS growth, {mode}"] = (large[mode]["peak RSS MB"] /
                                      small[mode]["peak RSS MB"] - 1)
  slowest = min(log[m]["examples/s"] for log in (small, large)
                for m in ("warm", "cold"))
  results["slowest / target"] = slowest / target
  row_bytes = small["bytes"] / small["rows"]
  lines = [
      "# On-disk source: memory and throughput at 1x and 10x the days", "",
      f"The synthetic stream (25 categorical, 72 dense, 6 labels; "
      f"{row_bytes:.0f} bytes a row on disk) prepared with `data.prepare` "
      f"for {FLAGS.small_days} and {FLAGS.large_days} days of "
      f"{FLAGS.examples_per_day:,} rows, served by `on_disk_source` through "
      f"MovingWindow.train_dataset (window {FLAGS.window_days} days, batch "
      f"{FLAGS.batch_size}): {FLAGS.batches} batches of the last training "
      f"days after {WARMUP} warm-up ones, each log in a fresh process. "
      "Warm: the files in the page cache (just written); cold: dropped "
      "from it first (posix_fadvise DONTNEED), so the window is read from "
      "disk.",
      report_lib.machine(tf.__version__) +
      " Command: `python bench/on_disk_source.py`.", "",
      "| log | on disk | prepare | serving | examples/s | peak RSS | RSS "
      "before serving | day files resident at end | days touched | load |",
      "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
  for log in (small, large):
    for mode in ("warm", "cold"):
      m = log[mode]
      lines.append(
          f"| {log['rows'] / 1e6:g}M rows, {log['days']} days | "
          f"{log['bytes'] / 2**30:.2f} GiB | {log['prepare s']:.0f} s | "
          f"{mode} | {m['examples/s']:,.0f} | {m['peak RSS MB']:,.0f} MB | "
          f"{m['RSS MB before serving']:,.0f} MB | "
          f"{m['day files resident MB']:,.0f} MB | {m['days touched']} | "
          f"{m['load average']:.1f} |")
  lines += [
      "",
      f"Peak RSS for {FLAGS.large_days / FLAGS.small_days:g}x the days: "
      f"{100 * results['RSS growth, warm']:+.1f}% warm, "
      f"{100 * results['RSS growth, cold']:+.1f}% cold (acceptance: within "
      "20%). RSS before serving is the process with TensorFlow loaded and "
      "the window planned; the day files' resident pages are those of the "
      "days still mapped at the end (at most the window plus one: older "
      "days are unmapped).",
      "",
      f"Target: the Small model consumes {rate:,.0f} examples/s (one step at "
      f"batch {step_batch} takes {step_ms} ms: keras Adagrad, XLA off, "
      f"`{FLAGS.optim_report}`), so 3x is {target:,.0f} examples/s; the "
      f"slowest measurement above is {results['slowest / target']:.1f}x "
      "the target. Load: the 1-minute load average when the measurement "
      "ended (the machine's 2 cores are shared with other jobs, so "
      "examples/s vary with it).", ""]
  report_lib.write(FLAGS.output, "\n".join(lines), results)


if __name__ == "__main__":
  app.run(main)
