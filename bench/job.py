"""The speed of the main job and of Large, against this machine's peak.

One run measures, and writes to results/bench/job.md (raw numbers beside it,
job.json):

- the machine: fp32 matmul peak (2048^3, best of several) and memory
  bandwidth (y = x + 1 over 256 MiB: one read and one write per element);
- per model (the main job's Large+DCN on configs/small_machine.gin; the
  paper's Large, 4096x4, at batch 512 and 2048), in each of
  Trainer.jit_compile's modes (no XLA, XLA updates, XLA step):
  the bare step (the trainer's own replica step on one fixed batch, in one
  tf.function) and the trainer's step (Trainer.run, data pipeline and loop
  included, after its first loop), as ms, examples/s, GFLOP/s of the dense
  matmuls (6 x batch x kernel sizes) and fraction of the peak;
- the whole job (`make train`'s command, run as a process): wall time and
  the trainer's phases (setup, first loop = tracing, training, evaluation,
  checkpoints, summaries);
- the embedding step's cost against vocabulary size: the main model's bare
  step with every vocabulary 10x;
- on Large at batch 512, plain tf.keras Adagrad, the project's naive and
  its Clippy, alternated step by step in one run, each compilation mode.

  python bench/job.py                      # about 15 minutes on 2 cores
  python bench/job.py --parts=machine,main # a part of it
"""

import os
import subprocess
import sys
import tempfile
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import gin
import numpy as np

from ranking import quiet

tf = quiet.import_tensorflow()

from bench import report  # pylint: disable=g-import-not-at-top
from optim import build_optimizer
from ranking import launch
from ranking.trainer import Trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/job.md",
                    "Markdown report; raw numbers go beside it (.json).")
flags.DEFINE_list("parts", ["machine", "main", "job", "vocabulary", "large",
                            "optimizers"], "What to measure.")
flags.DEFINE_integer("steps", 4, "Timed calls per case (after warm-up): of "
                     "steps_per_loop bare steps, or one optimizer step.")
flags.DEFINE_integer("trainer_steps", 20,
                     "Trainer steps per case (the first loop is not timed).")

MAIN = ["configs/large_dcn_clippy.gin", "configs/small_machine.gin"]
LARGE = ["configs/large_clippy.gin"]
# Large's steps take about a second: 2 per host call is as good as 10.
LARGE_LOOP = ["Trainer.steps_per_loop = 2"]
# Small days: the bench times steps, not a protocol.
BENCH = ["SyntheticStream.examples_per_day = 20000",
         "Trainer.eval_every_steps = 100000",
         "Trainer.checkpoint_every_steps = 100000"]
MAKE_TRAIN = [sys.executable, "train.py", "--gin_file=configs/"
              "large_dcn_clippy.gin", "--gin_file=configs/small_machine.gin"]


def _median_seconds(fn, steps, warmup=2):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def machine():
  """{matmul_gflops, bandwidth_gbs}: the best of several timed calls."""
  n = 2048
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
  seconds = min(_median_seconds(matmul, 5) for _ in range(3))
  x = tf.Variable(tf.zeros([64 << 20]))  # 256 MiB
  y = tf.Variable(tf.zeros([64 << 20]))
  stream = tf.function(lambda: y.assign(x + 1.0))
  stream_seconds = min(_median_seconds(stream, 5) for _ in range(3))
  return {"matmul_gflops": 2 * n**3 / seconds / 1e9,
          "bandwidth_gbs": 2 * 4 * (64 << 20) / stream_seconds / 1e9}


# Trainer.jit_compile's modes, as the tables name them.
MODES = {False: "no XLA", "updates": "XLA updates", True: "XLA step"}


def _trainer(gin_files, bindings, model_dir, jit):
  gin.clear_config()
  return launch.build_trainer(gin_files, BENCH + bindings + [
      f"Trainer.jit_compile = {jit!r}"], model_dir)


def _matmul_flops(trainer):
  """Dense-matmul FLOPs of one training step: forward 2, backward 4 per
  multiply-add of every kernel (a 2-D dense variable)."""
  macs = sum(int(np.prod(v.shape)) for v in trainer.model.dense_variables
             if len(v.shape) == 2)
  return 6 * trainer.window.batch_size * macs


def _rates(seconds, batch, flops, peak):
  return {"ms": 1e3 * seconds, "examples_per_s": batch / seconds,
          "gflops": flops / seconds / 1e9,
          "of_peak": flops / seconds / 1e9 / peak}


