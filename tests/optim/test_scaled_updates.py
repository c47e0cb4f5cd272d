"""Every rule and the whole update against the numpy reference, 50+ steps."""

import numpy as np
import pytest
import tensorflow as tf

from optim import ScaledAdagrad, ScaledAdam
from tests.optim import numpy_reference as ref

CASES = [
    ("naive", {}),
    ("gc", {"clip_norm": 10.0}),
    ("agc", {"clip_factor": 2.0, "eps": 1e-3, "unitwise": False}),
    ("agc", {"clip_factor": 2.0, "eps": 1e-3, "unitwise": True}),
    ("lamb", {"trust_coefficient": 0.05}),
    ("clippy", {"lambda_rel": 0.5, "lambda_abs": 0.1}),
    # The newer rules that remember (their state in a slot per variable),
    # with warm-ups short enough for both phases to run.
    ("adagc", {"lambda_rel": 1.05, "lambda_abs": 4.0, "beta": 0.9,
               "warmup_steps": 10}),
    ("zclip", {"z_thresh": 2.0, "alpha": 0.9, "warmup_steps": 8}),
]
IDS = [f"{m}-unitwise" if p.get("unitwise") else m for m, p in CASES]
STEPS = 60


def _gradient(rng, shape):
  """Mostly N(0, 1), with occasional 30x spikes so clipping both acts and
  rests."""
  g = rng.normal(size=shape)
  if rng.random() < 0.3:
    g *= 30.0
  return g


# A changing eta_t: a schedule over a float32 table, so numpy sees exactly
# the values Keras (which keeps learning rates in float32) applies.
_LR_TABLE = (0.3 * (1.0 + 0.5 * np.sin(np.arange(STEPS)))).astype(np.float32)


class _TableSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):

  def __call__(self, step):
    return tf.gather(tf.constant(_LR_TABLE), step)

  def get_config(self):
    return {}


def _lr(step):
  return float(_LR_TABLE[step])


def _f32(x):
  """A constant learning rate as Keras applies it (stored in float32)."""
  return float(np.float32(x))


def _check_sigmas(method, sigmas):
  sigmas = np.concatenate([np.ravel(s) for s in sigmas])
  if method in ("gc", "agc", "clippy", "adagc", "zclip"):
    # The test only means something if the rule both clipped and did not.
    assert (sigmas < 1).any() and (sigmas == 1).any(), sigmas
  if method == "lamb":
    assert (sigmas != 1).any()


@pytest.mark.parametrize("mode", ["standard", "clipped", "delayed"])
@pytest.mark.parametrize("method,params", CASES, ids=IDS)
def test_dense_adagrad_matches_numpy(method, params, mode):
  rng = np.random.default_rng(0)
  init = {"kernel": rng.normal(size=(6, 5)) * 0.3, "bias": np.zeros(5)}
  tf_vars = {k: tf.Variable(v, dtype=tf.float64, name=k)
             for k, v in init.items()}
  refs = {k: ref.AdagradReference(v, method, params, mode=mode)
          for k, v in init.items()}
  opt = ScaledAdagrad(learning_rate=_TableSchedule(), clipping=method,
                      clipping_params=params, accumulator_update=mode)
  sigmas = []
  for step in range(STEPS):
    grads = {k: _gradient(rng, v.shape) for k, v in init.items()}
    opt.apply_gradients([(tf.constant(grads[k]), tf_vars[k]) for k in init])
    diag = opt.diagnostics()
    for k in init:
      sigma = refs[k].step(grads[k], _lr(step))
      sigmas.append(sigma)
      np.testing.assert_allclose(
          diag[tf_vars[k].name]["sigma"].numpy(), np.min(sigma), rtol=1e-6)
      np.testing.assert_allclose(tf_vars[k].numpy(), refs[k].w, rtol=1e-6,
                                 atol=1e-9)
  _check_sigmas(method, sigmas)


@pytest.mark.parametrize("method,params", CASES, ids=IDS)
def test_sparse_adagrad_matches_numpy(method, params):
  rng = np.random.default_rng(1)
  rows, dim = 12, 4
  init = rng.normal(size=(rows, dim)) * 0.3
  var = tf.Variable(init, dtype=tf.float64)
  reference = ref.AdagradReference(init, method, params)
  opt = ScaledAdagrad(learning_rate=0.3, clipping=method,
                      clipping_params=params)
  sigmas = []
  for _ in range(STEPS):
    indices = rng.integers(0, rows, size=7)  # duplicates included
    values = 0.2 * _gradient(rng, (7, dim))
    opt.apply_gradients([(tf.IndexedSlices(
        tf.constant(values), tf.constant(indices),
        tf.constant([rows, dim], tf.int64)), var)])
    # The reference sums duplicates and sees the touched rows in the order
    # they first appear (what tf.unique yields).
    unique = list(dict.fromkeys(indices.tolist()))
    summed = ref.dense_from_slices(values, indices, rows)[unique]
    sigmas.append(reference.step(summed, _f32(0.3), rows=unique))
    np.testing.assert_allclose(var.numpy(), reference.w, rtol=1e-6, atol=1e-9)
  _check_sigmas(method, sigmas)


