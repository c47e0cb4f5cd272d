"""The sharpness monitor: power iteration against numpy's eigvalsh, the
ranking model's Hessian against finite differences and a dense Hessian, two
replicas, and the trainer: scalars at the expected steps, 2/eta, and
training bit-identical to a run without the monitor."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import SyntheticStream
from data.window import MovingWindow
from optim import ScaledAdagrad, build_optimizer
from ranking import integrity
from ranking import sharpness as sh
from ranking.model import build_model
from tests import strategies
from tests.runs import train

SEED = tf.constant([0, 1], tf.int64)


def _top_magnitude(matrix):
  values = np.linalg.eigvalsh(matrix)
  return values[np.argmax(np.abs(values))]


# -- power iteration, against numpy ------------------------------------------


def _logistic_regression():
  """A loss of w whose Hessian is X^T diag(p (1 - p)) X / n."""
  rng = np.random.default_rng(0)
  n = 200
  x = rng.normal(size=(n, 6)) * np.array([3.0, 1.5, 1.0, 1.0, 0.5, 0.2])
  y = (rng.random(n) < 0.4).astype(float)
  w = tf.Variable(rng.normal(size=6) * 0.3)

  def loss():
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        tf.constant(y), tf.linalg.matvec(tf.constant(x), w)))

  p = 1 / (1 + np.exp(-x @ w.numpy()))
  return loss, w, x.T @ np.diag(p * (1 - p)) @ x / n


def test_power_iteration_finds_the_top_eigenvalue_of_logistic_regression():
  loss, w, hessian = _logistic_regression()
  top = np.linalg.eigvalsh(hessian)[-1]
  start = sh.random_unit([w.shape], tf.float64, SEED)
  assert float(sh._dot(start, start)) == pytest.approx(1.0)

  def matvec(v):
    return sh.hessian_vector_product(loss, [w], v)

  value, count, change = sh.power_iteration(matvec, start, 500, 1e-12)
  assert float(value) == pytest.approx(top, rel=1e-9)
  assert int(count) < 500 and float(change) < 1e-12
  # The defaults (20 iterations, tolerance 1e-3) stop early, within 1e-3.
  value, count, change = sh.power_iteration(matvec, start)
  assert float(value) == pytest.approx(top, rel=1e-3)
  assert 1 < int(count) < 20 and float(change) < 1e-3
  # One iteration: the Rayleigh quotient of the start, no change yet.
  value, count, change = sh.power_iteration(matvec, start, 1)
  v = start[0].numpy()
  assert float(value) == pytest.approx(v @ hessian @ v, rel=1e-9)
  assert int(count) == 1 and float(change) == np.inf


def test_negative_curvature_larger_in_magnitude_wins_and_keeps_its_sign():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  a = q @ np.diag([-5.0, 1.0, 3.0, 0.5]) @ q.T
  w = tf.Variable(rng.normal(size=4))

  def loss():  # 0.5 w^T A w: Hessian A
    return 0.5 * tf.reduce_sum(w * tf.linalg.matvec(tf.constant(a), w))

  value, _, _ = sh.power_iteration(
      lambda v: sh.hessian_vector_product(loss, [w], v),
      sh.random_unit([w.shape], tf.float64, SEED), 500, 1e-12)
  assert float(value) == pytest.approx(-5.0, rel=1e-9)


def test_preconditioned_eigenvalue_is_that_of_adagrads_d_times_h():
  # Least squares, mean (x w - y)^2: H = 2 X^T X / n, whatever w is.
  rng = np.random.default_rng(2)
  x = rng.normal(size=(100, 5)) * np.array([2.0, 1.0, 1.0, 0.5, 0.1])
  y = rng.normal(size=100)
  w = tf.Variable(rng.normal(size=5))
  hessian = 2 * x.T @ x / 100

  def loss():
    return tf.reduce_mean(tf.square(tf.linalg.matvec(tf.constant(x), w) - y))

  # Two Adagrad steps of given gradients: G = 0.1 + g1^2 + g2^2, and the
  # step's denominator is sqrt(G + eps) (eps 1e-7).
  grads = [np.array([3.0, 0.1, 1.0, 0.01, 2.0]),
           np.array([-1.0, 0.2, 0.0, 0.01, 5.0])]
  optimizer = ScaledAdagrad(learning_rate=1e-3)
  for g in grads:
    optimizer.apply_gradients([(tf.constant(g), w)])
  d = 1 / np.sqrt(0.1 + sum(g**2 for g in grads) + 1e-7)
  np.testing.assert_allclose(optimizer.preconditioner(w), d, rtol=1e-12)
  root = np.diag(np.sqrt(d))
  expected = np.linalg.eigvalsh(root @ hessian @ root)[-1]
  # ... which is the top eigenvalue of D H, a non-symmetric matrix.
  assert np.max(np.linalg.eigvals(np.diag(d) @ hessian).real) == (
      pytest.approx(expected, rel=1e-9))
  matvec = sh.preconditioned(
      lambda v: sh.hessian_vector_product(loss, [w], v),
      [optimizer.preconditioner(w)])
  value, _, _ = sh.power_iteration(
      matvec, sh.random_unit([w.shape], tf.float64, SEED), 1000, 1e-13)
  assert float(value) == pytest.approx(expected, rel=1e-6)
  assert not float(value) == pytest.approx(
      np.linalg.eigvalsh(hessian)[-1], rel=0.1)  # D matters here


# -- on the ranking model --------------------------------------------------------


def test_hvp_of_the_ranking_model_matches_finite_differences():
  """configs/tiny.gin's Small model (32x2, embeddings of 16) on the
  synthetic schema, in float64: H v against (g(w + e v) - g(w - e v)) / 2e
  over the dense variables."""
  tf.keras.backend.set_floatx("float64")
  try:
    stream = SyntheticStream(num_days=2, examples_per_day=64)
    tf.keras.utils.set_random_seed(0)
    model = build_model(stream.schema, embedding_dim=16,
                        bottom_widths=(32, 32))
    batch = stream.rows(tf.range(16, dtype=tf.int64))
    model(batch)
    variables = model.dense_variables
    assert 1000 < sum(int(tf.size(v)) for v in variables) < 20000

    def loss():
      return model.training_loss(batch, 16)[0]

    def gradient():
      with tf.GradientTape() as tape:
        value = loss()
      return tape.gradient(value, variables)

    v = sh.random_unit([x.shape for x in variables], tf.float64, SEED)
    hv = sh.hessian_vector_product(loss, variables, v)
    eps = 1e-5
    weights = [x.numpy() for x in variables]
    for x, w, d in zip(variables, weights, v):
      x.assign(w + eps * d)
    plus = gradient()
    for x, w, d in zip(variables, weights, v):
      x.assign(w - eps * d)
    minus = gradient()
    for x, w in zip(variables, weights):
      x.assign(w)
    flat = np.concatenate([h.numpy().ravel() for h in hv])
    reference = np.concatenate([((p - m) / (2 * eps)).numpy().ravel()
                                for p, m in zip(plus, minus)])
    assert np.linalg.norm(reference) > 1.0
    np.testing.assert_allclose(flat, reference, rtol=0,
                               atol=1e-6 * np.linalg.norm(reference))
  finally:
    tf.keras.backend.set_floatx("float32")


def _small_run(strategy=None, **monitor):
  """A ranker of 134 dense parameters on a small synthetic schema, an
  Adagrad trained for 3 steps (so its accumulator is uneven), and a
  monitor."""
  stream = SyntheticStream(num_days=3, examples_per_day=500,
                           num_categorical=0, dense_dim=8)
  window = MovingWindow(stream, batch_size=32, window_days=1)
  strategy = strategy or tf.distribute.get_strategy()
  tf.keras.utils.set_random_seed(0)
  with strategy.scope():
    model = build_model(stream.schema, tasks=("click", "watch_time"),
                        embedding_dim=2, bottom_widths=(4,))
    model(stream.rows(tf.range(2, dtype=tf.int64)))
    optimizer = build_optimizer("naive", 0.05, record_diagnostics=False)
    optimizer.build(model.dense_variables)
  monitor = sh.SharpnessMonitor(model, optimizer, window, **monitor)
  return stream, window, model, optimizer, monitor


def _train_three_steps(window, model, optimizer):
  for step in range(3):
    batch = window.train_batch(step)
    with tf.GradientTape() as tape:
      loss = model.training_loss(batch, window.batch_size)[0]
    variables = model.dense_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))


def test_eigenvalues_of_the_ranking_model_match_a_dense_hessian():
  _, window, model, optimizer, monitor = _small_run(
      iterations=400, tolerance=1e-7)
  _train_three_steps(window, model, optimizer)
  variables = model.dense_variables
  sizes = [int(tf.size(v)) for v in variables]
  assert sum(sizes) == 134  # (6 + 24) x 4 + 4, and two heads of 4 + 1
  # The reference: the Jacobian of the gradient (not an HVP), float32.
  batch = monitor.probe_batch()
  with tf.GradientTape(persistent=True) as outer:
    with tf.GradientTape() as inner:
      loss = monitor.loss(batch)
    flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(
        loss, variables)], 0)
  hessian = np.concatenate([np.reshape(j.numpy(), (sum(sizes), -1))
                            for j in outer.jacobian(flat, variables)], 1)
  hessian = (hessian + hessian.T) / 2
  d = np.concatenate([optimizer.preconditioner(v).numpy().ravel()
                      for v in variables])
  assert d.max() / d.min() > 3  # the accumulator is uneven
  root = np.diag(np.sqrt(d))
  scalars = monitor.measure(3)
  assert scalars["sharpness/hessian"] == pytest.approx(
      _top_magnitude(hessian), rel=1e-3)
  assert scalars["sharpness/preconditioned"] == pytest.approx(
      _top_magnitude(root @ hessian @ root), rel=1e-3)
  assert scalars["sharpness/two_over_eta"] == pytest.approx(2 / 0.05)
  assert scalars["sharpness/hessian_change"] < 1e-7
  assert scalars["sharpness/hessian_iterations"] < 400
  # Measuring changed nothing: the same numbers again.
  again = monitor.measure(3)
  for key in ("hessian", "preconditioned"):
    assert again[f"sharpness/{key}"] == scalars[f"sharpness/{key}"]


def test_the_probe_batch_is_of_the_evaluation_day_and_rebuilt_alike():
  stream, window, _, _, monitor = _small_run(batch_size=50, seed=3)
  batch = monitor.probe_batch()
  again = _small_run(batch_size=50, seed=3)[-1].probe_batch()
  assert window.eval_day == 2 and batch["click"].shape == [50]
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key], err_msg=key)
  # The rows of day 2 (ids 1000..1499), as the source gives them.
  day = stream.rows(tf.range(1000, 1500, dtype=tf.int64))
  rows = {tuple(r) for r in np.stack([day["user_id"], day["item_id"]], 1)}
  assert all(tuple(r) in rows for r in np.stack(
      [batch["user_id"], batch["item_id"]], 1))
  assert not np.array_equal(batch["user_id"], _small_run(
      batch_size=50, seed=4)[-1].probe_batch()["user_id"])


def test_two_replicas_measure_what_one_device_does():
  _, window, model, optimizer, monitor = _small_run()
  _train_three_steps(window, model, optimizer)
  _, _, model2, optimizer2, monitor2 = _small_run(
      strategies.two_cpu_replicas())
  assert len(model2.dense_variables[0].values) == 2  # mirrored
  pairs = list(zip(model.variables, model2.variables)) + list(zip(
      optimizer.variables, optimizer2.variables))
  assert len(pairs) == len(model.variables) + len(optimizer.variables)
  for a, b in pairs:
    assert a.name == b.name
    b.assign(a)
  one, two = monitor.measure(7), monitor2.measure(7)
  for key in ("hessian", "preconditioned", "two_over_eta"):
    assert two[f"sharpness/{key}"] == pytest.approx(
        one[f"sharpness/{key}"], rel=1e-5), key


def test_adam_gets_no_preconditioned_eigenvalue():
  _, _, model, _, _ = _small_run()
  adam = build_optimizer("adam", 1e-3, record_diagnostics=False)
  adam.build(model.dense_variables)
  stream = SyntheticStream(num_days=3, examples_per_day=500,
                           num_categorical=0, dense_dim=8)
  monitor = sh.SharpnessMonitor(model, adam, MovingWindow(
      stream, batch_size=32, window_days=1))
  scalars = monitor.measure(0)
  assert "sharpness/preconditioned" not in scalars
  assert scalars["sharpness/two_over_eta"] == pytest.approx(2e3)


@pytest.mark.parametrize("binding,value,message", [
    ("every_steps", -1, "SharpnessMonitor.every_steps must be an integer "
     ">= 0 \\(0: off\\), got -1"),
    ("iterations", 0, "SharpnessMonitor.iterations must be an integer >= 1,"
     " got 0"),
    ("batch_size", 0, "SharpnessMonitor.batch_size must be an integer >= 1"),
    ("tolerance", -1e-3, "SharpnessMonitor.tolerance must be >= 0"),
])
def test_bad_bindings_are_named(binding, value, message):
  with pytest.raises(ValueError, match=message):
    sh.SharpnessMonitor(None, None, None, **{binding: value})


def test_due_when_the_loop_crosses_a_multiple():
  monitor = sh.SharpnessMonitor(None, None, None, every_steps=25,
                                batch_size=8)
  assert [monitor.due(a, b) for a, b in [(0, 10), (20, 30), (30, 40),
                                         (40, 50), (25, 26), (49, 50),
                                         (-1, 0)]] == [
                                             False, True, False, True,
                                             False, True, True]
  off = sh.SharpnessMonitor(None, None, None, batch_size=8)
  assert not off.enabled and not off.due(0, 1000)


# -- in the trainer -----------------------------------------------------------------

STEPS = ["Trainer.max_steps=40"]
ON = ["SharpnessMonitor.every_steps=20"]


def _records(model_dir, split="sharpness"):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _state(model_dir):
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints",
                                                 "ckpt-40"))
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if "save_counter" not in name}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharpness")
  out = {}
  for name, params in [("off", STEPS), ("on", STEPS + ON)]:
    out[name] = (str(root / name),) + train(str(root / name), params)
  return out


def test_the_trainer_writes_the_scalars_at_the_expected_steps(runs):
  model_dir, summary, lines = runs["on"]
  assert summary["final_step"] == 40
  records = _records(model_dir)
  assert [r["step"] for r in records] == [0, 20, 40]  # 0: initial weights
  for r in records:
    # configs/base.gin: LEARNING_RATE = 0.02 (held in float32).
    assert r["sharpness/two_over_eta"] == pytest.approx(2 / 0.02, rel=1e-6)
    assert np.isfinite(r["sharpness/hessian"])
    assert r["sharpness/preconditioned"] > 0
    assert 1 <= r["sharpness/hessian_iterations"] <= 20
  assert sum(l.startswith("sharpness at step") for l in lines) == 3
  assert os.listdir(os.path.join(model_dir, "sharpness"))  # TensorBoard
  assert not _records(runs["off"][0])


def test_measuring_leaves_the_training_bit_identical(runs):
  on, off = _state(runs["on"][0]), _state(runs["off"][0])
  assert on.keys() == off.keys() and len(on) > 50
  for name in on:
    np.testing.assert_array_equal(on[name], off[name], err_msg=name)

  def losses(model_dir):
    return [{k: v for k, v in r.items() if "loss" in k}
            for r in _records(model_dir, "train")]

  assert losses(runs["on"][0]) == losses(runs["off"][0])
  assert _records(runs["on"][0], "eval") == _records(runs["off"][0], "eval")


def test_turning_the_monitor_on_or_off_when_resuming_is_allowed():
  recorded = "Trainer.max_steps = 40\nSharpnessMonitor.every_steps = 0\n"
  now = ("Trainer.max_steps = 40\nSharpnessMonitor.every_steps = 25\n"
         "SharpnessMonitor.iterations = 30\n")
  assert integrity.config_differences(recorded, now) == []
  assert integrity.config_differences(
      recorded, now + "LEARNING_RATE = 0.04\n") == [
          "LEARNING_RATE: (unset) -> 0.04"]
