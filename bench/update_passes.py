"""What Clippy's update costs over Adagrad's, pass by pass, on Large's weights.

Clippy (paper Algorithm 1) scales a layer's update by a factor that is a
reduction over every coordinate of the layer (g, G and w), so the update
cannot start before one whole pass over the three tensors has ended: its
floor is Adagrad's read-modify-write pass plus one read pass. This
benchmark times, on `--variables` weights of `--shape` (Large's 4096x4096
kernels) in one XLA computation each, alternated call by call:

- Adagrad's update written out (G += g^2; w -= eta g / sqrt(G + eps));
- the reduction alone (`optim.rules.clippy_scale`, max_i |r_i| /
  (lambda_rel |w_i| + lambda_abs), at the paper's lambdas), the pass Clippy
  adds;
- the project's ScaledAdagrad, naive and Clippy, as the trainer runs them
  (fused_update=True, diagnostics off);
- a one-pass attempt: apply the step with sigma = 1 while reducing, and
  correct the layers whose sigma < 1 (XLA does not fuse the reduction into
  the update, so it only adds work).

  python bench/update_passes.py --output=results/bench/update_passes.md
"""

import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from ranking import quiet

tf = quiet.import_tensorflow()

from bench import report  # pylint: disable=g-import-not-at-top
from optim import ScaledAdagrad, rules

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/bench/update_passes.md",
                    "Markdown report; raw numbers go beside it (.json).")
flags.DEFINE_integer("variables", 4, "Weights updated per call.",
                     lower_bound=1)
flags.DEFINE_list("shape", ["4096", "4096"], "Shape of each weight.")
flags.register_validator(
    "shape", lambda s: all(d.isdigit() and int(d) > 0 for d in s),
    "--shape must be positive integers, e.g. --shape=4096,4096")
flags.DEFINE_integer("calls", 15, "Timed calls per case (median reported).",
                     lower_bound=1)

LR, EPS = 0.02, 1e-7
ADAGRAD = "Adagrad's update, written out"
REDUCTION = "Clippy's reduction alone"


def _direction(g, acc):
  """r = g / sqrt(G + g^2 + eps): Adagrad's, with this step's g^2 in G."""
  return g * tf.math.rsqrt(acc + g * g + EPS)


def cases(shape, n):
  """{name: a callable taking the gradients}, over shared weights."""
  rng = np.random.default_rng(0)
  ws = [tf.Variable(rng.normal(0, 0.02, shape).astype(np.float32))
        for _ in range(n)]
  accs = [tf.Variable(tf.fill(shape, 0.1)) for _ in range(n)]

  @tf.function(jit_compile=True, autograph=False)
  def adagrad(gs):
    for w, acc, g in zip(ws, accs, gs):
      acc.assign_add(g * g)
      w.assign_sub(LR * g * tf.math.rsqrt(acc + EPS))

  @tf.function(jit_compile=True, autograph=False)
  def reduction(gs):
    return [rules.clippy_scale(g, w, _direction(g, acc), LR)
            for w, acc, g in zip(ws, accs, gs)]

  @tf.function(jit_compile=True, autograph=False)
  def one_pass(gs):
    for w, acc, g in zip(ws, accs, gs):
      r = _direction(g, acc)
      old = tf.convert_to_tensor(w)
      sigma = rules.clippy_scale(g, old, r, LR)
      acc.assign_add(g * g)
      stepped = old - LR * r
      w.assign(tf.cond(sigma < 1.0,
                       lambda: stepped + LR * (1.0 - sigma) * r,
                       lambda: stepped))

  out = {ADAGRAD: adagrad, REDUCTION: reduction,
         "one pass: sigma = 1, corrected where < 1": one_pass}
  for rule in ("naive", "clippy"):
    opt = ScaledAdagrad(LR, clipping=rule, record_diagnostics=False,
                        fused_update=True, name=f"{rule}_adagrad")
    mine = [tf.Variable(w) for w in ws]
    opt.build(mine)

    def step(gs, opt=opt, mine=mine):
      opt.apply_gradients(zip(gs, mine))
    out[f"ScaledAdagrad {rule} (the trainer's fused update)"] = tf.function(
        step, autograph=False)
  return out


def main(argv):
  del argv
  shape = [int(s) for s in FLAGS.shape]
  n = FLAGS.variables
  grads = [tf.random.stateless_normal(shape, seed=[i, 1], stddev=1e-3)
           for i in range(n)]
  fns = cases(shape, n)
  times = {name: [] for name in fns}

  def call(fn):
    """fn(grads) to its end: its outputs read back (None: updates only)."""
    tf.nest.map_structure(lambda t: t.numpy() if tf.is_tensor(t) else t,
                          fn(grads))

  for fn in fns.values():  # compile
    call(fn)
  for i in range(FLAGS.calls):
    print(f"call {i + 1}/{FLAGS.calls}", flush=True)
    for name, fn in fns.items():
      start = time.perf_counter()
      call(fn)
      times[name].append(time.perf_counter() - start)
  ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
  base = ms[ADAGRAD]
  mib = n * int(np.prod(shape)) * 4 / 2**20
  lines = ["# Clippy's update against Adagrad's, pass by pass", "",
           report.machine(tf.__version__), "",
           f"Written by `python bench/update_passes.py` (one run): "
           f"{n} weights of {'x'.join(map(str, shape))} ({mib:.0f} MiB of "
           f"each of g, G, w), one XLA computation a call, alternated call "
           f"by call; median of {FLAGS.calls} calls.", "",
           "| update | ms | / Adagrad's |", "|---|---:|---:|"]
  lines += [f"| {name} | {v:.1f} | {v / base:.2f} |" for name, v in ms.items()]
  lines += ["", "Clippy's floor is Adagrad's pass plus the reduction's: "
            f"{base + ms[REDUCTION]:.1f} ms.",
            ""]
  report.write(FLAGS.output, "\n".join(lines),
               {"shape": shape, "variables": n, "ms": ms,
                "times_s": times})


if __name__ == "__main__":
  app.run(main)