def bare_step(gin_files, bindings, jit, peak):
  """The trainer's replica step on one fixed batch, steps_per_loop steps
  per call of one tf.function (as the trainer's loop runs them)."""
  with tempfile.TemporaryDirectory() as model_dir:
    trainer = _trainer(gin_files, bindings, model_dir, jit)
    batch = trainer.window.train_batch(tf.constant(0, tf.int64))
    step = trainer.replica_step
    if jit is True:
      step = tf.function(step, jit_compile=True)
    n = trainer.steps_per_loop

    @tf.function
    def loop():
      for _ in tf.range(n):
        step(batch)
      return trainer.model.dense_variables[0][0, 0]

    seconds = _median_seconds(lambda: loop().numpy(), FLAGS.steps) / n
    return _rates(seconds, trainer.window.batch_size, _matmul_flops(trainer),
                  peak)


def trainer_step(gin_files, bindings, jit, peak):
  """Trainer.run over trainer_steps steps; its steps after the first loop
  (which traces and compiles), data pipeline and loop included."""
  with tempfile.TemporaryDirectory() as model_dir:
    trainer = _trainer(gin_files, bindings + [
        f"Trainer.max_steps = {FLAGS.trainer_steps}",
        f"Trainer.summary_every_steps = {FLAGS.trainer_steps}"], model_dir,
                       jit)
    trainer.log = lambda line: None
    trainer.run()
    timed = FLAGS.trainer_steps - trainer.steps_per_loop
    out = _rates(trainer.seconds["train"] / timed, trainer.window.batch_size,
                 _matmul_flops(trainer), peak)
    out["first_loop_s"] = trainer.seconds["first_loop"]
    return out


def whole_job(runs=1):
  """`make train`'s command as a process: wall seconds and the phases of
  its closing "Time:" line."""
  out = []
  for _ in range(runs):
    with tempfile.TemporaryDirectory() as model_dir:
      start = time.perf_counter()
      done = subprocess.run(MAKE_TRAIN + [f"--model_dir={model_dir}/run"],
                            cwd=ROOT, capture_output=True, text=True,
                            check=True)
      wall = time.perf_counter() - start
    line = [l for l in done.stdout.splitlines() if l.startswith("Time: ")][-1]
    phases = {}
    for part in line[len("Time: "):].split(", "):
      label, value, _ = part.rsplit(" ", 2)
      phases[label] = float(value)
    final = [l for l in done.stdout.splitlines() if "/auc" in l][-1]
    out.append({"wall_s": wall, "phases": phases, "final_eval": final})
  return out


