"""Times one sharpness measurement (ranking/sharpness.py) against training.

Builds the trainer of the given gin files (default: Large+DCN, naive
Adagrad, the CPU Table 2 regime), and times, after a warm-up call each (the
tracing): a loop of --train_steps training steps, and one measurement with
every power iteration run (tolerance 0: 2 x SharpnessMonitor.iterations
Hessian-vector products, the worst case) and with the configured tolerance
(at the untrained weights). Writes a Markdown table and the raw timings.

  python bench/sharpness_cost.py --output=results/bench/sharpness_cost.md
"""

import os
import sys
import tempfile
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from bench import report

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", ["configs/large_dcn_naive.gin",
                                       "configs/table2/cpu_runs.gin"],
                          "The run's gin files, in order.")
flags.DEFINE_multi_string("gin_param", [], "Bindings, applied last.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads "
                     "(0: TensorFlow's default).")
flags.DEFINE_integer("repeats", 3, "Timed calls of each (after warm-up).")
flags.DEFINE_integer("train_steps", 10, "Training steps per timed loop.")
flags.DEFINE_string("output", "results/bench/sharpness_cost.md",
                    "Markdown table to write; raw timings go beside it.")


def _timed(call, repeats):
  call()  # warm-up: tracing
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times


def main(argv):
  del argv
  if FLAGS.threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  from ranking import launch  # pylint: disable=g-import-not-at-top
  from ranking.sharpness import SharpnessMonitor  # pylint: disable=g-import-not-at-top
  trainer = launch.build_trainer(FLAGS.gin_file, FLAGS.gin_param,
                                 tempfile.mkdtemp(prefix="sharpness-cost-"))
  model, optimizer, window = (trainer.model, trainer.dense_optimizer,
                              trainer.window)
  dense = sum(int(tf.size(v)) for v in model.dense_variables)
  configured = trainer.sharpness
  exhaustive = SharpnessMonitor(model, optimizer, window, every_steps=1,
                                iterations=configured.iterations,
                                tolerance=0.0,
                                batch_size=configured.batch_size)
  iterator = trainer._iterator(0)  # pylint: disable=protected-access
  steps = tf.constant(FLAGS.train_steps, tf.int64)
  counts = {}

  def measure(monitor, name):
    def call():
      counts[name] = monitor.measure(0)
    return call

  load = os.getloadavg()[0]
  times = {  # the measurements first: on the untrained weights
      "measurement, every iteration": _timed(
          measure(exhaustive, "every"), FLAGS.repeats),
      "measurement, configured tolerance": _timed(
          measure(configured, "configured"), FLAGS.repeats),
      f"{FLAGS.train_steps} training steps": _timed(
          lambda: trainer._train_loop(iterator, steps), FLAGS.repeats),  # pylint: disable=protected-access
  }
  hvps = {name: int(c["sharpness/hessian_iterations"] + c.get(
      "sharpness/preconditioned_iterations", 0)) for name, c in counts.items()}
  meta = {"gin_file": FLAGS.gin_file, "gin_param": FLAGS.gin_param,
          "threads": FLAGS.threads, "repeats": FLAGS.repeats,
          "dense_parameters": dense, "batch_size": configured.batch_size,
          "iterations": configured.iterations,
          "tolerance": configured.tolerance, "hvps": hvps,
          "load_average": load}
  report.write(FLAGS.output, render(times, meta),
               {"meta": meta, "times": times})


def render(times, meta):
  step = np.median(times[f"{FLAGS.train_steps} training steps"]) / (
      FLAGS.train_steps)
  rows = []
  for name, values in times.items():
    median = np.median(values)
    hvp = {"measurement, every iteration": meta["hvps"]["every"],
           "measurement, configured tolerance": meta["hvps"]["configured"]
           }.get(name)
    per_hvp = f"{1e3 * median / hvp:.0f}" if hvp else ""
    rows.append(f"| {name} | {median:.2f} | {hvp or ''} | {per_hvp} | "
                f"{median / step:.1f} |")
  files = " ".join(f"--gin_file={f}" for f in meta["gin_file"])
  return "\n".join([
      "# Cost of one sharpness measurement",
      "",
      f"Gin files: {', '.join(meta['gin_file'])}; "
      f"{meta['dense_parameters']:,} dense parameters, probe batch "
      f"{meta['batch_size']}, at most {meta['iterations']} power iterations "
      f"per eigenvalue (tolerance {meta['tolerance']:g}); untrained weights. "
      f"Median of {meta['repeats']} calls after a warm-up call; "
      f"{meta['threads'] or 'default'} TensorFlow thread(s); load average "
      f"{meta['load_average']:.1f} at the start (above ~1, other jobs "
      "shared the cores).",
      f"{report.machine(tf.__version__)} Command: `python "
      f"bench/sharpness_cost.py {files} --threads={meta['threads']}`.",
      "",
      "| what | seconds | HVPs | ms per HVP | in training steps |",
      "|---|---:|---:|---:|---:|",
      *rows,
      "",
  ])


if __name__ == "__main__":
  app.run(main)
