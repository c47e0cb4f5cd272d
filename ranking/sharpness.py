"""Sharpness: the top Hessian eigenvalue of the training loss, beside 2/eta.

Tang et al. 2023 (arXiv 2302.09178), section 3.2: a run diverges when the
step is too large for the loss's curvature. Gradient descent with rate eta
on a quadratic of Hessian H is stable iff eta * lambda_max(H) < 2 (Cohen et
al. 2021, "the edge of stability": lambda_max = 2/eta). Adagrad's step,
w <- w - eta sigma D g with D = diag(1 / sqrt(G + eps)) (optim/
scaled_adagrad.py), is gradient descent on the preconditioned Hessian D H,
whose eigenvalues are those of the symmetric D^1/2 H D^1/2; its edge is
lambda_max(D^1/2 H D^1/2) = 2/eta. At the start of a run (the initial
weights, step 0) and every `every_steps` steps this monitor logs, over the
dense parameters (model.dense_variables; not embeddings):

  sharpness/hessian                  top eigenvalue of H
  sharpness/preconditioned           top eigenvalue of D^1/2 H D^1/2
  sharpness/two_over_eta             2 / the dense optimizer's current rate
                                     (a rollback may have scaled it)
  sharpness/{hessian,preconditioned}_iterations   power iterations run
  sharpness/{hessian,preconditioned}_change       relative change of the
                                     eigenvalue in the last iteration (inf
                                     after one iteration): converged < tol
  sharpness/seconds                  the measurement's wall time

by power iteration on Hessian-vector products (double backprop), from a
random unit vector seeded by (seed, step). Power iteration finds the
eigenvalue of largest MAGNITUDE: early in training, negative curvature can
win, and the signed Rayleigh quotient v^T H v is what is reported (negative
then). The sigma of a clipping rule is left out of D: the point is whether
the unclipped step is past the edge (clipping then shrinks it). D is the
accumulator at the measurement (see ScaledAdagrad.preconditioner). Only
Adagrad has it: Adam's update also has momentum, whose edge is not 2/eta
(it is (2 + 2 beta_1) / ((1 - beta_1) eta), Cohen et al. 2022), so for
ScaledAdam `preconditioned` is not logged.

The loss is the trainer's (MultitaskRanker.training_loss, training mode)
on a fixed probe batch: `batch_size` examples of the held-out evaluation
day, drawn uniformly (with replacement) by a stateless generator seeded
with `seed`. So it is the same batch at every measurement and after a
resume (a function of the data and the config, not stored state), and the
training stream is not read. The evaluation day rather than the first
training batch: it comes after every shift of the stream (new items,
rescaled dense features), so it has the distribution a run trains on after
the last shift (days 3-10 of the CPU Table 2 run's 0-10), while day 0
stops being one at the first shift (a day-0 batch would probe inputs the
model no longer sees).

Measuring reads the weights and slots and writes nothing: a run with the
monitor on trains bit-identically to one without. It runs on the host at
loop boundaries, on this process's copy of the variables (the trainer calls
it outside the strategy's scope, where a mirrored variable reads as its
local copy), so it needs no collective; the trainer measures on the chief
only, which writes.
"""

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gin
import tensorflow as tf

from optim import ScaledAdagrad

Vectors = List[tf.Tensor]
_BATCH_SALT, _START_SALT = 1, 2


