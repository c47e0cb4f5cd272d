"""Times one training step per optimizer on the Small and Large MLPs.

Every method of the paper (our ScaledAdagrad / ScaledAdam), plain tf.keras
Adagrad and TFRS's reference ClippyAdagrad, side by side in one run, on the
paper's shared-bottom MLPs (Small 512x2, Large 4096x4; input width ~1600;
6 heads). Writes a Markdown table (median step time, ratio to plain Adagrad)
and the raw timings as JSON.

  python bench/optim_step.py --output=results/bench/optim_step.md
"""

import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from bench import report
from optim import build_optimizer

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/optim_step.md",
                    "Markdown table to write; raw timings go beside it (.json).")
flags.DEFINE_integer("batch_size", 512, "Examples per step.")
flags.DEFINE_integer("input_width", 1600, "Width of the model's input vector.")
flags.DEFINE_integer("steps", 5, "Timed steps per optimizer (after warm-up).")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, allocation).")
flags.DEFINE_list("models", ["small", "large"], "Which MLPs to time.")
flags.DEFINE_list("xla", ["off", "on"],
                  "Compile the whole step with XLA: off, on, or both.")

WIDTHS = {"small": [512, 512], "large": [4096] * 4}
TASKS = 6
THRESHOLDS = {"gc": {"clip_norm": 1e-2}, "agc": {"clip_factor": 1e-3},
              "lamb": {"trust_coefficient": 1e-2}}
OPTIMIZERS = {
    "keras Adagrad": lambda: tf.keras.optimizers.Adagrad(
        0.01, initial_accumulator_value=0.1),
    "TFRS ClippyAdagrad": lambda: tfrs.experimental.optimizers.ClippyAdagrad(
        0.01, variable_relative_threshold=0.5, absolute_threshold=1e-2,
        use_standard_accumulator_update=True),
    **{f"ours: {m}": (lambda m=m: build_optimizer(m, 0.01,
                                                  **THRESHOLDS.get(m, {})))
       for m in ["naive", "gc", "agc", "lamb", "clippy", "clippy_adam"]},
    "ours: clippy, norms every 100": lambda: build_optimizer(
        "clippy", 0.01, diagnostics_every=100),
}


def _mlp(widths):
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input((FLAGS.input_width,))
  x = inputs
  for width in widths:
    x = tf.keras.layers.Dense(width, activation="relu")(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(TASKS)(x))


def _make_step(widths, make_optimizer, jit_compile):
  """A compiled training step of a fresh model (same initial weights)."""
  model = _mlp(widths)
  optimizer = make_optimizer()
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(FLAGS.batch_size, FLAGS.input_width)),
                  tf.float32)
  y = tf.constant(rng.random((FLAGS.batch_size, TASKS)) < 0.3, tf.float32)

  @tf.function(jit_compile=jit_compile)
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(
          tf.nn.sigmoid_cross_entropy_with_logits(y, model(x)))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  return step, params


def _time_round_robin(widths, jit_compile):
  """Median step time per optimizer, timed in turns so that drift in the
  machine's speed falls on every optimizer alike."""
  steps = {}
  for name, make in OPTIMIZERS.items():
    steps[name], params = _make_step(widths, make, jit_compile)
    for _ in range(FLAGS.warmup):
      steps[name]().numpy()
  times = {name: [] for name in steps}
  for round_ in range(FLAGS.steps):
    for name, step in steps.items():
      start = time.perf_counter()
      step().numpy()
      times[name].append(time.perf_counter() - start)
    print(f"  round {round_ + 1}/{FLAGS.steps}", flush=True)
  return times, params


def main(argv):
  del argv
  unknown = set(FLAGS.models) - set(WIDTHS)
  if unknown:
    raise app.UsageError(f"Unknown models {sorted(unknown)}; "
                         f"choose from {sorted(WIDTHS)}.")
  bad = set(FLAGS.xla) - {"on", "off"}
  if bad:
    raise app.UsageError(f"--xla takes on and/or off, got {sorted(bad)}.")
  results = {}
  for xla in FLAGS.xla:
    for model_name in FLAGS.models:
      print(f"timing {model_name}, XLA {xla}", flush=True)
      times, params = _time_round_robin(WIDTHS[model_name], xla == "on")
      results[f"{model_name}, XLA {xla}"] = {
          "widths": WIDTHS[model_name], "params": params, "times": times}

  meta = {k: FLAGS[k].value for k in
          ["batch_size", "input_width", "steps", "warmup", "xla"]}
  report.write(FLAGS.output, render(results, meta), {"flags": meta,
                                               "results": results})


def render(results, meta):
  """The Markdown report of one run's timings."""
  lines = [
      "# Optimizer step time",
      "",
      f"One training step (forward, backward, update) of a shared-bottom MLP "
      f"with {TASKS} heads, input width {meta['input_width']}, batch "
      f"{meta['batch_size']}; median of {meta['steps']} steps after "
      f"{meta['warmup']} warm-up steps, the optimizers timed in turns. "
      "Diagnostics on (the default) unless the row says otherwise.",
      f"{report.machine(tf.__version__)} Command: `python bench/optim_step.py "
      f"--batch_size={meta['batch_size']} --steps={meta['steps']} "
      f"--xla={','.join(meta['xla'])}`.",
      "",
  ]
  for title, result in results.items():
    base = np.median(result["times"]["keras Adagrad"])
    lines += [f"## {title} ({' x '.join(map(str, result['widths']))}, "
              f"{result['params'] / 1e6:.1f}M parameters)", "",
              "| optimizer | step (ms) | over keras Adagrad (ms) | ratio |",
              "|---|---:|---:|---:|"]
    for opt_name, times in result["times"].items():
      median = np.median(times)
      lines.append(f"| {opt_name} | {1e3 * median:.1f} | "
                   f"{1e3 * (median - base):+.1f} | {median / base:.3f} |")
    lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
