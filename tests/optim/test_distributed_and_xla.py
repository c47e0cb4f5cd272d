"""Two-replica MirroredStrategy and XLA give the same training as one device."""

import numpy as np
import pytest
import tensorflow as tf

from optim import build_optimizer
from optim.scaled_adagrad import ScaledAdagrad
from optim.scaled_adam import ScaledAdam
from tests import strategies

GLOBAL_BATCH, STEPS, VOCAB = 32, 15, 50
METHOD_ARGS = {"naive": {}, "gc": {"clip_norm": 0.05},
               "agc": {"clip_factor": 0.01}, "lamb": {"trust_coefficient": 0.1},
               "clippy": {}, "clippy_adam": {},
               # The newer rules, their state in slots (short warm-ups).
               "adagc": {"adagc_warmup_steps": 3, "adagc_lambda_abs": 0.05},
               "zclip": {"zclip_warmup_steps": 3, "zclip_z_thresh": 0.5},
               "stable_adam": {"stable_clip_threshold": 0.5},
               "spam": {"spike_threshold": 2.0, "spike_warmup_steps": 2}}


def _model():
  """An embedding (sparse gradients) feeding an MLP with two heads."""
  tf.keras.utils.set_random_seed(11)
  ids = tf.keras.Input((3,), dtype=tf.int32)
  dense = tf.keras.Input((6,))
  emb = tf.keras.layers.Embedding(VOCAB, 4)(ids)
  x = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(emb), dense])
  x = tf.keras.layers.Dense(16, activation="relu")(x)
  return tf.keras.Model([ids, dense], tf.keras.layers.Dense(2)(x))


def _dataset():
  rng = np.random.default_rng(0)
  n = GLOBAL_BATCH * STEPS
  ids = rng.integers(0, VOCAB, size=(n, 3)).astype(np.int32)
  dense = rng.normal(size=(n, 6)).astype(np.float32)
  labels = (rng.random((n, 2)) < 0.3).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices(
      ((ids, dense), labels)).batch(GLOBAL_BATCH)


def _train(strategy, method, jit_compile=False, fused_update=False,
           kept=None):
  with strategy.scope():
    model = _model()
    optimizer = build_optimizer(method, 0.5, **METHOD_ARGS[method])
    optimizer.fused_update = fused_update
  if kept is not None:
    kept.update(model=model, optimizer=optimizer)

  def replica_step(features, labels):
    with tf.GradientTape() as tape:
      per_example = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels, model(features)), axis=-1)
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=GLOBAL_BATCH)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  @tf.function(jit_compile=jit_compile)
  def step(features, labels):
    strategy.run(replica_step, args=(features, labels))

  sigmas = []
  for features, labels in strategy.experimental_distribute_dataset(
      _dataset()):
    step(features, labels)
    sigmas.append([float(d["sigma"])
                   for d in optimizer.diagnostics().values()])
  return [v.numpy() for v in model.trainable_variables], np.array(sigmas)


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_two_replicas_match_one_device(method):
  assert len(tf.config.list_logical_devices("CPU")) >= 2
  one_weights, one_sigmas = _train(tf.distribute.OneDeviceStrategy("/cpu:0"),
                                   method)
  two_weights, two_sigmas = _train(
      strategies.two_cpu_replicas(), method)
  # sigma comes from the all-reduced gradient: the same on both setups.
  np.testing.assert_allclose(two_sigmas, one_sigmas, rtol=1e-5, atol=1e-6)
  if method not in ("naive", "adam", "spam"):  # spam clips g, not sigma
    assert one_sigmas.min() < 1.0
  for a, b in zip(two_weights, one_weights):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_xla_step_matches_plain_step(method):
  strategy = tf.distribute.get_strategy()
  plain, _ = _train(strategy, method)
  compiled, _ = _train(strategy, method, jit_compile=True)
  # Unclipped Adam steps at rate 0.5 carry XLA's float32 reassociation
  # (plain Keras Adam itself ends 9e-6 apart here): a wider margin for the
  # Adam rules that leave most steps whole.
  atol = 1e-4 if method in ("spam", "stable_adam") else 1e-6
  for a, b in zip(compiled, plain):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_fused_update_matches_the_per_variable_updates(method):
  strategy = tf.distribute.get_strategy()
  plain, plain_sigmas = _train(strategy, method)
  kept = {}
  fused, fused_sigmas = _train(strategy, method, fused_update=True,
                               kept=kept)
  # One XLA computation updates every dense variable; the embedding's
  # sparse gradient (its row count changes every step) is updated apart.
  dense = [v for v in kept["model"].trainable_variables
           if "embedding" not in v.name]
  optimizer = kept["optimizer"]
  assert len(dense) == 4
  assert list(optimizer._fused.steps) == [tuple(  # pylint: disable=protected-access
      optimizer._var_key(v) for v in dense)]  # pylint: disable=protected-access
  np.testing.assert_allclose(fused_sigmas, plain_sigmas, rtol=1e-5,
                             atol=1e-6)
  atol = 1e-4 if method in ("spam", "stable_adam") else 1e-6
  for a, b in zip(fused, plain):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol)


def test_fused_update_leaves_mirrored_variables_to_tf_keras():
  kept = {}
  two, _ = _train(strategies.two_cpu_replicas(), "clippy",
                  fused_update=True, kept=kept)
  assert not kept["optimizer"]._fused.steps  # pylint: disable=protected-access
  one, _ = _train(tf.distribute.OneDeviceStrategy("/cpu:0"), "clippy")
  for a, b in zip(two, one):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: ScaledAdagrad(0.5, clipping="clippy", diagnostics_every=2),
    lambda: ScaledAdagrad(0.5, clipping="clippy", diagnostics_every=2,
                          accumulator_update="clipped"),
    lambda: ScaledAdagrad(0.5, clipping="gc", diagnostics_every=2,
                          clipping_params={"clip_norm": 0.5},
                          accumulator_update="delayed"),
    lambda: ScaledAdam(0.5, clipping="clippy", diagnostics_every=2),
], ids=["adagrad", "adagrad-clipped", "adagrad-delayed", "adam"])
def test_a_fused_update_stores_the_diagnostics_the_per_variable_one_does(
    make):
  """The fused update stores every variable's diagnostics under one
  conditional after the updates: the norms must still be those of the
  weight, accumulator and direction before each variable's update."""
  rng = np.random.default_rng(3)
  start = [rng.normal(size=(3, 4)), rng.normal(size=(4,))]
  grads = [[rng.normal(size=w.shape) * (i + 1) for w in start]
           for i in range(5)]
  diagnostics = {}
  for fused in (False, True):
    variables = [tf.Variable(w, dtype=tf.float32, name=f"w{j}")
                 for j, w in enumerate(start)]
    optimizer = make()
    optimizer.fused_update = fused
    step = tf.function(lambda g, o=optimizer, v=variables: o.apply_gradients(
        zip(g, v)))
    seen = []
    for g in grads:
      step([tf.constant(x, tf.float32) for x in g])
      seen.append([d.numpy() for d in optimizer._diagnostics])  # pylint: disable=protected-access
    diagnostics[fused] = np.array(seen)
    assert bool(optimizer._fused.steps) == fused  # pylint: disable=protected-access
  # Refreshed on steps 2 and 4 (grad norm, ratios), sigma on every step.
  assert np.all(diagnostics[True][1:, :, 1] > 0)
  np.testing.assert_allclose(diagnostics[True], diagnostics[False],
                             rtol=1e-5, atol=1e-6)
