"""Runs that never lie: the hostile cases of issue 10, one test each.

Grouped as the issue is: (1) checkpoints, (2) resume checks the config and
the lock, (3) outputs, (4) finite state, (5) optimizer rules, (6) inputs,
(7) configuration values, (8) SIGTERM. Each asserts the exact behaviour
(the error naming the file / column / line / binding, or the right result)
and that nothing half-written or stale is left. Values are computed by hand
in the comments.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data import files
from data.source import InMemorySource
from data.window import MovingWindow
from optim import ScaledAdagrad, rules
from ranking import integrity, launch, quiet
from ranking.stability import state_is_finite, step_is_finite
from ranking.summaries import ScalarWriter
from tests.runs import TINY, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ckpt-40, ckpt-80, ckpt-120 of the tiny run (checkpoint every 40 steps).
BASE_STEPS = 120


def strict_loads(text):
  def refuse(name):
    raise ValueError(f"bare {name} in JSON")
  return json.loads(text, parse_constant=refuse)


def snapshot(model_dir):
  """{relative path: bytes} of every file in model_dir except the lock."""
  out = {}
  for root, _, names in os.walk(model_dir):
    for name in names:
      path = os.path.join(root, name)
      if name != integrity.LOCK_FILE:
        with open(path, "rb") as f:
          out[os.path.relpath(path, model_dir)] = f.read()
  return out


def records(model_dir, split):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(strict_loads, f) if r["split"] == split]


def checkpoint_is_finite(prefix):
  reader = tf.train.load_checkpoint(prefix)
  for key, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating:
      value = reader.get_tensor(key)
      if not np.all(np.isfinite(value)):
        return False
  return True


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("hostile") / "base")
  summary, _ = train(model_dir, [f"Trainer.max_steps={BASE_STEPS}"])
  assert summary["final_step"] == BASE_STEPS
  return model_dir


@pytest.fixture
def run_copy(base_run, tmp_path):
  target = str(tmp_path / "run")
  shutil.copytree(base_run, target)
  return target


def ckpt(model_dir, step):
  return os.path.join(model_dir, "checkpoints", f"ckpt-{step}")


# -- (1) checkpoints -------------------------------------------------------


def test_garbage_checkpoint_state_file_resumes_from_the_newest_files(
    run_copy):
  with open(os.path.join(run_copy, "checkpoints", "checkpoint"), "w") as f:
    f.write("garbage {{{ not a proto")
  summary, log = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert any("is unreadable; choosing among the checkpoint files" in l
             for l in log), log
  assert f"resumed from {ckpt(run_copy, 120)} at step 120" in log
  assert summary["final_step"] == 120
  assert tf.train.latest_checkpoint(
      os.path.join(run_copy, "checkpoints")).endswith("ckpt-120")


def test_truncated_data_falls_back_to_the_newest_intact_checkpoint(run_copy):
  data = ckpt(run_copy, 120) + ".data-00000-of-00001"
  with open(data, "rb") as f:
    content = f.read()
  with open(data, "wb") as f:
    f.write(content[:len(content) // 2])
  summary, log = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert any(l.startswith(f"checkpoint {ckpt(run_copy, 120)} is unreadable")
             for l in log), log
  assert any("resuming from" in l and "ckpt-80 (step 80), the newest intact"
             in l for l in log), log
  assert f"resumed from {ckpt(run_copy, 80)} at step 80" in log
  # The corrupt files are set aside, and the run trains 80 -> 120 again.
  assert os.path.exists(os.path.join(run_copy, "checkpoints", "corrupt",
                                     "ckpt-120.data-00000-of-00001"))
  assert summary["final_step"] == 120
  assert checkpoint_is_finite(ckpt(run_copy, 120))


def test_missing_index_falls_back(run_copy):
  os.remove(ckpt(run_copy, 120) + ".index")
  summary, log = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert f"resumed from {ckpt(run_copy, 80)} at step 80" in log
  assert summary["final_step"] == 120


def test_no_restorable_checkpoint_is_an_error_not_a_restart(run_copy):
  for step in (40, 80, 120):
    os.remove(ckpt(run_copy, step) + ".index")
  before = snapshot(run_copy)
  error, _ = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert isinstance(error, ValueError)
  message = str(error)
  assert "No checkpoint in" in message and "cannot resume" in message
  for step in (40, 80, 120):
    assert f"ckpt-{step}.data-00000-of-00001" in message
  # Refused before anything was written: same files, summary kept.
  assert snapshot(run_copy) == before


def test_leftover_temp_files_are_cleaned(run_copy):
  temp = os.path.join(run_copy, "checkpoints", "ckpt-160_temp")
  os.makedirs(temp)
  with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001"),
            "w") as f:
    f.write("half")
  with open(os.path.join(run_copy, "summary.json.tmp"), "w") as f:
    f.write("{")
  _, log = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert not os.path.exists(temp)
  assert not os.path.exists(os.path.join(run_copy, "summary.json.tmp"))
  assert any(f"removing {temp}" in l for l in log)


def restored_trainer(model_dir, step):
  """A Trainer of the tiny config holding checkpoint `step` of model_dir
  (built, not run: nothing in model_dir changes)."""
  gin.clear_config()
  try:
    launch.parse_gin(TINY, [])
    from ranking.trainer import Trainer  # pylint: disable=g-import-not-at-top
    trainer = Trainer(model_dir, log=lambda _: None)
  finally:
    gin.clear_config()
  trainer.checkpoint.read(ckpt(model_dir, step))
  return trainer


def test_checkpoint_holding_nan_is_not_restored(run_copy):
  # A checkpoint written with a NaN weight (e.g. by an older version).
  trainer = restored_trainer(run_copy, 120)
  weight = trainer.model.dense_variables[0]
  weight.assign(tf.fill(weight.shape, float("nan")))
  trainer.checkpoint.write(ckpt(run_copy, 120))
  assert not checkpoint_is_finite(ckpt(run_copy, 120))
  lines = []
  result = integrity.restore_newest_intact(
      trainer._restore, os.path.join(run_copy, "checkpoints"),  # pylint: disable=protected-access
      log=lines.append)
  assert result == ckpt(run_copy, 80)
  assert "it holds non-finite values" in lines[0]
  assert np.all(np.isfinite(weight.numpy()))


def test_a_checkpoint_missing_objects_is_not_intact(run_copy):
  # ckpt-130 holds the weights and the step, but no optimizer or monitor.
  trainer = restored_trainer(run_copy, 120)
  trainer.global_step.assign(130)
  tf.train.Checkpoint(model=trainer.model, step=trainer.global_step).write(
      ckpt(run_copy, 130))
  summary, log = train(run_copy, ["Trainer.max_steps=130"])
  assert any(l.startswith(f"checkpoint {ckpt(run_copy, 130)} is "
                          "unreadable (AssertionError") for l in log), log
  assert f"resumed from {ckpt(run_copy, 120)} at step 120" in log
  assert summary["final_step"] == 130


def test_eval_refuses_a_checkpoint_without_the_model_it_builds(run_copy):
  # A tower the run never had would be evaluated with random weights.
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"),
       f"--model_dir={run_copy}", "--gin_param=build_model.tower_widths=(8,)"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode != 0
  assert "No checkpoint in" in out.stderr and "AssertionError" in out.stderr
  assert "cannot resume" not in out.stderr  # worded for evaluation
  assert "eval_sidecar" not in "".join(
      open(os.path.join(run_copy, "metrics.jsonl")).readlines())


def test_eval_falls_back_to_the_newest_intact_checkpoint(run_copy):
  data = ckpt(run_copy, 120) + ".data-00000-of-00001"
  with open(data, "wb") as f:
    f.write(b"\0" * 16)
  before = snapshot(run_copy)
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"),
       f"--model_dir={run_copy}"], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"checkpoint {ckpt(run_copy, 120)} is unreadable" in out.stdout
  assert (f"using {ckpt(run_copy, 80)} (step 80), the newest intact "
          "checkpoint" in out.stdout)
  assert "ckpt-80 (step 80): click/auc" in out.stdout
  after = snapshot(run_copy)
  # eval.py moves and rewrites nothing; it only appends its results.
  assert {k: v for k, v in after.items() if k != "metrics.jsonl"
          and not k.startswith("eval_sidecar")} == {
              k: v for k, v in before.items() if k != "metrics.jsonl"}
  # An explicitly named corrupt checkpoint is an error naming its files.
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"),
       f"--model_dir={run_copy}", f"--checkpoint={ckpt(run_copy, 120)}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode != 0
  assert "ckpt-120.data-00000-of-00001" in out.stderr
  assert "cannot be restored" in out.stderr


# -- (2) resume checks the configuration; the lock -------------------------


@pytest.mark.parametrize("params,differs", [
    (["LEARNING_RATE=0.04"], ["LEARNING_RATE: 0.02 -> 0.04",
                              "build_optimizer.learning_rate: 0.02 -> 0.04",
                              "Trainer.embedding_learning_rate: 0.02 -> 0.04"]),
    (["MovingWindow.batch_size=128"], ["MovingWindow.batch_size: 256 -> 128"]),
    (["build_optimizer.method='gc'", "build_optimizer.clip_norm=0.1"],
     ["build_optimizer.method: 'clippy' -> 'gc'",
      "build_optimizer.clip_norm: None -> 0.1"]),
    (["SyntheticStream.seed=3"], ["SyntheticStream.seed: 0 -> 3"]),
    (["MovingWindow.window_days=3"], ["MovingWindow.window_days: 2 -> 3"]),
    # The same day as recorded (5), named otherwise: refused like any
    # other binding that can change what is trained.
    (["MovingWindow.eval_date='2022-04-20'"],
     ["MovingWindow.eval_date: None -> '2022-04-20'"]),
])
def test_resume_with_other_settings_is_refused(run_copy, params, differs):
  before = snapshot(run_copy)
  error, _ = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"] + params)
  assert isinstance(error, ValueError), error
  message = str(error)
  assert "was started with other settings" in message
  for line in differs:
    assert line in message
  assert "Trainer.max_steps" not in message
  # operative_config.gin, summary.json and the checkpoints are untouched.
  assert snapshot(run_copy) == before


def test_resume_may_change_steps_and_cadence(run_copy):
  summary, log = train(run_copy, [
      "Trainer.max_steps=160", "Trainer.eval_every_steps=20",
      "Trainer.summary_every_steps=10", "Trainer.checkpoint_every_steps=20"])
  assert f"resumed from {ckpt(run_copy, 120)} at step 120" in log
  assert summary["final_step"] == 160
  with open(os.path.join(run_copy, "operative_config.gin")) as f:
    assert "Trainer.max_steps = 160" in f.read()


def test_allow_config_change_resumes_and_logs_the_differences(run_copy):
  summary, log = train(run_copy, ["Trainer.max_steps=140",
                                  "LEARNING_RATE=0.01",
                                  "Trainer.allow_config_change=True"])
  assert any("resuming" in l and "with changed settings (allowed)" in l and
             "LEARNING_RATE: 0.02 -> 0.01" in l for l in log), log
  assert summary["final_step"] == 140
  # The new rate is the one used, not the one restored with the optimizer.
  after = [r for r in records(run_copy, "train") if r["step"] > 120]
  assert after and all(r["learning_rate"] == pytest.approx(0.01)
                       for r in after)
  # The run keeps the settings its first 120 steps trained with.
  kept = os.path.join(run_copy, "operative_config.until-step-120.gin")
  assert f"the settings of steps 1..120 are kept in {kept}" in log
  with open(kept) as f:
    assert "LEARNING_RATE = 0.02" in f.read()
  with open(os.path.join(run_copy, "operative_config.gin")) as f:
    assert "LEARNING_RATE = 0.01" in f.read()


def test_a_superseded_config_is_kept_once_per_step(tmp_path):
  # Changed twice at step 5 with nothing trained between: the settings
  # steps 1..5 trained with are the first ones, and stay.
  lines = []
  kept = integrity.keep_superseded_config(
      str(tmp_path), 5, "LEARNING_RATE = 0.02\n", lines.append)
  assert kept == str(tmp_path / "operative_config.until-step-5.gin")
  assert integrity.keep_superseded_config(
      str(tmp_path), 5, "LEARNING_RATE = 0.05\n", lines.append) == kept
  with open(kept) as f:
    assert f.read() == "LEARNING_RATE = 0.02\n"
  assert lines == [f"the settings of steps 1..5 are kept in {kept}"] * 2


def test_resume_on_other_data_is_refused(run_copy):
  # The same bindings can find other data (a glob matching a new file):
  # here the recorded fingerprint says day 5 had 9000 examples.
  path = os.path.join(run_copy, integrity.DATA_FINGERPRINT)
  with open(path) as f:
    recorded = json.load(f)
  sizes = recorded["day_sizes"]
  recorded["day_sizes"] = sizes[:5] + [9000]
  with open(path, "w") as f:
    json.dump(recorded, f)
  before = snapshot(run_copy)
  error, _ = train(run_copy, ["Trainer.max_steps=160"])
  assert isinstance(error, ValueError)
  assert "was started on other data" in str(error)
  assert f"examples per day: day 5: 9000 -> {sizes[5]}" in str(error)
  assert snapshot(run_copy) == before


def test_a_model_dir_recorded_before_dates_and_cadence_resumes(run_copy):
  # What a run recorded before these settings existed: no date bindings,
  # no eval_every_days or min_eval_examples, no first_date in the data.
  added = ("MovingWindow.eval_date", "MovingWindow.first_train_date",
           "MovingWindow.min_eval_examples", "Trainer.eval_every_days")
  path = os.path.join(run_copy, integrity.OPERATIVE_CONFIG)
  with open(path) as f:
    lines = f.read().splitlines(keepends=True)
  kept = [l for l in lines if not l.startswith(added)]
  assert len(lines) - len(kept) == len(added)
  with open(path, "w") as f:
    f.writelines(kept)
  path = os.path.join(run_copy, integrity.DATA_FINGERPRINT)
  with open(path) as f:
    recorded = json.load(f)
  assert recorded.pop("first_date") == "2022-04-15"
  with open(path, "w") as f:
    json.dump(recorded, f)
  summary, log = train(run_copy, ["Trainer.max_steps=140"])
  assert f"resumed from {ckpt(run_copy, 120)} at step 120" in log, summary
  assert summary["final_step"] == 140
  with open(path) as f:
    assert json.load(f)["first_date"] == "2022-04-15"


def test_resume_on_a_log_of_other_dates_is_refused(run_copy):
  path = os.path.join(run_copy, integrity.DATA_FINGERPRINT)
  with open(path) as f:
    recorded = json.load(f)
  recorded["first_date"] = "2022-04-14"
  with open(path, "w") as f:
    json.dump(recorded, f)
  error, _ = train(run_copy, ["Trainer.max_steps=140"])
  assert isinstance(error, ValueError)
  assert "first_date: '2022-04-14' -> '2022-04-15'" in str(error)


def test_data_fingerprints_see_rows_and_statistics():
  def window(values, days):
    schema = files.schema_lib.Schema(
        categorical=[], dense=[files.schema_lib.DenseFeature(
            "x", 1, mean=float(np.mean(values)))],
        labels=[files.schema_lib.Label("y", "binary")])
    source = InMemorySource(schema, {"x": np.array(values)[:, None],
                                     "y": np.zeros(len(values))},
                            np.array(days))
    return MovingWindow(source, batch_size=1)
  a = integrity.data_fingerprint(window([1.0, 2.0, 3.0], [0, 1, 1]))
  assert a["day_sizes"] == [1, 2] and a["eval_day"] == 1
  b = integrity.data_fingerprint(window([1.0, 2.0, 5.0], [0, 1, 1]))
  assert a["day_sizes"] == b["day_sizes"]
  assert a["schema_sha256"] != b["schema_sha256"]


def test_without_a_checkpoint_other_settings_start_afresh(tmp_path):
  model_dir = str(tmp_path / "run")
  os.makedirs(model_dir)
  with open(os.path.join(model_dir, "operative_config.gin"), "w") as f:
    f.write("LEARNING_RATE = 0.5\nMovingWindow.batch_size = 64\n")
  summary, log = train(model_dir, ["Trainer.max_steps=20"])
  assert any("has no checkpoint, so nothing trained with its recorded "
             "settings is resumed" in l and
             "MovingWindow.batch_size: 64 -> 256" in l for l in log), log
  assert summary["final_step"] == 20


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
  precious = tmp_path / "precious.txt"
  precious.write_text("keep me\n")
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  os.symlink(precious, model_dir / integrity.LOCK_FILE)
  with pytest.raises(RuntimeError, match="must be a regular file, not a link"):
    integrity.RunLock(str(model_dir)).acquire()
  assert precious.read_text() == "keep me\n"


def test_checkpoints_without_a_recorded_config_are_refused(run_copy):
  os.remove(os.path.join(run_copy, "operative_config.gin"))
  error, _ = train(run_copy, [f"Trainer.max_steps={BASE_STEPS}"])
  assert isinstance(error, ValueError)
  assert "has checkpoints but no operative_config.gin" in str(error)


def test_a_failed_launch_leaves_the_operative_config_untouched(run_copy):
  before = snapshot(run_copy)
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="lambda_rell"):
      launch.build_trainer(TINY, ["build_optimizer.lambda_rell = 0.5"],
                           run_copy)
  finally:
    gin.clear_config()
  assert snapshot(run_copy) == before


HOLDER = """
import sys
sys.path.insert(0, {root!r})
from ranking.integrity import RunLock
lock = RunLock({model_dir!r}, log=print).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def _hold_lock(model_dir):
  child = subprocess.Popen(
      [sys.executable, "-c", HOLDER.format(root=ROOT, model_dir=model_dir)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == "locked"
  return child


def test_a_second_concurrent_run_is_refused(tmp_path):
  model_dir = str(tmp_path)
  child = _hold_lock(model_dir)
  try:
    with pytest.raises(RuntimeError, match=f"pid {child.pid} on"):
      integrity.RunLock(model_dir).acquire()
  finally:
    child.stdin.close()
    child.wait()
  # Released with its process: the next run takes it.
  lines = []
  integrity.RunLock(model_dir, lines.append).acquire().release()


def test_training_into_a_locked_model_dir_is_refused(run_copy):
  before = snapshot(run_copy)
  child = _hold_lock(run_copy)
  try:
    error, _ = train(run_copy, ["Trainer.max_steps=160"])
  finally:
    child.stdin.close()
    child.wait()
  assert isinstance(error, RuntimeError)
  assert f"Another training run holds {run_copy}" in str(error)
  assert snapshot(run_copy) == before


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
  model_dir = str(tmp_path)
  child = _hold_lock(model_dir)
  child.kill()
  child.wait()
  lines = []
  lock = integrity.RunLock(model_dir, lines.append).acquire()
  lock.release()
  assert len(lines) == 1 and f"pid {child.pid}" in lines[0]
  assert "taking over the stale lock" in lines[0]


def test_config_differences_ignore_bindings_that_do_not_change_training():
  recorded = ("LR = 0.1\nbuild_optimizer.learning_rate = %LR\n"
              "Trainer.max_steps = 100\nmake_strategy.kind = 'auto'\n"
              "Trainer.source = @SyntheticStream()\n")
  current = ("LR = 0.1\nbuild_optimizer.learning_rate = %LR\n"
             "Trainer.max_steps = 900\nmake_strategy.kind = 'mirrored'\n"
             "Trainer.source = @file_source()\n")
  assert integrity.config_differences(recorded, current) == [
      "Trainer.source: @SyntheticStream() -> @file_source()"]
  # Another strategy (its table sharding) or another place for the same
  # prepared log may differ too; the log's rows are the fingerprint's job.
  recorded += "on_disk_source.path = '/a'\n"
  current += ("on_disk_source.path = '/b'\n"
              "EmbeddingPartitioner.min_shard_bytes = 262144\n")
  assert integrity.config_differences(recorded, current) == [
      "Trainer.source: @SyntheticStream() -> @file_source()"]


def test_a_model_dir_on_a_url_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="POSIX path; mount the bucket"):
    launch.prepare_model_dir("gs://bucket/run")
  assert not os.path.exists("gs:")


# -- (3) outputs --------------------------------------------------------------


def test_metrics_jsonl_is_strict_json(tmp_path):
  writer = ScalarWriter(str(tmp_path))
  writer.write("train", 3, {"loss": float("nan"), "grad": float("inf"),
                            "ok": 1.5})
  writer.flush()
  with open(tmp_path / "metrics.jsonl") as f:
    record = strict_loads(f.readline())
  assert record == {"step": 3, "split": "train", "loss": None, "grad": None,
                    "ok": 1.5, "nonfinite": {"loss": "nan", "grad": "inf"}}


def test_summary_json_is_strict_json(tmp_path):
  path = str(tmp_path / "summary.json")
  written = integrity.write_json_atomically(
      path, {"final_metrics": {"click/loss": float("-inf"), "a": 1.0},
             "best": float("nan")})
  with open(path) as f:
    assert strict_loads(f.read()) == written == {
        "final_metrics": {"click/loss": None, "a": 1.0}, "best": None,
        "nonfinite": {"final_metrics/click/loss": "-inf", "best": "nan"}}
  assert not os.path.exists(path + ".tmp")


@pytest.fixture(scope="module")
def exploded_run(tmp_path_factory):
  """Naive Adagrad at a learning rate of 1e4: the gradients' squares
  overflow within a few steps."""
  model_dir = str(tmp_path_factory.mktemp("exploded") / "run")
  summary, log = train(model_dir, ["LEARNING_RATE=1e4",
                                   "Trainer.summary_every_steps=40"],
                       gin_files=["configs/small_naive.gin",
                                  "configs/tiny.gin"])
  return model_dir, summary, log


def test_explosion_is_full_divergence_with_finite_files(exploded_run):
  model_dir, summary, log = exploded_run
  assert summary["diverged"] and summary["diverged_at_step"] <= 10
  assert summary["nonfinite_steps"] >= 1
  assert any(l.startswith("stopping at step 10: the run has diverged")
             for l in log)
  with open(os.path.join(model_dir, "summary.json")) as f:
    strict_loads(f.read())
  records(model_dir, "train")  # strict
  prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  assert prefix.endswith("ckpt-10") and checkpoint_is_finite(prefix)


def test_the_last_partial_summary_interval_is_written(exploded_run):
  model_dir, summary, _ = exploded_run
  train_records = records(model_dir, "train")
  # The run stopped at step 10, inside the 40-step summary interval.
  assert [r["step"] for r in train_records] == [summary["final_step"]] == [10]
  # The loss is the mean over the applied steps, and skipped ones count.
  assert train_records[0]["skipped_steps"] == summary["nonfinite_steps"]


def test_a_diverged_run_that_is_rerun_does_not_train_on(exploded_run):
  model_dir, summary, _ = exploded_run
  before = len(records(model_dir, "train"))
  again, log = train(model_dir, ["LEARNING_RATE=1e4",
                                 "Trainer.summary_every_steps=40"],
                     gin_files=["configs/small_naive.gin",
                                "configs/tiny.gin"])
  assert any(l.startswith("not training on: the run diverged at step")
             for l in log), log
  assert again["final_step"] == summary["final_step"]
  assert again["diverged_at_step"] == summary["diverged_at_step"]
  assert len(records(model_dir, "train")) == before


# -- (4) finite state ----------------------------------------------------------


def test_the_guard_checks_gradients_not_only_the_loss():
  loss = tf.constant(0.5)
  assert bool(step_is_finite(loss, [tf.constant([1.0, -2.0]), None]))
  assert not bool(step_is_finite(loss, [tf.constant([1.0, float("inf")])]))
  assert not bool(step_is_finite(loss, [tf.constant([float("nan")])]))
  # Finite, but its square (1e40) would overflow an Adagrad accumulator.
  assert not bool(step_is_finite(loss, [tf.constant([1e20])]))
  sparse = tf.IndexedSlices(tf.constant([[float("nan")]]), tf.constant([0]),
                            tf.constant([3, 1]))
  assert not bool(step_is_finite(loss, [sparse]))
  assert not bool(step_is_finite(tf.constant(float("nan")), []))


def poison_after_loop(at_step, pick, value, recheck):
  """A trainer hook: after the host loop that reaches `at_step` (or any
  later one, with recheck), fill the variable `pick(trainer)` with `value`;
  recheck: report the state as the loop's own check would."""

  def hook(trainer):
    real = trainer._train_loop  # pylint: disable=protected-access

    def loop(iterator, steps):
      result = real(iterator, steps)
      step = int(trainer.global_step.numpy())
      if step == at_step or (recheck and step > at_step):
        variable = pick(trainer)
        variable.assign(tf.fill(variable.shape, value))
      return (state_is_finite(trainer._state_variables()) if recheck  # pylint: disable=protected-access
              else result)

    trainer._train_loop = loop  # pylint: disable=protected-access

  return hook


def test_non_finite_state_after_an_update_rolls_back_to_a_checkpoint(
    tmp_path):
  model_dir = str(tmp_path / "run")
  summary, log = train(model_dir, ["Trainer.max_steps=80"],
                       trainer_hook=poison_after_loop(
                           50, lambda t: t.model.dense_variables[0],
                           float("inf"), recheck=True))
  assert "non-finite weights or optimizer state after step 50; restoring " \
         "the newest checkpoint" in log
  assert summary["diverged"] and summary["diverged_at_step"] == 50
  assert "non-finite weights or optimizer state" in summary[
      "divergence_reason"]
  assert summary["final_step"] == 40
  prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  assert prefix.endswith("ckpt-40") and checkpoint_is_finite(prefix)
  assert not any(r["step"] > 50 for r in records(model_dir, "train"))


def test_a_checkpoint_is_refused_when_an_optimizer_slot_is_not_finite(
    tmp_path):
  model_dir = str(tmp_path / "run")
  # Poisoned after the last loop's own check: only the save's check is left.
  _, log = train(model_dir, ["Trainer.max_steps=40"],
                 trainer_hook=poison_after_loop(
                     40, lambda t: next(v for v in t.dense_optimizer.variables
                                        if "accumulator" in v.name),
                     float("nan"), recheck=False))
  assert "not checkpointing step 40: non-finite weights or optimizer " \
         "state" in log
  assert tf.train.latest_checkpoint(
      os.path.join(model_dir, "checkpoints")) is None


# -- (5) optimizer rules ---------------------------------------------------------


def test_clippy_without_lambda_abs_freezes_a_layer_with_a_zero_weight():
  # w = [0, 2], r = [1, 1], eta = 0.1, lambda_rel = 0.5, lambda_abs = 0:
  # allowed = [0, 1]; r_0 != 0 at a zero weight allows nothing: sigma = 0.
  sigma = rules.clippy_scale(None, tf.constant([0.0, 2.0]),
                             tf.constant([1.0, 1.0]), 0.1, lambda_rel=0.5,
                             lambda_abs=0.0)
  assert float(sigma) == 0.0


def test_clippy_without_lambda_abs_ignores_a_zero_weight_that_does_not_move():
  # w = [0, 2], r = [0, 40], eta = 0.1: only w_1 constrains:
  # sigma = 0.5 * 2 / (0.1 * 40) = 0.25.
  sigma = rules.clippy_scale(None, tf.constant([0.0, 2.0]),
                             tf.constant([0.0, 40.0]), 0.1, lambda_rel=0.5,
                             lambda_abs=0.0)
  assert float(sigma) == pytest.approx(0.25)


def test_clippy_with_lambda_abs_keeps_the_paper_bound():
  # w = [0, 2], r = [1, 40], eta = 0.1, lambda_abs = 0.01: coordinate 0
  # allows 0.01 / 0.1 = 0.1, coordinate 1 allows 1.01 / 4 = 0.2525.
  sigma = rules.clippy_scale(None, tf.constant([0.0, 2.0]),
                             tf.constant([1.0, 40.0]), 0.1, lambda_rel=0.5,
                             lambda_abs=0.01)
  assert float(sigma) == pytest.approx(0.1)


@pytest.mark.parametrize("w,r", [([0.0, 0.0], [3.0, 4.0]),
                                 ([3.0, 4.0], [0.0, 0.0])])
def test_lamb_falls_back_to_the_trust_coefficient(w, r):
  sigma = rules.lamb_scale(None, tf.constant(w), tf.constant(r), 0.1,
                           trust_coefficient=0.01)
  assert float(sigma) == pytest.approx(0.01)


def test_lamb_trust_ratio_by_hand():
  # ||w|| = 5, ||r|| = 10, mu = 0.1: sigma = 0.1 * 5 / 10 = 0.05.
  sigma = rules.lamb_scale(None, tf.constant([3.0, 4.0]),
                           tf.constant([6.0, 8.0]), 0.1, trust_coefficient=0.1)
  assert float(sigma) == pytest.approx(0.05)


def test_complex_variables_are_refused_by_name():
  variable = tf.Variable(tf.constant([1 + 1j], tf.complex64), name="cplx")
  optimizer = ScaledAdagrad(0.1, clipping="clippy")
  with pytest.raises(ValueError, match="cplx.* complex64.*real "
                     "floating-point"):
    optimizer.build([variable])


# -- (6) inputs ------------------------------------------------------------------

HEADER = "ts,user,age,click\n"


def _log(tmp_path, rows, name="logs.csv", header=HEADER):
  path = tmp_path / name
  path.write_text(header + "".join(r + "\n" for r in rows))
  return str(path)


def _read(paths, **kwargs):
  args = dict(paths=paths, timestamp_column="ts", labels={"click": "binary"},
              categorical={"user": 10}, dense={"age": "none"})
  args.update(kwargs)
  return files.file_source(**args)


def test_mixed_seconds_and_milliseconds_are_refused(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "1709337600000,u2,40,0"])
  with pytest.raises(ValueError, match=(
      "timestamps mix units .*logs.csv line 2, column 'ts': 1709251200 "
      "\\(looks like s\\).*logs.csv line 3, column 'ts': 1709337600000 "
      "\\(looks like ms\\).*timestamp_unit")):
    _read(path)


