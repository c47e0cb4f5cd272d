"""Self-healing: roll a blown-up run back, skip the batches, go on.

The recipe large-model teams run by hand (PaLM: restart ~100 steps before
the spike and skip 200-500 batches; OPT: also lower the learning rate),
automated. It is exact because the stream is a pure function of its
position: skipping M batches is moving the step counter M ahead, so the skip
is part of the checkpointed state and a resumed run replays it exactly.

The trainer calls `Recovery.check` at loop boundaries (after the host loop
and after an evaluation); the compiled loop is unchanged. A rollback is
triggered by a blow-up (ranking/stability.py: a task's loss above
blowup_factor x its recent level) or by any full divergence, including
non-finite weights after an update. It restores the newest restore point
at least `rollback_steps` before the spike (the oldest one kept before the
spike when none is that old), skips `skip_batches` batches from there (and
at least the spike's own batch), optionally
multiplies the learning rates by `lr_factor` for `lr_factor_steps` steps,
and goes on. After `max_rollbacks` the run is left to the detector (and
stops if it diverges).

Restore points: every `restore_every_steps` steps the state (weights,
optimizer slots, the monitor, the step) is written to host memory (TF's
ram:// file system, the checkpoint format), and the periodic checkpoints on
disk are restore points too. Memory holds only the snapshots since the
newest periodic checkpoint or rollback, which is what a run resumed from
that checkpoint knows as well: a killed and resumed run picks the same
restore points. A SIGTERM checkpoint (off the periodic grid) writes the
memory snapshots beside it, and the resumed run reads them back.

This module's own state (rollbacks, batches skipped, the learning-rate
factor, the event log) is checkpointed with the run but is not part of the
restore points, so a rollback does not forget the rollbacks before it.
"""

import itertools
import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Tuple

import gin
import tensorflow as tf

from ranking import integrity

_RING = "ram://restore_points"
_ids = itertools.count()


def skipped_in_all(events) -> int:
  """Batches skipped by a sequence of rollbacks, counted once: a rollback
  to step t undoes what came after t, skips included."""
  spans = []
  for event in events:
    t, resume = event["restored_step"], event["resumed_at_step"]
    spans = [(a, min(b, t)) for a, b in spans if a < t]
    spans.append((t, resume))
  return sum(b - a for a, b in spans)