def optimizers(jit, steps):
  """Plain tf.keras Adagrad, our naive, our Clippy on Large (batch 512):
  the model's step with each, alternated, median ms. Ours compute their
  norms every 50 steps, as the trainer does (Trainer.summary_every_steps),
  and Clippy once more with norms every step. In an uncompiled step, ours
  both with their update uncompiled and XLA-compiled (fused_update, the
  trainer's default)."""
  with tempfile.TemporaryDirectory() as model_dir:
    trainer = _trainer(LARGE, LARGE_LOOP, model_dir, jit)
  model = trainer.model
  batch = trainer.window.train_batch(tf.constant(0, tf.int64))
  rate = 0.02

  def ours(method, fused=False, every=50):
    def make():
      # Norms at the trainer's default summary cadence (every 50 steps).
      optimizer = build_optimizer(method, rate, diagnostics_every=every)
      optimizer.fused_update = fused
      return optimizer
    return make

  makers = {"tf.keras Adagrad": lambda: tf.keras.optimizers.Adagrad(
      rate, initial_accumulator_value=0.1, epsilon=1e-7)}
  if not jit:
    makers.update({"ours: naive, update uncompiled": ours("naive"),
                   "ours: clippy, update uncompiled": ours("clippy"),
                   "ours: naive, XLA update": ours("naive", True),
                   "ours: clippy, XLA update": ours("clippy", True),
                   "ours: clippy, XLA update, norms every step": ours(
                       "clippy", True, 1)})
  else:
    makers.update({"ours: naive": ours("naive"),
                   "ours: clippy": ours("clippy"),
                   "ours: clippy, norms every step": ours("clippy", every=1)})
  steps_by_name = {}
  for name, make in makers.items():
    optimizer = make()
    variables = model.dense_variables

    def step(optimizer=optimizer, variables=variables):
      with tf.GradientTape() as tape:
        total, _ = model.training_loss(batch, trainer.window.batch_size)
      grads = tape.gradient(total, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return total

    steps_by_name[name] = tf.function(step, jit_compile=jit)
  times = {name: [] for name in makers}
  for fn in steps_by_name.values():  # warm-up: trace, compile, allocate
    fn().numpy()
    fn().numpy()
  for _ in range(steps):
    for name, fn in steps_by_name.items():
      start = time.perf_counter()
      fn().numpy()
      times[name].append(time.perf_counter() - start)
  medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
  base = medians["tf.keras Adagrad"]
  return {name: {"ms": ms, "ratio": ms / base} for name, ms in medians.items()}


def _row(name, r):
  return (f"| {name} | {r['ms']:.1f} | {r['examples_per_s']:,.0f} | "
          f"{r['gflops']:.0f} | {100 * r['of_peak']:.0f}% |")


def main(argv):
  del argv
  parts = set(FLAGS.parts)
  raw = {"tensorflow": tf.__version__}
  lines = ["# The job's speed on this machine", "",
           report.machine(tf.__version__), "",
           "Written by `python bench/job.py` (one run; `make bench-job`).", ""]
  peak = None
  if "machine" in parts or parts & {"main", "large", "vocabulary"}:
    raw["machine"] = machine()
    peak = raw["machine"]["matmul_gflops"]
    lines += [f"fp32 matmul peak (2048^3): **{peak:.0f} GFLOP/s**; memory "
              f"bandwidth (read + write): "
              f"**{raw['machine']['bandwidth_gbs']:.1f} GB/s**.", ""]
  cases = []
  if "main" in parts:
    cases.append(("main job (Large+DCN, small_machine.gin), batch 512",
                  MAIN, []))
  if "large" in parts:
    cases += [(f"Large (4096x4), batch {b}", LARGE,
               LARGE_LOOP + [f"MovingWindow.batch_size = {b}"])
              for b in (512, 2048)]
  if cases:
    lines += ["## Steps", "",
              "GFLOP/s counts the dense matmuls (6 x batch x kernel sizes); "
              "% is of the matmul peak. Bare: the trainer's replica step on "
              "one fixed batch. Trainer: Trainer.run's steps after its "
              "first loop (data pipeline, loop and bookkeeping included).",
              "", "| case | ms/step | examples/s | GFLOP/s | of peak |",
              "|---|---:|---:|---:|---:|"]
    raw["steps"] = {}
    for title, files, bindings in cases:
      for jit, mode in MODES.items():
        for kind, fn in (("bare", bare_step), ("trainer", trainer_step)):
          print(f"timing {title}, {kind}, {mode}", flush=True)
          r = fn(files, bindings, jit, peak)
          raw["steps"][f"{title} | {kind} | {mode}"] = r
          lines.append(_row(f"{title}: {kind}, {mode}", r))
    lines.append("")
  if "vocabulary" in parts:
    print("timing the vocabulary", flush=True)
    ten = ["SyntheticStream.num_users = 500000",
           "SyntheticStream.num_items = 200000",
           "SyntheticStream.new_items_per_shift = 50000",
           "SyntheticStream.tag_vocab_size = 10000",
           "SyntheticStream.categorical_vocab_sizes = (100, 1000, 10000)"]
    one = bare_step(MAIN, [], "updates", peak)
    tenfold = bare_step(MAIN, ten, "updates", peak)
    raw["vocabulary"] = {"1x": one, "10x": tenfold}
    lines += ["## Embedding cost against vocabulary", "",
              "The main model's bare step (XLA updates) with the synthetic "
              "stream's vocabularies as configured and 10x each (users, "
              "items, new items, tags, categorical features).", "",
              "| vocabularies | ms/step |", "|---|---:|",
              f"| 1x | {one['ms']:.1f} |", f"| 10x | {tenfold['ms']:.1f} |",
              "", f"10x / 1x: **{tenfold['ms'] / one['ms']:.3f}**.", ""]
  if "optimizers" in parts:
    lines += ["## Optimizers on Large, batch 512", "",
              "The dense variables' step with each optimizer (embeddings "
              "not updated), alternated step by step; median of "
              f"{3 * FLAGS.steps} steps each.", "",
              "| optimizer | mode | ms/step | / tf.keras Adagrad |",
              "|---|---|---:|---:|"]
    raw["optimizers"] = {}
    for jit in (False, True):
      mode = "XLA step" if jit else "step uncompiled"
      print(f"timing the optimizers, {mode}", flush=True)
      r = optimizers(jit, 3 * FLAGS.steps)
      raw["optimizers"][mode] = r
      lines += [f"| {name} | {mode} | {v['ms']:.1f} | {v['ratio']:.3f} |"
                for name, v in r.items()]
    lines.append("")
  if "job" in parts:
    print("timing the whole job (make train)", flush=True)
    runs = whole_job()
    raw["job"] = runs
    lines += ["## The whole job (`make train`)", "",
              "| run | wall s | " + " | ".join(runs[0]["phases"]) + " |",
              "|---|---:|" + "---:|" * len(runs[0]["phases"])]
    for i, r in enumerate(runs):
      lines.append(f"| {i + 1} | {r['wall_s']:.1f} | " + " | ".join(
          f"{v:.1f}" for v in r["phases"].values()) + " |")
    lines += ["", f"Final evaluation: `{runs[-1]['final_eval']}`", ""]
  report.write(FLAGS.output, "\n".join(lines), raw)


if __name__ == "__main__":
  app.run(main)