def test_an_explicit_unit_is_obeyed(tmp_path):
  # 1709251200000 ms = 2024-03-01 00:00 UTC, +1 and +2 days.
  path = _log(tmp_path, ["1709251200000,u1,30,1", "1709337600000,u2,40,0",
                         "1709424000000,u3,50,1"])
  source = _read(path, timestamp_unit="ms")
  assert source.num_days == 3 and source.num_rows == 3
  with pytest.raises(ValueError, match="timestamp_unit must be one of"):
    _read(path, timestamp_unit="minutes")


def test_ambiguous_day_month_dates_are_refused(tmp_path):
  path = _log(tmp_path, ["03/04/2024 10:00,u1,30,1",
                         "05/04/2024 10:00,u2,40,0"])
  with pytest.raises(ValueError, match=(
      "logs.csv line 2, column 'ts': date '03/04/2024 10:00' is ambiguous.*"
      "timestamp_format")):
    _read(path)


def test_a_timestamp_format_resolves_the_ambiguity(tmp_path):
  # Day first: 3 and 5 April, 2 days apart; month first would be 2 months.
  path = _log(tmp_path, ["03/04/2024 10:00,u1,30,1",
                         "04/04/2024 10:00,u3,35,0",
                         "05/04/2024 10:00,u2,40,0"])
  source = _read(path, timestamp_format="%d/%m/%Y %H:%M")
  assert source.num_days == 3
  with pytest.raises(ValueError, match=(
      "line 3, column 'ts': timestamp '04/04/2024 10:00' does not match "
      "file_source.timestamp_format '%Y-%m-%d'")):
    _read(_log(tmp_path, ["2024-04-03,u1,30,1", "04/04/2024 10:00,u3,35,0"],
               name="b.csv"), timestamp_format="%Y-%m-%d")