def _dot(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> tf.Tensor:
  return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def hessian_vector_product(loss_fn: Callable[[], tf.Tensor],
                           variables: Sequence[tf.Variable],
                           vectors: Sequence[tf.Tensor]) -> Vectors:
  """H v of loss_fn() over `variables` (v: one tensor per variable), by
  double backprop: the gradient of <grad loss, v>."""
  with tf.GradientTape() as outer:
    with tf.GradientTape() as inner:
      loss = loss_fn()
    grads = inner.gradient(loss, variables,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    inner_product = _dot(grads, vectors)
  return outer.gradient(inner_product, variables,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)


def random_unit(shapes: Sequence[tf.TensorShape], dtype, seed) -> Vectors:
  """A unit vector (over all the pieces together) of standard normals,
  drawn by a stateless generator from `seed` (shape [2] integers)."""
  pieces = [tf.random.stateless_normal(
      shape, tf.random.experimental.stateless_fold_in(seed, i), dtype=dtype)
            for i, shape in enumerate(shapes)]
  norm = tf.sqrt(_dot(pieces, pieces))
  return [p / norm for p in pieces]


def power_iteration(matvec: Callable[[Vectors], Vectors], start: Vectors,
                    iterations: int = 20, tolerance: float = 1e-3
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The eigenvalue of largest magnitude of a symmetric operator.

  Iterates v <- A v / ||A v|| from the unit vector `start`, at most
  `iterations` times, stopping once the Rayleigh quotient v^T A v changes by
  less than `tolerance` relative to its value.

  Returns:
    (the signed Rayleigh quotient of the last iterate, the iterations run,
    the last relative change: inf after a single iteration).
  """
  dtype = start[0].dtype
  inf = tf.constant(float("inf"), dtype)

  def body(i, v, value, change):
    av = matvec(v)
    new = _dot(v, av)
    change = tf.where(i > 0, tf.abs(new - value) / tf.maximum(
        tf.abs(new), tf.constant(1e-30, dtype)), inf)
    norm = tf.sqrt(_dot(av, av))
    # A v = 0: v is an eigenvector of eigenvalue 0; keep it.
    v = [tf.where(norm > 0, x / tf.where(norm > 0, norm, 1), y)
         for x, y in zip(av, v)]
    return i + 1, v, new, change

  def cond(i, v, value, change):  # pylint: disable=unused-argument
    return (i < iterations) & ~(change < tolerance)

  count, _, value, change = tf.while_loop(
      cond, body, (tf.constant(0), list(start), tf.zeros([], dtype), inf))
  return value, count, change


def preconditioned(matvec: Callable[[Vectors], Vectors],
                   preconditioner: Sequence[tf.Tensor]
                   ) -> Callable[[Vectors], Vectors]:
  """v -> D^1/2 A D^1/2 v, the symmetric form of D A, D diagonal (one
  tensor of its entries per variable)."""
  roots = [tf.sqrt(d) for d in preconditioner]

  def product(v):
    return [r * x for r, x in zip(roots, matvec(
        [r * y for r, y in zip(roots, v)]))]

  return product


@gin.configurable(denylist=["model", "optimizer", "window"])
class SharpnessMonitor:
  """Top eigenvalues of the (preconditioned) Hessian every K steps; see the
  module doc."""

  def __init__(self, model, optimizer, window, every_steps: int = 0,
               iterations: int = 20, tolerance: float = 1e-3,
               batch_size: Optional[int] = None, seed: int = 0):
    """Args:
      model: a MultitaskRanker (training_loss, dense_variables).
      optimizer: the dense variables' optimizer (preconditioned: Adagrad).
      window: the run's MovingWindow (the evaluation day, the batch size).
      every_steps: K, measure the initial weights (step 0) and at the
        first loop boundary at or after each multiple of K (0: never).
      iterations: at most this many power iterations per eigenvalue.
      tolerance: stop once the eigenvalue's relative change is below it
        (0: always run `iterations`).
      batch_size: examples of the probe batch (None: the training batch).
      seed: of the probe batch and of the start vectors.

    Raises:
      ValueError: a binding out of range, named.
    """
    for name, value, least in (("every_steps", every_steps, 0),
                               ("iterations", iterations, 1),
                               ("batch_size", batch_size, 1)):
      if value is not None and not (isinstance(value, int) and
                                    value >= least):
        raise ValueError(f"SharpnessMonitor.{name} must be an integer >= "
                         f"{least}" + (" (0: off)" if least == 0 else "")
                         + f", got {value!r}.")
    if not tolerance >= 0:
      raise ValueError("SharpnessMonitor.tolerance must be >= 0, got "
                       f"{tolerance!r}.")
    self.model, self.optimizer, self.window = model, optimizer, window
    self.every_steps, self.iterations = every_steps, iterations
    self.tolerance, self.seed = float(tolerance), seed
    self.batch_size = batch_size or window.batch_size
    self._batch = None
    self._measure = tf.function(self._eigenvalues)

  @property
  def enabled(self) -> bool:
    return self.every_steps > 0

  def due(self, before: int, after: int) -> bool:
    """Whether the steps (before, after] cross a multiple of every_steps."""
    return self.enabled and after // self.every_steps > (
        before // self.every_steps)

  def probe_batch(self) -> Dict[str, tf.Tensor]:
    """The fixed batch: `batch_size` examples of the evaluation day."""
    if self._batch is None:
      offsets = self.window.source.day_offsets
      day = self.window.eval_day
      ids = tf.random.stateless_uniform(
          [self.batch_size], seed=[self.seed, _BATCH_SALT],
          minval=int(offsets[day]), maxval=int(offsets[day + 1]),
          dtype=tf.int64)
      self._batch = self.window.source.rows(ids)
    return self._batch

  def loss(self, batch) -> tf.Tensor:
    """The trainer's total loss on `batch`, as the mean over it."""
    return self.model.training_loss(batch, self.batch_size)[0]

  def _eigenvalues(self, batch, step):
    variables = self.model.dense_variables

    def hvp(v):
      return hessian_vector_product(lambda: self.loss(batch), variables, v)

    def top(matvec, salt):
      seed = tf.random.experimental.stateless_fold_in(
          tf.constant([self.seed, salt], tf.int64), step)
      start = random_unit([v.shape for v in variables], variables[0].dtype,
                          seed)
      return power_iteration(matvec, start, self.iterations, self.tolerance)

    out = {"hessian": top(hvp, _START_SALT)}
    if isinstance(self.optimizer, ScaledAdagrad):
      d = [self.optimizer.preconditioner(v) for v in variables]
      out["preconditioned"] = top(preconditioned(hvp, d), _START_SALT + 1)
    return out

  def measure(self, step: int,
              log: Optional[Callable[[str], None]] = None
              ) -> Dict[str, float]:
    """The scalars of one measurement at `step` (names in the module doc);
    a line to `log` if given."""
    start = time.perf_counter()
    found = self._measure(self.probe_batch(), tf.constant(step, tf.int64))
    scalars = {}
    for name, (value, count, change) in found.items():
      scalars[name] = float(value)
      scalars[f"{name}_iterations"] = int(count)
      scalars[f"{name}_change"] = float(change)
    rate = float(tf.convert_to_tensor(self.optimizer.learning_rate))
    scalars["two_over_eta"] = 2.0 / rate
    scalars["seconds"] = time.perf_counter() - start
    if log is not None:
      shown = "".join(f", {k} {scalars[k]:.4g}" for k in ("preconditioned",)
                      if k in scalars)
      log(f"sharpness at step {step}: hessian {scalars['hessian']:.4g}"
          f"{shown} (2/eta {scalars['two_over_eta']:.4g}; "
          f"{scalars['seconds']:.1f} s)")
    return {f"sharpness/{k}": v for k, v in scalars.items()}
