"""The training job: end to end, resume after SIGKILL, two replicas,
divergence detection, the sidecar evaluator, and errors before training."""

import json
import os
import signal
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from ranking import launch
from tests import cluster
from tests import strategies

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = ["configs/small_clippy.gin", "configs/tiny.gin"]


def _train_in_process(model_dir, gin_files=TINY, params=(), strategy=None):
  gin.clear_config()
  try:
    launch.parse_gin(gin_files, list(params))
    launch.prepare_model_dir(model_dir)
    from ranking.trainer import Trainer  # pylint: disable=g-import-not-at-top
    trainer = Trainer(model_dir, strategy=strategy, log=lambda _: None)
    summary = trainer.run()
  finally:
    gin.clear_config()
  return trainer, summary


def _train_subprocess(model_dir, params=(), gin_files=TINY):
  args = [sys.executable, os.path.join(ROOT, "train.py"),
          f"--model_dir={model_dir}"]
  args += [f"--gin_file={f}" for f in gin_files]
  args += [f"--gin_param={p}" for p in params]
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


def _records(model_dir, split):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("tiny_run"))
  _, summary = _train_in_process(model_dir)
  return model_dir, summary


def test_end_to_end_loss_falls_and_next_day_auc_is_learned(tiny_run):
  model_dir, summary = tiny_run
  train = _records(model_dir, "train")
  assert train[-1]["loss/total"] < 0.7 * train[0]["loss/total"]
  assert summary["final_metrics"]["click/auc"] > 0.6
  assert set(summary) >= {"final_step", "scheduled_steps", "eval_day",
                          "final_metrics", "diverged", "diverged_at_step",
                          "divergence_reason", "micro_divergences"}
  assert summary["final_step"] == summary["scheduled_steps"] == 200
  assert not summary["diverged"]
  tasks = ["click", "like", "share", "comment", "watch_time", "rating"]
  for task in tasks:
    metric = "rmse" if task in ("watch_time", "rating") else "auc"
    assert f"{task}/{metric}" in summary["final_metrics"]
  evals = _records(model_dir, "eval")
  # Every K=40 steps and at the end of each training day (every 40 too).
  assert [r["step"] for r in evals] == [40, 80, 120, 160, 200]
  # Per-variable optimizer diagnostics and the other scalars are recorded.
  keys = set(train[-1])
  assert {"learning_rate", "examples_per_second", "clipping/min_sigma",
          "micro_divergences"} <= keys
  assert any(k.endswith("/max_direction_to_weight") for k in keys)
  assert os.listdir(os.path.join(model_dir, "train"))
  assert tf.train.latest_checkpoint(
      os.path.join(model_dir, "checkpoints")).endswith("ckpt-200")


def test_sidecar_evaluator_reproduces_the_final_evaluation(tiny_run):
  model_dir, summary = tiny_run
  gin_files = [f"--gin_file={os.path.join(ROOT, f)}" for f in TINY]
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"),
       f"--model_dir={model_dir}"] + gin_files,
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  sidecar = _records(model_dir, "eval_sidecar")[-1]
  assert sidecar["step"] == 200
  for key, value in summary["final_metrics"].items():
    assert sidecar[key] == pytest.approx(value, rel=1e-6), key
  # As a sidecar: evaluates the newest finished checkpoint, then waits for
  # another until the timeout.
  watch = subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"),
       f"--model_dir={model_dir}", "--watch", "--timeout=1"] + gin_files,
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert watch.returncode == 0, watch.stderr[-2000:]
  assert "ckpt-200 (step 200): click/auc" in watch.stdout


def _checkpoint_values(model_dir, step):
  """The weights of ckpt-`step` (the optimizer-updated variables; a filter
  on "model/" used to select only the model's never-updated metric counts),
  and every other number in it: slots, the monitor, the step."""
  reader = tf.train.load_checkpoint(
      os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
  values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "save_counter" not in k}
  assert len(cluster.checkpoint_weights(model_dir, step)) > 20
  return {k: v for k, v in values.items()
          if np.asarray(v).dtype.kind in "fiu"}