def test_out_of_range_timestamps_name_file_column_and_line(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "1709337600,u2,40,0",
                         "99999999999,u3,50,1"], name="a.csv")
  # 99999999999 s is the year 5138: beyond pandas' range (up to 2262).
  with pytest.raises(ValueError, match="a.csv line 4, column 'ts': timestamp "
                     "99999999999 \\(s\\) is outside the representable"):
    _read(path, timestamp_unit="s")
  path = _log(tmp_path, ["2024-03-01,u1,30,1", "3024-03-02,u2,40,0"],
              name="b.csv")
  with pytest.raises(ValueError, match="b.csv line 3, column 'ts': "
                     "timestamp '3024-03-02' is outside the representable"):
    _read(path)


@pytest.mark.parametrize("value", ["Wed 03/01/2024 10:00", "1.2.3",
                                   "2024-01-05 (05.01.24)"])
def test_ambiguous_dates_anywhere_in_the_string_are_refused(tmp_path, value):
  path = _log(tmp_path, [f"{value},u1,30,1"])
  with pytest.raises(ValueError, match="line 2, column 'ts': date .* is "
                     "ambiguous"):
    _read(path)


def test_dates_other_than_iso_8601_need_a_format(tmp_path):
  path = _log(tmp_path, ['"Jan 5 2024 10:00",u1,30,1'])
  with pytest.raises(ValueError, match="line 2, column 'ts': timestamp 'Jan 5 "
                     "2024 10:00' is not an ISO 8601 date.*timestamp_format"):
    _read(path)
  assert _read(path, timestamp_format="%b %d %Y %H:%M").num_rows == 1