@gin.configurable
class Recovery(tf.Module):
  """The rollback policy, its restore points and its checkpointed state."""

  def __init__(self, enabled: bool = False, rollback_steps: int = 100,
               restore_every_steps: int = 25, skip_batches: int = 200,
               max_rollbacks: int = 3, lr_factor: float = 1.0,
               lr_factor_steps: int = 0):
    """Args:
      enabled: roll back on a blow-up or a divergence (off: only detect).
      rollback_steps: N, restore a point at least this many steps before
        the spike.
      restore_every_steps: K, a snapshot in memory every K steps.
      skip_batches: M, batches of the stream skipped from the restored step
        (at least up to the spike's own batch).
      max_rollbacks: the retry budget of the whole run.
      lr_factor: learning rates x this after a rollback (1: unchanged); a
        rollback while a factor is in force multiplies it again.
      lr_factor_steps: for this many steps after it.
    """
    super().__init__(name="recovery")
    for name, value in (("rollback_steps", rollback_steps),
                        ("skip_batches", skip_batches),
                        ("max_rollbacks", max_rollbacks),
                        ("lr_factor_steps", lr_factor_steps)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Recovery.{name} must be a whole number >= 0, got "
                         f"{value!r}.")
    if (isinstance(restore_every_steps, bool) or
        not isinstance(restore_every_steps, int) or restore_every_steps < 1):
      raise ValueError("Recovery.restore_every_steps must be a whole number "
                       f">= 1, got {restore_every_steps!r}.")
    if not (isinstance(lr_factor, (int, float)) and 0 < lr_factor):
      raise ValueError(f"Recovery.lr_factor must be > 0, got {lr_factor!r}.")
    if lr_factor != 1 and not lr_factor_steps:
      raise ValueError(f"Recovery.lr_factor = {lr_factor} needs "
                       "Recovery.lr_factor_steps > 0 (how long it lasts).")
    self.enabled = enabled
    self.rollback_steps, self.every = rollback_steps, restore_every_steps
    self.skip_batches, self.max_rollbacks = skip_batches, max_rollbacks
    self.lr_factor, self.lr_factor_steps = float(lr_factor), lr_factor_steps
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.rollbacks = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 aggregation=agg)
    self.lr_scale = tf.Variable(1.0, trainable=False, aggregation=agg)
    self.lr_scale_until = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                      aggregation=agg)
    self.events = tf.Variable("[]", trainable=False, aggregation=agg)
    self._ring_dir = f"{_RING}/{os.getpid()}-{next(_ids)}"
    self._ring: List[int] = []
    self._spent_logged = False
    self._no_point_logged = None

  def attach(self, state: tf.train.Checkpoint, step: tf.Variable,
             checkpoint_dir: str, periodic_every: int,
             log: Callable[[str], None], writes: bool = True):
    """`state`: what a rollback restores (not this module), `step` among
    it; `periodic_every`: the trainer's checkpoint period; `writes`: False
    on a worker other than the chief, which only reads checkpoint_dir."""
    self._state, self._step, self._dir = state, step, checkpoint_dir
    self._periodic, self.log, self._writes = periodic_every, log, writes

  # -- restore points --------------------------------------------------------

  def steps_to_boundary(self, step: int) -> int:
    """Steps until the next snapshot or the end of a learning-rate factor."""
    n = self.every - step % self.every
    until = int(self.lr_scale_until.numpy())
    if until > step:
      n = min(n, until - step)
    return n

  def before_loop(self, step: int):
    """Snapshots the state at `step` if it is a restore point; ends an
    elapsed learning-rate factor (True: the rates must be re-applied)."""
    changed = False
    until = int(self.lr_scale_until.numpy())
    if until >= 0 and step >= until:
      self.lr_scale.assign(1.0)
      self.lr_scale_until.assign(-1)
      self.log(f"step {step}: learning rates back to the configured ones")
      changed = True
    if self.enabled and step % self.every == 0:
      self._snapshot(step)
    return changed

  def _snapshot(self, step):
    if step in self._ring:
      return
    self._state.write(f"{self._ring_dir}/ckpt-{step}")
    self._ring.append(step)
    keep = self.rollback_steps // self.every + 2
    while len(self._ring) > keep:
      self._drop(self._ring.pop(0))

  def _drop(self, step):
    for path in tf.io.gfile.glob(f"{self._ring_dir}/ckpt-{step}.*"):
      tf.io.gfile.remove(path)

  def clear(self):
    """Forgets the memory snapshots (after a periodic save or a rollback:
    the disk now holds what a resumed run would know)."""
    for step in self._ring:
      self._drop(step)
    self._ring = []
    persisted = self._persisted_dir()
    if self._writes and os.path.isdir(persisted):
      shutil.rmtree(persisted)

  def _persisted_dir(self):
    return os.path.join(self._dir, "restore_points")

  def persist(self, at_step: int):
    """Writes the memory snapshots beside the SIGTERM checkpoint of
    `at_step`, so that the resumed run has them too."""
    target = self._persisted_dir()
    if os.path.isdir(target):
      shutil.rmtree(target)
    if not self._ring:
      return
    os.makedirs(target + ".tmp", exist_ok=True)
    for step in self._ring:
      for path in tf.io.gfile.glob(f"{self._ring_dir}/ckpt-{step}.*"):
        tf.io.gfile.copy(path, os.path.join(target + ".tmp",
                                            os.path.basename(path)))
    with open(os.path.join(target + ".tmp", "anchor"), "w") as f:
      json.dump({"checkpoint_step": at_step, "steps": self._ring}, f)
    os.replace(target + ".tmp", target)

  def load(self, restored_step: Optional[int]):
    """At the start of a run: the restore points an uninterrupted run would
    hold now. Reads back the snapshots persisted with the checkpoint that
    was restored (others are stale and removed); a checkpoint written right
    after a rollback is its resume point, which a rollback snapshots."""
    self._ring = []
    if self._writes and os.path.isdir(self._persisted_dir() + ".tmp"):
      shutil.rmtree(self._persisted_dir() + ".tmp")
    if self._read_persisted(restored_step):
      return
    events = self._events()
    if (self.enabled and events and
        events[-1]["resumed_at_step"] == restored_step and
        restored_step % self._periodic):
      self._snapshot(restored_step)

  def _read_persisted(self, restored_step) -> bool:
    target = self._persisted_dir()
    if not os.path.isdir(target):
      return False
    try:
      with open(os.path.join(target, "anchor")) as f:
        anchor = json.load(f)
      steps = [int(s) for s in anchor["steps"]]
      matches = anchor["checkpoint_step"] == restored_step
    except (OSError, ValueError, KeyError, TypeError) as e:
      self.log(f"ignoring {target}: {integrity.describe_error(e)}")
      matches = False
    if not matches:
      if self._writes:
        shutil.rmtree(target)
      return False
    for step in steps:
      for path in tf.io.gfile.glob(os.path.join(target, f"ckpt-{step}.*")):
        tf.io.gfile.copy(path, f"{self._ring_dir}/{os.path.basename(path)}",
                         overwrite=True)
    self._ring = steps
    self.log(f"read {len(steps)} restore point(s) kept with the SIGTERM "
             f"checkpoint (steps {', '.join(map(str, steps))})")
    return True

  def _restore_points(self) -> List[Tuple[int, str, str]]:
    """[(step, path, 'memory' | 'disk')], newest first."""
    points = [(s, f"{self._ring_dir}/ckpt-{s}", "memory") for s in self._ring]
    points += [(s, p, "disk") for s, p in integrity.checkpoint_candidates(
        self._dir) if s % self._periodic == 0]
    return sorted(points, reverse=True)

  # -- the policy -------------------------------------------------------------

  def trigger(self, monitor, state_finite: bool,
              step: int) -> Optional[Tuple[int, str]]:
    """(spike step, why) if the run should roll back now, else None."""
    if not self.enabled:
      return None
    found = list(monitor.findings())
    if not state_finite:
      found.append((step, "non-finite weights or optimizer state after an "
                    "update"))
    if monitor.blew_up:
      i = int(monitor.open_blowup_task.numpy())
      found.append((int(monitor.open_blowup_step.numpy()),
                    f"{monitor.tasks[i].name}: loss blew up to "
                    f"{float(monitor.peak_ratio.numpy()[i]):.3g}x its recent "
                    "level"))
    if not found:
      return None
    if int(self.rollbacks.numpy()) >= self.max_rollbacks:
      if not self._spent_logged:
        self.log(f"step {step}: {min(found)[1]}, but the rollback budget "
                 f"({self.max_rollbacks}) is spent: not rolling back")
        self._spent_logged = True
      return None
    return min(found)

  def target_for(self, spike: int):
    """(step, path, 'memory' | 'disk', at least N before) of the restore
    point a spike at `spike` goes back to; None if there is none before
    it."""
    points = [p for p in self._restore_points() if p[0] < spike]
    if not points:
      return None
    older = [p for p in points if p[0] <= spike - self.rollback_steps]
    return (older[0] if older else points[-1]) + (bool(older),)

  def roll_back(self, spike: int, why: str, step: int,
                total_steps: int) -> Optional[Dict]:
    """Restores the state of a restore point before `spike`, moves the step
    past the skipped batches and records the event; None when there is no
    restore point before the spike."""
    chosen = self.target_for(spike)
    if chosen is None:
      if self._no_point_logged != spike:
        self.log(f"step {step}: {why} at step {spike}; no restore point "
                 "before it: not rolling back")
        self._no_point_logged = spike
      return None
    target, path, where, older = chosen
    # A disk checkpoint also holds this module's record: not restored.
    self._state.read(path).expect_partial().assert_existing_objects_matched()
    # Checkpoints after the target are a future that is rolled back (one
    # written on SIGTERM, say): a resume must not pick them.
    integrity.discard_checkpoints_after(self._dir, target)
    self.clear()
    # M batches from the target, and at least the spike's own batch.
    resume = min(max(target + self.skip_batches, spike), total_steps)
    self._step.assign(resume)
    if resume % self._periodic:
      self._snapshot(resume)  # the resume point is a restore point
    count = int(self.rollbacks.numpy()) + 1
    self.rollbacks.assign(count)
    event = {"rollback": count, "detected_at_step": step,
             "spike_step": spike, "reason": why, "restored_step": target,
             "restored_from": where, "skipped_batches": resume - target,
             "resumed_at_step": resume}
    if self.lr_factor != 1.0 and self.lr_factor_steps:
      # A rollback while a factor is in force compounds it (OPT lowered the
      # rate again at each restart).
      scale = float(self.lr_scale.numpy()) * self.lr_factor
      self.lr_scale.assign(scale)
      self.lr_scale_until.assign(resume + self.lr_factor_steps)
      event.update(lr_scale=scale,
                   lr_scale_until_step=resume + self.lr_factor_steps)
    events = self._events() + [event]
    self.events.assign(json.dumps(events))
    self.log(
        f"rollback {count}/{self.max_rollbacks} at step {step}: {why} at step "
        f"{spike}; restored step {target} (from {where}"
        + (f", the oldest restore point: none is {self.rollback_steps} steps "
           "before the spike" if not older else "")
        + f"), skipped {resume - target} batches (those of steps "
        f"{target + 1}..{resume}), going on from step {resume}"
        + (f"; learning rates x{event['lr_scale']:g} until step "
           f"{resume + self.lr_factor_steps}" if "lr_scale" in event else ""))
    return event

  def _events(self) -> List[Dict]:
    return json.loads(self.events.numpy().decode())

  def skipped_batches(self) -> int:
    """Batches of the stream the run never trained on, so far."""
    return skipped_in_all(self._events())

  def summary(self) -> Dict:
    return {"enabled": self.enabled,
            "rollbacks": int(self.rollbacks.numpy()),
            "skipped_batches": self.skipped_batches(),
            "events": self._events()}

  def close(self):
    """Frees the memory snapshots."""
    for step in self._ring:
      self._drop(step)
    self._ring = []