@pytest.mark.parametrize("method,params", [CASES[0], CASES[5]],
                         ids=["adam", "clippy_adam"])
def test_adam_matches_numpy(method, params):
  rng = np.random.default_rng(2)
  init = rng.normal(size=(5, 3)) * 0.3
  var = tf.Variable(init, dtype=tf.float64)
  reference = ref.AdamReference(init, method, params)
  opt = ScaledAdam(learning_rate=0.2, clipping=method, clipping_params=params)
  sigmas = []
  for _ in range(STEPS):
    g = _gradient(rng, init.shape)
    opt.apply_gradients([(tf.constant(g), var)])
    sigmas.append(reference.step(g, _f32(0.2)))
    np.testing.assert_allclose(var.numpy(), reference.w, rtol=1e-6, atol=1e-9)
  _check_sigmas(method, sigmas)


def test_naive_adam_equals_keras_adam():
  rng = np.random.default_rng(3)
  init = rng.normal(size=(4, 3))  # float64: compare formulas, not rounding
  ours, theirs = tf.Variable(init), tf.Variable(init)
  # Keras rounds beta and epsilon through float32 even for float64
  # variables; these values are exact in float32, so only formulas differ.
  hparams = dict(learning_rate=2.0**-7, beta_1=0.875, beta_2=1 - 2.0**-9,
                 epsilon=2.0**-20)
  opt_ours = ScaledAdam(clipping="naive", **hparams)
  opt_keras = tf.keras.optimizers.Adam(**hparams)
  for _ in range(50):
    g = tf.constant(rng.normal(size=init.shape))
    opt_ours.apply_gradients([(g, ours)])
    opt_keras.apply_gradients([(g, theirs)])
  np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_sparse_adam_equals_dense_adam():
  rng = np.random.default_rng(4)
  init = rng.normal(size=(8, 3))
  sparse_var, dense_var = tf.Variable(init), tf.Variable(init)
  opt_s, opt_d = ScaledAdam(0.1), ScaledAdam(0.1)
  for _ in range(20):
    idx = rng.integers(0, 8, size=4)
    vals = rng.normal(size=(4, 3))
    opt_s.apply_gradients([(tf.IndexedSlices(
        tf.constant(vals), tf.constant(idx), tf.constant([8, 3])), sparse_var)])
    opt_d.apply_gradients([(tf.constant(ref.dense_from_slices(vals, idx, 8)),
                            dense_var)])
  np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-9)


@pytest.mark.parametrize("mode", ["standard", "clipped", "delayed"])
def test_preconditioner_is_the_denominator_of_the_step(mode):
  # Naive (sigma = 1): the step is -eta D g, with D from the accumulator
  # before the step ("clipped", "delayed") or after it adds g^2 ("standard").
  rng = np.random.default_rng(3)
  w = tf.Variable(rng.normal(size=(4, 3)))
  opt = ScaledAdagrad(learning_rate=0.1, accumulator_update=mode)
  opt.apply_gradients([(tf.constant(rng.normal(size=(4, 3))), w)])
  before = opt.preconditioner(w).numpy()
  g = rng.normal(size=(4, 3)) * 10.0
  start = w.numpy()
  opt.apply_gradients([(tf.constant(g), w)])
  d = opt.preconditioner(w).numpy() if mode == "standard" else before
  np.testing.assert_allclose(w.numpy() - start, -_f32(0.1) * d * g,
                             rtol=1e-12)
  assert not np.allclose(before, opt.preconditioner(w).numpy())


@pytest.mark.parametrize("make", [ScaledAdagrad, ScaledAdam])
def test_no_weight_decay_pass_unless_asked(make):
  # tf-keras's default weight_decay=0 would run var -= var * 0 * lr over the
  # whole table every step: an untouched row holding inf would become NaN.
  table = tf.Variable([[1.0, 2.0], [np.inf, -3.0], [4.0, 5.0]])
  optimizer = make(0.1)
  assert optimizer.weight_decay is None
  optimizer.apply_gradients([(tf.IndexedSlices(
      tf.constant([[1.0, 1.0]]), tf.constant([0]), tf.constant([3, 2])),
                              table)])
  got = table.numpy()
  np.testing.assert_array_equal(got[1:], [[np.inf, -3.0], [4.0, 5.0]])
  assert np.all(got[0] < [1.0, 2.0])
  # Asked for, the decay is the base class's: w <- w - lr * wd * w first.
  var = tf.Variable([2.0, -4.0])
  decayed = make(0.1, clipping="naive", weight_decay=0.5)
  twin = tf.Variable([2.0, -4.0])
  make(0.1).apply_gradients([(tf.zeros(2), twin)])
  decayed.apply_gradients([(tf.zeros(2), var)])
  np.testing.assert_allclose(var.numpy(), twin.numpy() * (1 - 0.1 * 0.5),
                             rtol=1e-6)