def test_naive_date_strings_are_local_times_of_the_time_zone(tmp_path):
  # Shanghai is UTC+8: 22:00 on Jan 1 is still Jan 1 there (14:00 UTC); an
  # explicit offset is obeyed: 2024-01-01T20:00-05:00 is Jan 2, 09:00 there.
  path = _log(tmp_path, ["2024-01-01 09:00,u1,30,1",
                         "2024-01-01 22:00,u2,30,1",
                         "2024-01-01T20:00:00-05:00,u3,30,1",
                         "2024-01-02 09:00,u4,30,1"])
  source = _read(path, time_zone="Asia/Shanghai")
  assert [source.day_size(d) for d in range(source.num_days)] == [2, 2]
  formatted = _log(tmp_path, ["01/01/2024 22:00,u1,30,1",
                              "02/01/2024 09:00,u4,30,1"], name="f.csv")
  source = _read(formatted, time_zone="Asia/Shanghai",
                 timestamp_format="%d/%m/%Y %H:%M")
  assert [source.day_size(d) for d in range(source.num_days)] == [1, 1]


def test_a_file_matched_twice_is_refused(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1"], name="day1.csv")
  with pytest.raises(ValueError, match=f"{path} is matched by both "
                     "'.*day1.csv' and '.*day\\*.csv'"):
    _read([path, str(tmp_path / "day*.csv")])


def test_a_repeated_header_is_refused(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1,0"],
              header="ts,user,age,click,click\n")
  with pytest.raises(ValueError, match="logs.csv line 1: the header names "
                     "column\\(s\\) \\['click'\\] more than once"):
    _read(path)


def test_missing_ids_and_single_numeric_ids_are_values(tmp_path):
  path = _log(tmp_path, ["1709251200,,30,1,7", "1709337600,u2,40,0,8|9"],
              header="ts,user,age,click,tags\n")
  source = _read(path, multivalued={"tags": (100, 2)})
  batch = {k: v.numpy() for k, v in source.rows(tf.range(2)).items()}
  from data.encoding import stable_hash  # pylint: disable=g-import-not-at-top
  assert batch["user"][0] == stable_hash(np.array([""]), 10)[0]
  assert list(batch["tags"][0]) == [stable_hash(np.array(["7"]), 100)[0],
                                    files.schema_lib.PAD_ID]


def test_a_value_that_overflows_once_normalised_is_named(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,-3e38,1", "1709337600,u2,-3e38,0",
                         "1709424000,u3,3e38,1"])
  with pytest.raises(ValueError, match="line 4, column 'age': value 3e\\+38 "
                     "overflows float32 once normalised"):
    _read(path)


