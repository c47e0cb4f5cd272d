"""Our Clippy equals TFRS's reference ClippyAdagrad, and keeps its promise."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from optim import ScaledAdagrad

LAMBDA_REL, LAMBDA_ABS, LR = 0.5, 1e-2, 0.5


def _mlp(seed, dtype="float32"):
  tf.keras.utils.set_random_seed(seed)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(32, activation="relu", dtype=dtype),
      tf.keras.layers.Dense(16, activation="relu", dtype=dtype),
      tf.keras.layers.Dense(1, dtype=dtype),
  ])
  model.build((None, 10))
  return model


def _data(steps, seed=7, dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(steps, 64, 10))
  y = (x[..., :1] * x[..., 1:2] + rng.normal(size=(steps, 64, 1)) > 0)
  return x.astype(dtype), y.astype(dtype)


def _train(model, optimizer, x, y, after_step=None, eager=False):
  loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)

  def step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, model(xb))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  if not eager:
    step = tf.function(step)
  for i in range(len(x)):
    before = [v.numpy() for v in model.trainable_variables]
    step(x[i], y[i])
    if after_step:
      after_step(before, [v.numpy() for v in model.trainable_variables])


@pytest.mark.parametrize("ours_mode,tfrs_kwargs", [
    ("standard", {"use_standard_accumulator_update": True}),
    ("clipped", {"clip_accumulator_update": True}),
    ("delayed", {}),
])
def test_matches_tfrs_clippy_adagrad_for_200_steps(ours_mode, tfrs_kwargs):
  """In float64: at this learning rate training amplifies rounding (TFRS
  against itself with weights perturbed by 1e-7 ends far apart in float32),
  so only float64 tells a formula difference from a different op order.
  Eager, because TFRS's ClippyAdagrad cannot trace in float64 (its
  tf.where(tensor == 0., 1., ...) makes the 1. float32)."""
  x, y = _data(200, dtype=np.float64)
  ours_model, ref_model = _mlp(1, "float64"), _mlp(1, "float64")
  ours = ScaledAdagrad(
      learning_rate=LR, clipping="clippy",
      clipping_params={"lambda_rel": LAMBDA_REL, "lambda_abs": LAMBDA_ABS},
      initial_accumulator_value=0.1, epsilon=1e-7,
      accumulator_update=ours_mode)
  reference = tfrs.experimental.optimizers.ClippyAdagrad(
      learning_rate=LR, initial_accumulator_value=0.1,
      variable_relative_threshold=LAMBDA_REL,
      accumulator_relative_threshold=0.0, absolute_threshold=LAMBDA_ABS,
      epsilon=1e-7, export_clipping_factors=True, **tfrs_kwargs)
  factors = []
  _train(ours_model, ours, x, y, eager=True)
  _train(ref_model, reference, x, y, eager=True,
         after_step=lambda *_: factors.append(
             [f.numpy() for f in reference.clipping_factors]))
  # Clipping must have been active for the comparison to mean anything.
  assert np.min(factors) < 0.5
  for a, b in zip(ours_model.trainable_variables,
                  ref_model.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9,
                               err_msg=a.name)


def test_every_clippy_update_respects_its_bound():
  """|dw_i| <= lambda_rel*|w_i| + lambda_abs on every element and step,
  zero-initialised biases included, at a learning rate that clips hard."""
  x, y = _data(60, seed=3)
  model = _mlp(2)
  assert not np.any(model.trainable_variables[1].numpy())  # a zero bias
  optimizer = ScaledAdagrad(learning_rate=5.0, clipping="clippy")
  clipped = []

  def check(before, after):
    for w0, w1 in zip(before, after):
      bound = 0.5 * np.abs(w0) + 1e-2
      assert np.all(np.abs(w1 - w0) <= bound * (1 + 1e-5) + 1e-7)
    clipped.append(min(float(d["sigma"])
                       for d in optimizer.diagnostics().values()))

  _train(model, optimizer, x, y, after_step=check)
  assert min(clipped) < 0.1  # the bound was what held the update back


def test_gc_leaves_small_gradients_alone():
  rng = np.random.default_rng(0)
  init = rng.normal(size=(5, 4))
  gc_var, naive_var = tf.Variable(init), tf.Variable(init)
  gc = ScaledAdagrad(0.1, clipping="gc", clipping_params={"clip_norm": 1.0})
  naive = ScaledAdagrad(0.1)
  for _ in range(20):
    g = rng.normal(size=init.shape)
    g *= 0.99 / np.linalg.norm(g)  # ||g|| < lambda
    gc.apply_gradients([(tf.constant(g), gc_var)])
    naive.apply_gradients([(tf.constant(g), naive_var)])
    assert float(gc.diagnostics()[gc_var.name]["sigma"]) == 1.0
  np.testing.assert_array_equal(gc_var.numpy(), naive_var.numpy())


@pytest.mark.parametrize("clipping,params", [
    ("naive", {}), ("gc", {"clip_norm": 1e-2}),
    ("agc", {"clip_factor": 1e-3}),
    ("agc", {"clip_factor": 1e-3, "unitwise": True}),
    ("clippy", {}),
])
def test_sigma_is_in_zero_one(clipping, params):
  x, y = _data(30, seed=5)
  model = _mlp(3)
  optimizer = ScaledAdagrad(1.0, clipping=clipping, clipping_params=params)
  sigmas = []
  _train(model, optimizer, x, y, after_step=lambda *_: sigmas.extend(
      float(d["sigma"]) for d in optimizer.diagnostics().values()))
  assert all(0.0 < s <= 1.0 for s in sigmas), (min(sigmas), max(sigmas))
  if clipping != "naive":
    assert min(sigmas) < 1.0


def test_diagnostics_are_computed_by_hand():
  var = tf.Variable([[3.0, -4.0], [0.0, 1.0]], name="w")
  grad = tf.constant([[1.0, 2.0], [2.0, 0.0]])
  optimizer = ScaledAdagrad(1.0, clipping="gc",
                            clipping_params={"clip_norm": 1.5},
                            initial_accumulator_value=0.0, epsilon=1e-30)
  optimizer.apply_gradients([(grad, var)])
  d = {k: float(v) for k, v in optimizer.diagnostics()["w:0"].items()}
  # ||g|| = 3, ||w|| = sqrt(26); r = g/|g| elementwise = [[1, 1], [1, 0]];
  # |r/w| over w != 0: 1/3, 1/4, (w=0 left out), 0/1 -> max 1/3.
  assert d["sigma"] == pytest.approx(0.5)
  assert d["grad_norm"] == pytest.approx(3.0)
  assert d["grad_to_weight_norm"] == pytest.approx(3.0 / np.sqrt(26.0))
  assert d["max_direction_to_weight"] == pytest.approx(1.0 / 3.0)
  np.testing.assert_allclose(var.numpy(), [[2.5, -4.5], [-0.5, 1.0]])


def test_norms_are_refreshed_every_n_steps_and_sigma_every_step():
  var = tf.Variable([[1.0, -2.0], [0.5, 3.0]], name="w")
  every = ScaledAdagrad(0.5, clipping="gc", clipping_params={"clip_norm": 1.0},
                        diagnostics_every=3)
  always = ScaledAdagrad(0.5, clipping="gc", clipping_params={"clip_norm": 1.0})
  twin = tf.Variable(var.numpy(), name="w")
  step = tf.function(lambda g: every.apply_gradients([(g, var)]))
  rng = np.random.default_rng(0)
  for i in range(7):
    g = tf.constant(rng.normal(size=(2, 2)) * (i + 1), tf.float32)
    step(g)
    always.apply_gradients([(g, twin)])
    got = every.diagnostics()["w:0"]
    want = always.diagnostics()["w:0"]
    assert float(got["sigma"]) == pytest.approx(float(want["sigma"]))
    if (i + 1) % 3 == 0:  # the step that makes iterations a multiple of 3
      last_refresh = {k: float(v) for k, v in want.items()}
    for key in ("grad_norm", "grad_to_weight_norm", "max_direction_to_weight"):
      if i < 2:  # not computed yet
        assert float(got[key]) == 0.0, (i, key)
      else:
        assert float(got[key]) == pytest.approx(last_refresh[key]), (i, key)
