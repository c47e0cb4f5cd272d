"""The multitask ranker: hand-computed outputs, parameter counts, presets,
one training step per bottom, per-task metrics, and bad configurations."""

import glob
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from data import schema as s
from data.synthetic import SyntheticStream
from optim import build_optimizer
from ranking import launch
from ranking.features import input_width
from ranking.model import build_model
from ranking.param_count import count_parameters
from tests import reference_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = s.Schema(
    categorical=[s.CategoricalFeature("user", 3),
                 s.CategoricalFeature("tags", 4, max_len=3)],
    dense=[s.DenseFeature("age", 1)],
    labels=[s.Label("click", "binary"), s.Label("watch", "regression")])


def _tiny_batch():
  return {"user": tf.constant([0, 2], tf.int64),
          "tags": tf.constant([[1, 3, -1], [-1, -1, -1]], tf.int64),
          "age": tf.constant([[1.0], [-2.0]]),
          "click": tf.constant([1.0, 0.0]),
          "watch": tf.constant([2.0, 0.5])}


def test_tiny_model_matches_hand_computation():
  model = build_model(TINY, embedding_dim=2, bottom_widths=(2,),
                      task_weights={"watch": 0.5},
                      kernel_initializer=tf.keras.initializers.Constant(0.5))
  batch = _tiny_batch()
  model(batch)
  model.feature_input.embeddings["user"].set_weights(
      [np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])])
  model.feature_input.embeddings["tags"].set_weights(
      [np.array([[9.0, 9.0], [1.0, 3.0], [9.0, 9.0], [3.0, 1.0]])])
  out = {k: v.numpy() for k, v in model(batch).items()}
  # Row 0: x = [user 0: 1, 0 | tags mean(1, 3): 2, 2 | age 1]; sum 6.
  #   bottom: 2 units of relu(0.5 * 6) = 3; head: 0.5 * (3 + 3) = 3.
  # Row 1: x = [user 2: 0, 2 | no tags: 0, 0 | age -2]; sum 0 -> 0.
  np.testing.assert_allclose(out["click"], [3.0, 0.0])
  np.testing.assert_allclose(out["watch"], [3.0, 0.0])
  loss = float(model.compute_loss(batch))
  bce = [np.log1p(np.exp(-3.0)), np.log(2.0)]   # label 1 at 3; label 0 at 0
  mse = [(3.0 - 2.0) ** 2, (0.0 - 0.5) ** 2]
  assert loss == pytest.approx(np.mean(bce) + 0.5 * np.mean(mse), rel=1e-6)
  assert float(model.loss_trackers["click"].result()) == pytest.approx(
      np.mean(bce), rel=1e-6)
  probs = model.predict_tasks(batch)
  np.testing.assert_allclose(probs["click"], 1 / (1 + np.exp([-3.0, 0.0])),
                             rtol=1e-6)
  np.testing.assert_allclose(probs["watch"], [3.0, 0.0])


def _formula(width, bottom, tasks, cross_layers=0, towers=()):
  """Non-embedding parameters from the widths alone."""
  count, previous = 0, width
  count += cross_layers * (width * width + width) + (2 * width
                                                     if cross_layers else 0)
  for w in bottom:
    count += previous * w + w
    previous = w
  for _ in range(tasks):
    p = previous
    for w in towers:
      count += p * w + w
      p = w
    count += p + 1
  return count


@pytest.mark.parametrize("preset,paper", [
    ("small", 7.5e6), ("large", 57.0e6), ("large_dcn", 68.0e6)])
def test_preset_parameter_counts(preset, paper):
  gin.clear_config()
  try:
    launch.parse_gin([os.path.join(ROOT, "configs", "models",
                                   f"{preset}.gin")], [])
    stream = SyntheticStream(num_days=2, examples_per_day=4)
    model = build_model(stream.schema)
    model(stream.rows(tf.range(2)))
  finally:
    gin.clear_config()
  width = input_width(stream.schema, 64)
  assert width == 1672
  bottom = (512, 512) if preset == "small" else (4096,) * 4
  cross = 4 if preset == "large_dcn" else 0
  expected = _formula(width, bottom, 6, cross)
  assert count_parameters(model)["total"] == expected
  if preset != "small":  # Small's 7.5M is explained in the README
    assert abs(expected / paper - 1) < 0.05, expected


def test_towers_and_low_rank_cross_count_by_formula():
  stream = SyntheticStream(num_days=2, examples_per_day=4)
  model = build_model(stream.schema, embedding_dim=8, bottom_widths=(32, 16),
                      tower_widths=(8,), cross_layers=2,
                      cross_projection_dim=4)
  model(stream.rows(tf.range(2)))
  width = input_width(stream.schema, 8)
  low_rank = 2 * (width * 4 + 4 * width + width) + 2 * width
  expected = (low_rank + _formula(width, (32, 16), 6, 0, (8,)))
  assert model.non_embedding_parameters() == expected