def test_yyyymmdd_numbers_are_not_taken_for_unix_seconds(tmp_path):
  path = _log(tmp_path, ["20240301,u1,30,1", "20240302,u2,40,0"])
  with pytest.raises(ValueError, match="timestamps such as 20240301 "
                     "\\(.*logs.csv line 2, column 'ts'\\) look like "
                     "YYYYMMDD dates.*timestamp_format = '%Y%m%d'"):
    _read(path)
  assert _read(path, timestamp_format="%Y%m%d").num_days == 2


def test_numbers_mixed_with_dates_are_refused(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "2024-03-02,u2,40,0"])
  with pytest.raises(ValueError, match="mix numbers and other values"):
    _read(path)


def test_row_numbers_are_lines_of_the_right_file(tmp_path):
  good = _log(tmp_path, ["1709251200,u1,30,1", "1709337600,u2,40,0"],
              name="a.csv")
  # A blank line, then a bad label on line 5 of b.csv.
  bad = tmp_path / "b.csv"
  bad.write_text(HEADER + "1709251300,u1,30,1\n\n1709337700,u2,40,1\n"
                 "1709424000,u3,50,7\n")
  with pytest.raises(ValueError, match=f"{bad} line 5, column 'click': a "
                     "binary label must be 0 or 1"):
    _read([good, str(bad)])