def test_a_run_killed_and_restarted_equals_an_uninterrupted_one(tmp_path):
  params = ["Trainer.max_steps=80"]
  whole = _train_subprocess(str(tmp_path / "whole"), params)
  assert whole.returncode == 0, whole.stderr[-2000:]
  crashed = str(tmp_path / "crashed")
  first = _train_subprocess(crashed, params + ["Trainer.crash_at_step=60"])
  assert first.returncode == -signal.SIGKILL
  assert tf.train.latest_checkpoint(
      os.path.join(crashed, "checkpoints")).endswith("ckpt-40")
  second = _train_subprocess(crashed, params)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "resumed from" in second.stdout and "at step 40" in second.stdout
  a, b = _checkpoint_values(str(tmp_path / "whole"), 80), _checkpoint_values(
      crashed, 80)
  assert a.keys() == b.keys() and len(a) > 10
  for key in a:
    np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)


def test_a_resume_past_a_smaller_max_steps_trains_nothing_and_ends(tmp_path):
  model_dir = str(tmp_path / "run")
  _train_in_process(model_dir, params=["Trainer.max_steps=20"])
  trainer, summary = _train_in_process(model_dir,
                                       params=["Trainer.max_steps=10"])
  assert int(trainer.global_step.numpy()) == 20  # nothing trained after 20
  assert summary["final_step"] == 20 and summary["scheduled_steps"] == 10


def test_two_replicas_match_one_device(tmp_path):
  assert len(tf.config.list_logical_devices("CPU")) >= 2
  params = ["Trainer.max_steps=30", "Trainer.eval_every_steps=1000"]
  one, _ = _train_in_process(str(tmp_path / "one"), params=params,
                             strategy=tf.distribute.OneDeviceStrategy(
                                 "/cpu:0"))
  two, _ = _train_in_process(str(tmp_path / "two"), params=params,
                             strategy=strategies.two_cpu_replicas())
  assert int(two.global_step.numpy()) == 30
  for a, b in zip(one.model.variables, two.model.variables):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5,
                               err_msg=a.name)


def test_main_command_runs_large_dcn_clippy_end_to_end(tmp_path):
  out = _train_subprocess(
      str(tmp_path / "run"), ["Trainer.max_steps=20"],
      gin_files=["configs/large_dcn_clippy.gin", "configs/tiny.gin"])
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| click | AUC |" in out.stdout
  assert "tensorboard --logdir" in out.stdout
  with open(tmp_path / "run" / "summary.json") as f:
    assert json.load(f)["final_step"] == 20
  with open(tmp_path / "run" / "operative_config.gin") as f:
    assert "build_model.cross_layers = 4" in f.read()


def test_forced_divergence_is_detected_and_clippy_is_not_flagged(tmp_path):
  high = ["LEARNING_RATE=2.0"]
  _, naive = _train_in_process(
      str(tmp_path / "naive"), ["configs/small_naive.gin", "configs/tiny.gin"],
      high)
  _, clippy = _train_in_process(str(tmp_path / "clippy"), TINY, high)
  assert naive["diverged"], naive
  assert naive["final_metrics"]["click/auc"] < 0.55
  assert not clippy["diverged"], clippy
  assert clippy["final_metrics"]["click/auc"] > 0.7


def test_bad_input_fails_before_any_training(tmp_path):
  model_dir = str(tmp_path / "run")
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="lambda_rell"):
      launch.build_trainer(TINY, ["build_optimizer.lambda_rell = 0.5"],
                           model_dir)
  finally:
    gin.clear_config()
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  gin.clear_config()
  try:
    with pytest.raises(PermissionError, match="Cannot create model_dir"):
      launch.build_trainer(TINY, [], str(blocker / "run"))
  finally:
    gin.clear_config()
  gin.clear_config()
  try:
    with pytest.raises(FileNotFoundError, match="no_such_logs"):
      launch.build_trainer(
          TINY + [os.path.join(ROOT, "configs", "data",
                               "files_example.gin")],
          ["Trainer.source = @file_source()",
           f"file_source.paths = ['{tmp_path}/no_such_logs/*.csv']"],
          model_dir)
  finally:
    gin.clear_config()
  assert not os.path.exists(os.path.join(model_dir, "checkpoints"))
  with pytest.raises(FileNotFoundError, match="Gin file not found"):
    launch.parse_gin(["configs/no_such.gin"], [])