@pytest.mark.parametrize("path", sorted(glob.glob(
    os.path.join(ROOT, "configs", "models", "*.gin"))))
def test_every_model_preset_builds_with_the_small_machine_overlay(path):
  gin.clear_config()
  try:
    launch.parse_gin(
        [path, os.path.join(ROOT, "configs", "small_machine.gin")], [])
    stream = SyntheticStream(num_days=2, examples_per_day=8)
    model = build_model(stream.schema)
    out = model(stream.rows(tf.range(4)))
  finally:
    gin.clear_config()
  assert set(out) == set(stream.schema.label_names)
  assert all(v.shape == (4,) for v in out.values())


@pytest.mark.parametrize("bottom", ["mlp", "mmoe"])
def test_one_training_step_moves_only_what_it_should(bottom):
  stream = SyntheticStream(num_days=2, examples_per_day=256)
  model = build_model(stream.schema, bottom=bottom, embedding_dim=4,
                      bottom_widths=(16, 8), num_experts=3)
  batch = stream.rows(tf.range(128))
  model(batch)
  embedding_opt = tf.keras.optimizers.Adagrad(0.1)
  dense_opt = build_optimizer("clippy", 0.1)
  before = [v.numpy() for v in model.trainable_variables]
  with tf.GradientTape() as tape:
    loss = model.compute_loss(batch, training=True)
  emb, dense = model.embedding_variables, model.dense_variables
  grads = tape.gradient(loss, emb + dense)
  embedding_opt.apply_gradients(zip(grads[:len(emb)], emb))
  dense_opt.apply_gradients(zip(grads[len(emb):], dense))
  assert np.isfinite(float(loss))
  assert len(emb) == len(stream.schema.categorical)
  assert all("embedding_" in v.name for v in emb)
  assert len(emb) + len(dense) == len(model.trainable_variables)
  moved = [not np.array_equal(b, v.numpy())
           for b, v in zip(before, model.trainable_variables)]
  assert sum(moved) >= len(moved) - 1  # (a gate may get no gradient)
  assert len(dense_opt.diagnostics()) == len(dense)
  if bottom == "mmoe":
    assert len(model.bottom.gates) == 6 and len(model.bottom.experts) == 3


def test_per_task_metrics_match_numpy_and_do_not_mix_tasks():
  # Seeded: the mixed-up number must differ from the right one, which the
  # weights decide (unseeded, they depended on the tests run before).
  tf.keras.utils.set_random_seed(3)
  stream = SyntheticStream(num_days=2, examples_per_day=2000, seed=5)
  schema = stream.schema.select_labels(["click", "watch_time"])
  model = build_model(schema, embedding_dim=4, bottom_widths=(16,))
  batch = stream.rows(tf.range(1500))
  model.compute_loss(batch)
  preds = {k: v.numpy() for k, v in model.predict_tasks(batch).items()}
  click, watch = batch["click"].numpy(), batch["watch_time"].numpy()
  auc = float(model.metrics_by_task["click"].result())
  rmse = float(model.metrics_by_task["watch_time"].result())
  assert auc == pytest.approx(reference_metrics.auc(click, preds["click"]),
                              abs=2e-3)
  assert rmse == pytest.approx(
      np.sqrt(np.mean((preds["watch_time"] - watch) ** 2)), rel=1e-5)
  # Mixing tasks would score one task's predictions against another's
  # labels; those numbers differ from the right ones.
  assert abs(reference_metrics.auc(click, preds["watch_time"]) - auc) > 1e-3
  assert set(model.metrics_by_task) == {"click", "watch_time"}
  assert {m.name for m in model.metrics_by_task.values()} == {
      "click/auc", "watch_time/rmse"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(tasks=["click", "purchase"]),
     "\\['purchase'\\] are not labels of the data"),
    (dict(bottom_widths=(16, 0)), "positive integers"),
    (dict(bottom="transformer"), "Unknown bottom 'transformer'"),
    (dict(task_weights={"share": 2.0}, tasks=["click"]), "task_weights"),
    (dict(cross_layers=-1), "cross layers must be >= 1"),
    (dict(bottom="mmoe", num_experts=0), "num_experts must be >= 1"),
    (dict(tower_widths=(0,)), "positive integers"),
    (dict(width_scale=0.0), "width_scale must be > 0"),
])
def test_invalid_configuration_is_named(kwargs, message):
  stream = SyntheticStream(num_days=2, examples_per_day=4)
  with pytest.raises(ValueError, match=message):
    build_model(stream.schema, **kwargs)


def test_unknown_task_type_is_named():
  from ranking.tasks import Task  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown task type 'ordinal'"):
    Task("rating", "ordinal")