def test_parquet_errors_name_the_row(tmp_path):
  frame = pd.DataFrame({"ts": [1709251200, 1709337600, 1709424000],
                        "user": ["a", "b", "c"], "age": [1.0, np.inf, 2.0],
                        "click": [1, 0, 1]})
  frame.to_parquet(tmp_path / "p.parquet")
  with pytest.raises(ValueError, match="p.parquet row 2, column 'age': "
                     "infinite or overflowing value"):
    _read(str(tmp_path / "p.parquet"))


@pytest.mark.parametrize("value,why", [
    ("inf", "infinite or overflowing value inf"),
    ("1e400", "infinite or overflowing value inf"),  # overflows float64
    ("1e39", "beyond float32 \\(\\|x\\| > 3.4e38\\) value 1e\\+39"),
])
def test_non_finite_dense_values_are_named(tmp_path, value, why):
  path = _log(tmp_path, ["1709251200,u1,30,1", f"1709337600,u2,{value},0",
                         "1709424000,u3,50,1"], )
  with pytest.raises(ValueError, match=f"line 3, column 'age': {why}"):
    _read(path)


def test_an_infinite_regression_label_is_named(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "1709337600,u2,40,-inf"])
  with pytest.raises(ValueError, match="line 3, column 'click': infinite or "
                     "overflowing label -inf"):
    _read(path, labels={"click": "regression"})


