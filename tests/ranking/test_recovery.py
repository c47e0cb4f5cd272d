"""Self-healing training: restore points, rollback + skip, exact resume.

On the tiny config (200 steps): corrupted batches (data/faults.py) make an
unprotected run diverge; the protected run rolls back, skips them and ends
where a clean run ends; killed or preempted after a rollback, it resumes to
the very same weights."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ranking.recovery import Recovery
from ranking.stability import StabilityMonitor
from ranking.tasks import Task
from ranking.trainer import Preempted
from tests.runs import TINY, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# The tiny run is 200 steps: the policy is scaled down with it (PaLM's
# 100 / 200-500 steps are for runs of 1e5 steps).
PROTECT = ["Recovery.enabled = True", "Recovery.rollback_steps = 5",
           "Recovery.restore_every_steps = 5", "Recovery.skip_batches = 8"]
FAULT = ["MovingWindow.faults = @CorruptBatches()",
         "CorruptBatches.steps = (100, 101, 102)"]
TWO_FAULTS = ["MovingWindow.faults = @CorruptBatches()",
              "CorruptBatches.steps = (100, 101, 102, 146)"]


def train_subprocess(model_dir, params):
  args = [sys.executable, os.path.join(ROOT, "train.py"),
          f"--model_dir={model_dir}"] + [f"--gin_file={f}" for f in TINY]
  args += [f"--gin_param={p}" for p in params]
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


def final_state(model_dir):
  """Every tensor of the final checkpoint (weights, slots, monitor, the
  recovery record), by name."""
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints",
                                                 "ckpt-200"))
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if "save_counter" not in name}


def assert_same_state(a, b):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- restore points, by hand ----------------------------------------------------


def test_the_newest_restore_point_at_least_n_steps_before_the_spike(tmp_path):
  x = tf.Variable(0.0)
  step = tf.Variable(0, dtype=tf.int64)
  recovery = Recovery(enabled=True, rollback_steps=7, restore_every_steps=5,
                      skip_batches=12)
  lines = []
  recovery.attach(tf.train.Checkpoint(x=x, step=step), step, str(tmp_path),
                  100, lines.append)
  monitor = StabilityMonitor(tasks=[Task("click", "binary")])
  for s in range(0, 20):
    step.assign(s)
    x.assign(float(s))
    recovery.before_loop(s)  # snapshots at 0, 5, 10, 15
  assert recovery.trigger(monitor, True, 19) is None  # nothing to heal
  trigger = recovery.trigger(monitor, False, 16)
  assert trigger == (16, "non-finite weights or optimizer state after an "
                     "update")
  event = recovery.roll_back(*trigger, step=16, total_steps=100)
  # Newest snapshot at <= 16 - 7 = 9: step 5; then batches 6..17 skipped.
  assert float(x.numpy()) == 5.0 and int(step.numpy()) == 17
  assert event["restored_step"] == 5 and event["resumed_at_step"] == 17
  assert event["restored_from"] == "memory"
  assert recovery.summary()["rollbacks"] == 1
  assert recovery.summary()["skipped_batches"] == 12
  assert any("skipped 12 batches (those of steps 6..17)" in l for l in lines)
  # The snapshots are forgotten but for the resume point, 17: none is
  # before a spike at 16 (never restore a state from after the spike).
  assert recovery.roll_back(16, "again", step=16, total_steps=100) is None
  assert any("no restore point before it" in l for l in lines)
  with pytest.raises(ValueError, match="restore_every_steps"):
    Recovery(restore_every_steps=0)
  with pytest.raises(ValueError, match="lr_factor_steps"):
    Recovery(lr_factor=0.5)


def test_the_skip_covers_the_spike_the_budget_and_the_lr_factor(tmp_path):
  x = tf.Variable(0.0)
  step = tf.Variable(0, dtype=tf.int64)
  recovery = Recovery(enabled=True, rollback_steps=0, restore_every_steps=1,
                      skip_batches=1, max_rollbacks=2, lr_factor=0.5,
                      lr_factor_steps=10)
  lines = []
  recovery.attach(tf.train.Checkpoint(x=x, step=step), step, str(tmp_path),
                  100, lines.append)
  monitor = StabilityMonitor(tasks=[Task("click", "binary")])
  recovery.before_loop(0)
  first = recovery.roll_back(3, "spike", step=3, total_steps=100)
  # Restored step 0, 1 batch to skip, but the spike's batch (step 3) too.
  assert first["resumed_at_step"] == 3 and first["skipped_batches"] == 3
  assert first["lr_scale"] == 0.5 and first["lr_scale_until_step"] == 13
  recovery.before_loop(1)
  second = recovery.roll_back(3, "spike", step=3, total_steps=100)
  assert second["restored_step"] == 1
  assert second["lr_scale"] == 0.25  # inside the first factor's steps
  assert recovery.trigger(monitor, False, 4) is None  # budget spent
  assert any("rollback budget (2) is spent" in l for l in lines)
  assert recovery.steps_to_boundary(5) == 1
  recovery.before_loop(13)  # the factor's last step
  assert float(recovery.lr_scale.numpy()) == 1.0


def test_skipped_batches_are_counted_once_across_rollbacks():
  from ranking.recovery import skipped_in_all  # pylint: disable=g-import-not-at-top
  # 91 -> 100, then back to 80 (undoing the first) -> 101, again -> 102:
  # steps 81..102 were never trained on.
  events = [{"restored_step": 91, "resumed_at_step": 100},
            {"restored_step": 80, "resumed_at_step": 101},
            {"restored_step": 80, "resumed_at_step": 102}]
  assert skipped_in_all(events) == 22
  # Disjoint rollbacks add up.
  assert skipped_in_all([{"restored_step": 10, "resumed_at_step": 15},
                         {"restored_step": 50, "resumed_at_step": 58}]) == 13


def test_corrupt_batches_hits_the_steps_as_logged():
  from data.faults import CorruptBatches  # pylint: disable=g-import-not-at-top
  from data.schema import Label, Schema  # pylint: disable=g-import-not-at-top
  schema = Schema(labels=(Label("click", "binary"),
                          Label("time", "regression")))
  rows = {"click": tf.constant([1.0, 0.0]), "time": tf.constant([2.0, 3.0])}
  faults = CorruptBatches(steps=(5,), label_scale=10.0)
  hit = faults(tf.constant(4, tf.int64), rows, schema)  # batch 4: step 5
  np.testing.assert_array_equal(hit["click"], [0.0, 1.0])
  np.testing.assert_array_equal(hit["time"], [20.0, 30.0])
  miss = faults(tf.constant(5, tf.int64), rows, schema)
  np.testing.assert_array_equal(miss["time"], [2.0, 3.0])
  nan = CorruptBatches(steps=(1,), nonfinite=True)(
      tf.constant(0, tf.int64), rows, schema)
  assert np.isnan(nan["time"]).all()
  for steps in ((), (0,), (1.5,)):
    with pytest.raises(ValueError, match="CorruptBatches.steps"):
      CorruptBatches(steps=steps)


def test_a_rollback_discards_the_future_and_the_newest_save_is_named(
    tmp_path):
  from ranking import integrity  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "checkpoints")
  checkpoint = tf.train.Checkpoint(x=tf.Variable(1.0))
  for step in (40, 80, 95):  # 95: a SIGTERM checkpoint, off the grid
    integrity.save_checkpoint(checkpoint, directory, step, keep=3, every=40)
  assert integrity.discard_checkpoints_after(directory, 85) == [
      os.path.join(directory, "ckpt-95")]
  # After the rollback to 85 the run goes on from 87: that is the newest.
  integrity.save_checkpoint(checkpoint, directory, 87, keep=3, every=40)
  assert [s for s, _ in integrity.checkpoint_candidates(directory)] == [
      87, 80, 40]
  assert tf.train.latest_checkpoint(directory).endswith("ckpt-87")
  for step in (120, 160, 200):  # three periodic ones, and 87 goes
    integrity.save_checkpoint(checkpoint, directory, step, keep=3, every=40)
  assert [s for s, _ in integrity.checkpoint_candidates(directory)] == [
      200, 160, 120]


# -- on the tiny config -----------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("recovery")
  out = {}
  for name, params in [("clean", []), ("unprotected", FAULT),
                       ("protected", FAULT + PROTECT),
                       ("two_faults", TWO_FAULTS + PROTECT)]:
    model_dir = str(root / name)
    out[name] = (model_dir,) + train(model_dir, params)
  return out


def test_corrupted_batches_make_the_unprotected_run_diverge(runs):
  _, summary, _ = runs["unprotected"]
  assert summary["diverged"]
  assert summary["diverged_at_step"] == 100
  assert summary["divergence_reason"].startswith("rating: loss above 10x")
  assert summary["recovery"] == {"enabled": False, "rollbacks": 0,
                                 "skipped_batches": 0, "events": []}


def test_the_protected_run_heals_and_ends_where_the_clean_one_does(runs):
  clean = runs["clean"][1]["final_metrics"]["click/auc"]
  model_dir, summary, lines = runs["protected"]
  assert not summary["diverged"] and summary["final_step"] == 200
  auc = summary["final_metrics"]["click/auc"]
  assert abs(auc / clean - 1) < 0.005, (auc, clean)
  (event,) = summary["recovery"]["events"]
  # Blown up at step 100 (batch 99), seen at the loop boundary 100; back
  # to the snapshot of step 95 (>= 5 before), batches of 96..103 skipped.
  assert event == {"rollback": 1, "detected_at_step": 100,
                   "spike_step": 100, "reason": event["reason"],
                   "restored_step": 95, "restored_from": "memory",
                   "skipped_batches": 8, "resumed_at_step": 103}
  assert "loss blew up" in event["reason"]
  assert summary["recovery"]["skipped_batches"] == 8
  # The rollback undid the weights, not the record of what happened.
  assert summary["blowups"]["watch_time"]["first_step"] == 100
  assert any(l.startswith("rollback 1/3 at step 100:") for l in lines)
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    records = [json.loads(l) for l in f]
  (logged,) = [r for r in records if r["split"] == "recovery"]
  assert logged["restored_step"] == 95 and logged["resumed_at_step"] == 103
  # The spike's losses stay on record; training goes on from step 103.
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert 100 in train_steps and 120 in train_steps
  assert os.listdir(os.path.join(model_dir, "recovery"))  # TensorBoard


def test_killed_after_a_rollback_the_resumed_run_ends_identically(
    runs, tmp_path):
  model_dir = str(tmp_path / "killed")
  params = TWO_FAULTS + PROTECT
  # SIGKILL at step 115: after the first rollback (at 100), before the
  # periodic checkpoint of step 120.
  killed = train_subprocess(model_dir, params + ["Trainer.crash_at_step=115"])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  resumed = train_subprocess(model_dir, params)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from" in resumed.stdout + resumed.stderr
  with open(os.path.join(model_dir, "summary.json")) as f:
    summary = json.load(f)
  reference = runs["two_faults"][1]
  assert summary["recovery"] == reference["recovery"]
  assert summary["recovery"]["rollbacks"] == 2
  assert_same_state(final_state(model_dir),
                    final_state(runs["two_faults"][0]))


def test_preempted_after_a_rollback_the_resumed_run_ends_identically(
    runs, tmp_path):
  model_dir = str(tmp_path / "preempted")
  params = TWO_FAULTS + PROTECT

  def sigterm_at_145(trainer):
    real = trainer._train_loop  # pylint: disable=protected-access

    def loop(iterator, steps):
      result = real(iterator, steps)
      if int(trainer.global_step.numpy()) == 145:
        trainer._stop_signal = signal.SIGTERM  # pylint: disable=protected-access
      return result

    trainer._train_loop = loop  # pylint: disable=protected-access

  stopped, _ = train(model_dir, params, trainer_hook=sigterm_at_145)
  assert isinstance(stopped, Preempted) and stopped.step == 145
  # Off the periodic grid: the snapshots in memory go with it (the newest
  # N / K + 2 = 3 of those since the checkpoint of step 120).
  kept = os.path.join(model_dir, "checkpoints", "restore_points")
  with open(os.path.join(kept, "anchor")) as f:
    assert json.load(f) == {"checkpoint_step": 145,
                            "steps": [130, 135, 140]}
  summary, lines = train(model_dir, params)
  assert any("read 3 restore point(s)" in l for l in lines), lines
  # The second spike (step 146) goes back to step 140, a snapshot taken
  # before the preemption.
  second = summary["recovery"]["events"][1]
  assert second["restored_step"] == 140 and second["restored_from"] == "memory"
  assert summary["recovery"] == runs["two_faults"][1]["recovery"]
  assert_same_state(final_state(model_dir),
                    final_state(runs["two_faults"][0]))
  assert not os.path.exists(kept)  # gone at the next periodic checkpoint