def test_a_single_day_log_is_named(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "1709251300,u2,40,0"])
  source = _read(path)
  with pytest.raises(ValueError, match="the log spans a single day \\(2 "
                     "examples on day 0\\).*at least two days"):
    MovingWindow(source, batch_size=2)


def test_empty_paths_are_named():
  with pytest.raises(ValueError, match="file_source.paths is empty"):
    _read([])


def test_a_directory_given_as_a_file_is_named(tmp_path):
  with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a directory"):
    _read(str(tmp_path))


@pytest.mark.parametrize("kwargs,message", [
    (dict(dense={"click": "none"}), "'click' as a label and as a dense"),
    (dict(categorical={"ts": 10}),
     "'ts' as the timestamp_column and as a categorical"),
    (dict(categorical={"user": 10}, multivalued={"user": (10, 2)}),
     "'user' as a categorical feature and as a multivalued"),
])
def test_the_same_column_used_twice_is_named(tmp_path, kwargs, message):
  path = _log(tmp_path, ["1709251200,u1,30,1"])
  with pytest.raises(ValueError, match=f"a column is used twice: {message}"):
    _read(path, **kwargs)


def test_in_memory_sources_name_non_finite_columns():
  schema = files.schema_lib.Schema(
      categorical=[], dense=[files.schema_lib.DenseFeature("x", 1)],
      labels=[files.schema_lib.Label("y", "binary")])
  with pytest.raises(ValueError, match="column 'x' has a NaN or infinite "
                     "value \\(first at row 1, day 0\\)"):
    InMemorySource(schema, {"x": np.array([[0.0], [np.inf]]),
                            "y": np.zeros(2)}, np.array([0, 0]))


# -- (7) configuration values -------------------------------------------------


@pytest.mark.parametrize("params,error,message", [
    (["Trainer.max_steps=0"], ValueError, "Trainer.max_steps must be >= 1"),
    (["Trainer.max_steps=-5"], ValueError, "Trainer.max_steps must be >= 1"),
    (["LEARNING_RATE=-0.1"], ValueError,
     "Trainer.embedding_learning_rate must be > 0, got -0.1"),
    (["build_optimizer.learning_rate=-0.1"], ValueError,
     "build_optimizer.learning_rate must be > 0, got -0.1"),
    (["build_optimizer.learning_rate=0"], ValueError,
     "build_optimizer.learning_rate must be > 0, got 0"),
    (["Trainer.embedding_learning_rate=0.0"], ValueError,
     "Trainer.embedding_learning_rate must be > 0"),
    (["Trainer.max_steps='100'"], ValueError,
     "Trainer.max_steps = '100': a number is needed, not a str"),
    (["LEARNING_RATE='fast'"], ValueError,
     "learning_rate = 'fast' \\(via %LEARNING_RATE\\): a number is needed"),
    (["MovingWindow.batch_size='big'"], ValueError,
     "MovingWindow.batch_size = 'big': a number is needed"),
    (["include 'configs/no_such_overlay.gin'"], FileNotFoundError,
     "--gin_param line 1: include 'configs/no_such_overlay.gin'"),
    (["LEARNING_RATE=1e400"], ValueError,
     "= inf \\(via %LEARNING_RATE\\): a finite number is needed"),
    (["Trainer.max_steps=1.5"], ValueError,
     "Trainer.max_steps = 1.5: a whole number is needed"),
    (["MovingWindow.window_days=2.7"], ValueError,
     "MovingWindow.window_days = 2.7: a whole number is needed"),
    (["MovingWindow.epochs_per_day=-1"], ValueError,
     "MovingWindow.epochs_per_day must be a number > 0, got -1"),
    (["MovingWindow.steps_per_day=0"], ValueError,
     "MovingWindow.steps_per_day must be >= 1"),
    (["Trainer.eval_batch_size=-1"], ValueError,
     "Trainer.eval_batch_size must be >= 1, got -1"),
])
def test_bad_values_are_named_before_any_work(tmp_path, params, error,
                                              message):
  model_dir = str(tmp_path / "run")
  gin.clear_config()
  try:
    with pytest.raises(error, match=message):
      launch.build_trainer(TINY, params, model_dir)
  finally:
    gin.clear_config()
  assert not os.path.exists(model_dir)


def test_moving_window_names_a_non_number_given_from_python(tmp_path):
  path = _log(tmp_path, ["1709251200,u1,30,1", "1709337600,u2,40,0"])
  with pytest.raises(ValueError, match="MovingWindow.batch_size must be a "
                     "whole number, got 'big'"):
    MovingWindow(_read(path), batch_size="big")


def test_a_missing_include_inside_a_gin_file_is_named(tmp_path):
  config = tmp_path / "exp.gin"
  config.write_text("include 'configs/small_clippy.gin'\n"
                    "include 'configs/overlays/none.gin'\n")
  gin.clear_config()
  with pytest.raises(FileNotFoundError, match=f"{config} line 2: include "
                     "'configs/overlays/none.gin'"):
    launch.parse_gin([str(config)], [])
  gin.clear_config()


def test_a_cycle_of_includes_is_named(tmp_path):
  a, b = tmp_path / "a.gin", tmp_path / "b.gin"
  a.write_text(f"include '{b}'\n")
  b.write_text(f"Trainer.max_steps = 3\ninclude '{a}'\n")
  gin.clear_config()
  with pytest.raises(ValueError, match=f"line 2: include '{a}' makes a cycle "
                     f"of includes \\({a} -> {b} -> {a}\\)"):
    launch.parse_gin([str(a)], [])
  gin.clear_config()


@pytest.mark.parametrize("line", ["import os.path", "include '/etc/x.gin'"])
def test_eval_refuses_a_model_dir_config_that_imports(tmp_path, line):
  # eval.py and export.py read a run's config through launch.run_config.
  (tmp_path / "operative_config.gin").write_text(
      f"Trainer.max_steps = 3\n{line}\n")
  with pytest.raises(ValueError, match=f"line 2: {line}.*--allow_gin_imports"):
    launch.run_config(str(tmp_path), allow_imports=False)
  assert launch.run_config(str(tmp_path), allow_imports=True).endswith(
      "operative_config.gin")


# -- (8) SIGTERM -----------------------------------------------------------------


def test_sigterm_checkpoints_the_current_step_and_a_rerun_resumes(run_copy):
  stale = os.path.join(run_copy, "summary.json")
  assert os.path.exists(stale)
  args = [sys.executable, "-u", os.path.join(ROOT, "train.py"),
          f"--model_dir={run_copy}"] + [f"--gin_file={f}" for f in TINY] + [
              "--gin_param=Trainer.summary_every_steps=10",
              "--gin_param=Trainer.max_steps=200"]
  child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
  lines = []
  for line in child.stdout:
    lines.append(line.strip())
    if line.startswith("day ") and "step 130/" in line:
      # A new or resumed run has invalidated the old summary.json.
      assert not os.path.exists(stale)
      child.send_signal(signal.SIGTERM)
      break
  rest = child.stdout.read()
  assert child.wait(timeout=600) == 0, lines + [rest]
  stopped = [l for l in rest.splitlines() if l.startswith("preempted")]
  assert len(stopped) == 1, rest
  step = int(stopped[0].split("at step ")[1].split(":")[0])
  assert 130 < step < 200 and step % 10 == 0
  assert stopped[0].endswith("; rerun the same command to resume from it")
  assert tf.train.latest_checkpoint(os.path.join(
      run_copy, "checkpoints")).endswith(f"ckpt-{step}")
  assert not os.path.exists(stale)
  assert records(run_copy, "train")[-1]["step"] == step
  again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"at step {step}" in again.stdout and "resumed from" in again.stdout
  # A quiet console: no TensorFlow start-up lines, no INFO line per
  # checkpoint written (the run wrote several).
  console = (again.stdout + again.stderr).splitlines()
  assert not [l for l in console if quiet.is_startup_noise(l) or
              l.startswith(("INFO", "I1", "I0", "WARNING:tensorflow"))], console
  with open(stale) as f:
    assert strict_loads(f.read())["final_step"] == 200
  assert math.isfinite(records(run_copy, "eval")[-1]["click/auc"])


def test_sigterm_while_the_run_is_built_leaves_no_model_dir(tmp_path):
  model_dir = str(tmp_path / "new_run")
  child = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"),
       f"--model_dir={model_dir}"] + [f"--gin_file={f}" for f in TINY],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  while not os.path.exists(model_dir):  # the build has started
    assert child.poll() is None, child.stderr.read()
    time.sleep(0.05)
  child.send_signal(signal.SIGTERM)
  _, stderr = child.communicate(timeout=600)
  assert child.returncode == 1
  assert "stopped by SIGTERM outside the training loop" in stderr
  assert not os.path.exists(model_dir)


def test_an_unwritable_metrics_file_fails_before_anything_changes(run_copy):
  # Tests run as root, which file modes do not stop: a directory in the
  # file's place cannot be appended to either.
  metrics = os.path.join(run_copy, "metrics.jsonl")
  os.remove(metrics)
  os.makedirs(metrics)
  before = snapshot(run_copy)
  with pytest.raises(IsADirectoryError, match="metrics.jsonl"):
    train(run_copy, ["Trainer.max_steps=160"])
  assert snapshot(run_copy) == before
