"""Divergence detection, per task, in the graph and cheap (paper section 3).

Every step, inside the compiled loop, on each task's loss (global batch):
  - a non-finite step: a non-finite loss or gradient (any gradient whose
    sum of squares is not finite, so g^2 in the accumulator cannot overflow
    either); the step's gradients are zeroed and it is counted;
  - micro-divergence: a loss above `micro_factor` x its recent level, once
    `warmup_steps` steps have set that level;
  - blow-up: a loss above `blowup_factor` x its recent level and above the
    untrained model's loss (the first step's; or 100x the level if that is
    lower, so a corrupt first batch sets no floor), from the very first step (an
    early blow-up counts: the level starts at the untrained model's loss).
    A rare label's loss is far below the untrained model's, and one batch
    of 128 holding a positive is 10-50x its level (KuaiRand's 0.7% forwards:
    10 such batches in a row were once taken for an explosion);
  - explosion: a blow-up for `explosion_patience_steps` steps in a row (at a
    learning rate of 1e4 the loss reaches ~1e33 and stays finite).
  The recent level is an exponential moving average whose input is clipped
  at `micro_factor` x the level, and which is never above `micro_factor` x
  the step's loss: a spike does not raise the level it is judged against,
  a lasting shift still moves it, and a level seeded by a bad first batch
  comes down at the next step (the bad first batch itself has no level to
  be judged against, and is not seen).
After each evaluation, in Python, per task:
  - binary: the held-out AUC falls to <= `auc_floor` after having reached
    >= `auc_ceiling`; or the task has collapsed: AUC <= `auc_floor` with
    predictions that hardly depend on the input (std of the predicted
    probability < `collapse_std` x 2 sqrt(m (1 - m)), m their mean, so
    0.01 at m = 0.5 and less for a rare event; dead units). For the first
    binary task with patience (below); for the others only at the final
    evaluation: a rare event's AUC is noisy, and its head can sit at the
    base rate for hundreds of steps before it learns (AGC on Large in the
    CPU Table 2: like, share, comment at AUC ~0.5, std < 0.001, until step
    ~200, then 0.61-0.66);
  - regression: the held-out RMSE above `rmse_factor` x the lower of the
    untrained model's (the square root of the task's first loss) and the
    best held-out RMSE so far;
  - any task: non-finite predictions.
  A binary task with fewer than `min_auc_examples` positives or negatives
  on the evaluation day (the trainer counts them when it builds) is left
  out of the AUC findings: KuaiRand's evaluation day has 7 follows, whose
  AUC swings by 0.1 between evaluations of a healthy model.
  A fall, a collapse or an RMSE blow-up counts once it has lasted
  `collapse_patience_steps` (or is still there at the final evaluation)
  and dates from its first evaluation: early on a healthy model can predict
  the base rate for a moment, and at a shift of the data every AUC can dip
  for one evaluation (Small, naive, in the CPU Table 2 at step 300).
  - an unrecovered blow-up: a blow-up after which no evaluation is healthy
    (the first binary task's AUC >= `auc_ceiling`; without binary tasks,
    every RMSE at most the untrained model's) within
    `collapse_patience_steps`, or by the end. It dates from the blow-up.
    A model merely slow to learn is not flagged (it never blew up), nor is
    a blow-up the model comes back from (a micro-divergence, at a larger
    scale).
Full divergence: a non-finite step, an explosion, non-finite weights or
optimizer state after an update (checked by the trainer), or any of the
evaluation findings. The state lives in variables, so it is checkpointed
and resumes exactly; ranking/recovery.py reads it to roll a run back.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf

from ranking.tasks import Task

_NONE = -1
# A blow-up must also pass the untrained model's loss, or this many times
# the recent level where that is lower.
_FLOOR_LEVELS = 100.0


@gin.configurable
class StabilityMonitor(tf.Module):
  """Running per-task statistics of the loss, and the divergence verdict."""

  def __init__(self, tasks: Sequence[Task] = (Task("loss", "binary"),),
               micro_factor: float = 2.0, blowup_factor: float = 10.0,
               ema_decay: float = 0.99, warmup_steps: int = 20,
               auc_floor: float = 0.55, auc_ceiling: float = 0.6,
               collapse_std: float = 0.01, rmse_factor: float = 10.0,
               collapse_patience_steps: int = 100,
               explosion_patience_steps: int = 10,
               min_auc_examples: int = 100):
    super().__init__(name="stability")
    if not tasks:
      raise ValueError("StabilityMonitor needs at least one task.")
    if not micro_factor > 1:
      raise ValueError(f"micro_factor must be > 1, got {micro_factor}.")
    if not blowup_factor > 1:
      raise ValueError(f"blowup_factor must be > 1, got {blowup_factor}.")
    if not rmse_factor > 1:
      raise ValueError(f"rmse_factor must be > 1, got {rmse_factor}.")
    if not 0 <= ema_decay < 1:
      raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
    if explosion_patience_steps < 1:
      raise ValueError("explosion_patience_steps must be >= 1, got "
                       f"{explosion_patience_steps}.")
    if min_auc_examples < 1:
      raise ValueError("min_auc_examples must be >= 1, got "
                       f"{min_auc_examples}.")
    if collapse_patience_steps < 0:
      raise ValueError("collapse_patience_steps must be >= 0, got "
                       f"{collapse_patience_steps}.")
    self.tasks = tuple(tasks)
    binary = [i for i, t in enumerate(self.tasks) if t.kind == "binary"]
    self._primary = binary[0] if binary else None
    self.micro_factor, self.blowup_factor = micro_factor, blowup_factor
    self.ema_decay, self.warmup_steps = ema_decay, warmup_steps
    self.auc_floor, self.auc_ceiling = auc_floor, auc_ceiling
    self.collapse_std, self.rmse_factor = collapse_std, rmse_factor
    self.collapse_patience = collapse_patience_steps
    self.explosion_patience = explosion_patience_steps
    self.min_auc_examples = min_auc_examples
    # Binary tasks whose AUC is not judged: too few examples of a class on
    # the evaluation day (set_eval_counts).
    self.unjudged = frozenset()
    n = len(self.tasks)
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA

    def var(value, dtype):
      return tf.Variable(tf.constant(value, dtype), trainable=False,
                         aggregation=agg)

    def steps():
      return var([_NONE] * n, tf.int64)

    # Per step (in the graph).
    self.level = var([0.0] * n, tf.float32)
    self.first_loss = var([0.0] * n, tf.float32)
    self.finite_steps = var(0, tf.int64)
    self.micro = var([0] * n, tf.int64)
    self.blowups = var([0] * n, tf.int64)
    self.first_blowup_step = steps()
    self.peak_ratio = var([0.0] * n, tf.float32)
    self.explosion_streak = var([0] * n, tf.int64)
    self.explosion_step = steps()
    self.open_blowup_step = var(_NONE, tf.int64)
    self.open_blowup_task = var(0, tf.int64)
    self.nonfinite_steps = var(0, tf.int64)
    self.first_nonfinite_step = var(_NONE, tf.int64)
    self.nonfinite_loss_step = steps()
    # Per evaluation and per update (in Python).
    self.nonfinite_state_step = var(_NONE, tf.int64)
    self.best_auc = var([0.0] * n, tf.float32)
    self.best_rmse = var([0.0] * n, tf.float32)
    self.fall_candidate = steps()
    self.auc_collapse_step = steps()
    self.collapse_candidate = steps()
    self.collapse_step = steps()
    self.rmse_candidate = steps()
    self.rmse_blowup_step = steps()
    self.nonfinite_eval_step = steps()
    self.unrecovered_step = var(_NONE, tf.int64)
    self.unrecovered_task = var(0, tf.int64)

  # -- every step, in the graph ---------------------------------------------

  def observe(self, losses, step, finite: Optional[tf.Tensor] = None):
    """Updates the statistics with one step's per-task (global) losses, in
    the order of `tasks`; `finite`: the step's losses and gradients were
    finite (default: the losses are)."""
    n = len(self.tasks)
    losses = tf.reshape(tf.cast(losses, tf.float32), [n])
    step = tf.cast(step, tf.int64)
    loss_finite = tf.math.is_finite(losses)
    finite = tf.reduce_all(loss_finite) if finite is None else finite
    safe = tf.where(loss_finite, losses, 0.0)
    seed = self.finite_steps == 0
    level = tf.where(seed, safe, self.level)
    ratio = tf.math.divide_no_nan(safe, level)
    warm = self.finite_steps >= self.warmup_steps
    micro = finite & warm & (ratio > self.micro_factor)
    # ... and above the untrained model's loss (or, after a corrupt first
    # batch, _FLOOR_LEVELS x the level): a rare label's loss sits far below
    # it, and a batch holding one positive is 10-50x its level.
    # (At the seeding step the ratio is 1: no blow-up, whatever the floor.)
    floor = tf.minimum(self.first_loss, _FLOOR_LEVELS * level)
    blowup = finite & (ratio > self.blowup_factor) & (safe > floor)
    self.micro.assign_add(tf.cast(micro, tf.int64))
    self.blowups.assign_add(tf.cast(blowup, tf.int64))
    self.first_blowup_step.assign(tf.where(
        blowup & (self.first_blowup_step < 0), step, self.first_blowup_step))
    self.peak_ratio.assign(tf.where(
        blowup, tf.maximum(self.peak_ratio, ratio), self.peak_ratio))
    streak = tf.where(blowup, self.explosion_streak + 1, 0)
    self.explosion_streak.assign(streak)
    self.explosion_step.assign(tf.where(
        (self.explosion_step < 0) & (streak >= self.explosion_patience),
        step - streak + 1, self.explosion_step))
    opens = tf.reduce_any(blowup) & (self.open_blowup_step < 0)
    self.open_blowup_task.assign(tf.where(
        opens, tf.argmax(tf.where(blowup, ratio, 0.0), output_type=tf.int64),
        self.open_blowup_task))
    self.open_blowup_step.assign(tf.where(opens, step,
                                          self.open_blowup_step))
    self.nonfinite_steps.assign_add(tf.cast(~finite, tf.int64))
    self.first_nonfinite_step.assign(tf.where(
        (~finite) & (self.first_nonfinite_step < 0), step,
        self.first_nonfinite_step))
    self.nonfinite_loss_step.assign(tf.where(
        (~loss_finite) & (self.nonfinite_loss_step < 0), step,
        self.nonfinite_loss_step))
    clipped = tf.minimum(safe, self.micro_factor * level)
    decay = self.ema_decay
    # Never above micro_factor x the loss: after a spike at the very first
    # step (a corrupt first batch) the level comes straight back down.
    moved = tf.minimum(decay * level + (1 - decay) * clipped,
                       self.micro_factor * safe)
    new_level = tf.where(seed, safe, moved)
    self.level.assign(tf.where(finite, new_level, self.level))
    self.first_loss.assign(tf.where(finite & seed, safe, self.first_loss))
    self.finite_steps.assign_add(tf.cast(finite, tf.int64))

  # -- after each evaluation and update, in Python -----------------------------

  def set_eval_counts(self, counts: Mapping[str, Sequence[int]]) -> List[str]:
    """{binary task: (positives, negatives) on the evaluation day}: a task
    with fewer than `min_auc_examples` of either class is left out of the
    AUC findings (fall, collapse), whose AUC there is noise (7 positives:
    a standard error near 0.1); returns one line per such task."""
    few = {name: (p, n) for name, (p, n) in counts.items()
           if min(p, n) < self.min_auc_examples}
    self.unjudged = frozenset(few)
    return [f"{name}: {p:,} positives and {n:,} negatives on the evaluation "
            f"day, fewer than StabilityMonitor.min_auc_examples = "
            f"{self.min_auc_examples} of a class: its AUC is reported but "
            "not judged for divergence" for name, (p, n) in few.items()]

  def observe_eval(self, results: Mapping[str, float], step: int,
                   final: bool = False):
    """Judges one evaluation's per-task metrics ("<task>/auc" or
    "<task>/rmse", "<task>/prediction_std", "<task>/prediction_mean");
    `final`: the run's last evaluation, where nothing needs patience."""
    for i, task in enumerate(self.tasks):
      value = results.get(f"{task.name}/{task.metric_name}")
      if value is None:
        continue
      if not math.isfinite(value):
        _set_once(self.nonfinite_eval_step, i, step)
        continue
      if task.kind == "binary":
        best = float(self.best_auc.numpy()[i])
        judged = task.name not in self.unjudged
        fell = judged and best >= self.auc_ceiling and value <= self.auc_floor
        std = results.get(f"{task.name}/prediction_std")
        mean = min(max(results.get(f"{task.name}/prediction_mean", 0.5),
                       0.0), 1.0)
        spread = self.collapse_std * 2 * math.sqrt(mean * (1 - mean))
        dead = (judged and std is not None and value <= self.auc_floor
                and std < spread)
        # Other binary tasks are judged at the end only: a rare event's AUC
        # is noisy, and its head can sit at the base rate for hundreds of
        # steps before it learns.
        patient = i == self._primary
        self._patiently(self.fall_candidate, self.auc_collapse_step, i,
                        fell, step, final, patient)
        self._patiently(self.collapse_candidate, self.collapse_step, i, dead,
                        step, final, patient)
        _set(self.best_auc, i, max(best, value))
      else:
        reference = self._rmse_reference(i)
        bad = reference > 0 and value > self.rmse_factor * reference
        self._patiently(self.rmse_candidate, self.rmse_blowup_step, i, bad,
                        step, final, True)
        best = float(self.best_rmse.numpy()[i])
        _set(self.best_rmse, i, value if best <= 0 else min(best, value))
    opened = int(self.open_blowup_step.numpy())
    if opened >= 0:
      if self._healthy(results):
        self.open_blowup_step.assign(_NONE)
      elif self.unrecovered_step.numpy() < 0 and (
          final or step - opened >= self.collapse_patience):
        self.unrecovered_step.assign(opened)
        self.unrecovered_task.assign(self.open_blowup_task)

  def _patiently(self, candidate, found, i, bad, step, final, patient):
    """A finding that counts once it has lasted collapse_patience_steps
    (`patient`: else only at the final evaluation), dated from its first
    evaluation."""
    if found.numpy()[i] >= 0:
      return
    if not bad:
      _set(candidate, i, _NONE)
      return
    if candidate.numpy()[i] < 0:
      _set(candidate, i, step)
    since = int(candidate.numpy()[i])
    if final or (patient and step - since >= self.collapse_patience):
      _set(found, i, since)

  def _rmse_reference(self, i) -> float:
    untrained = math.sqrt(max(float(self.first_loss.numpy()[i]), 0.0))
    best = float(self.best_rmse.numpy()[i])  # 0: no evaluation yet
    return min(untrained, best) if best > 0 else untrained

  def _healthy(self, results) -> bool:
    binary = [t for t in self.tasks if t.kind == "binary"]
    if binary:
      auc = results.get(f"{binary[0].name}/auc")
      return auc is not None and auc >= self.auc_ceiling
    for i, task in enumerate(self.tasks):
      rmse = results.get(f"{task.name}/rmse")
      if rmse is None or not rmse <= math.sqrt(
          max(float(self.first_loss.numpy()[i]), 0.0)):
        return False
    return True

  # Counts of what happened, which a rollback must not undo (the verdict's
  # own state is rolled back with the weights).
  _TALLIES = ("micro", "blowups", "first_blowup_step", "peak_ratio",
              "nonfinite_steps")

  def tallies(self):
    return {name: getattr(self, name).numpy() for name in self._TALLIES}

  def restore_tallies(self, tallies):
    for name, value in tallies.items():
      getattr(self, name).assign(value)

  def mark_nonfinite_state(self, step: int):
    """The weights or optimizer state went non-finite by `step`."""
    if self.nonfinite_state_step.numpy() < 0:
      self.nonfinite_state_step.assign(step)

  # -- the verdict -------------------------------------------------------------

  @property
  def blew_up(self) -> bool:
    """A blow-up no healthy evaluation has followed yet."""
    return int(self.open_blowup_step.numpy()) >= 0

  @property
  def diverged(self) -> bool:
    return bool(self.findings())

  def findings(self):
    """[(step, reason)] of every full divergence, earliest first."""
    names = [t.name for t in self.tasks]
    found = []
    first = int(self.first_nonfinite_step.numpy())
    if first >= 0:
      bad = [names[i] for i, s in enumerate(self.nonfinite_loss_step.numpy())
             if s >= 0]
      found.append((first, "non-finite " + (
          f"loss ({', '.join(bad)})" if bad else "gradient")))
    state = int(self.nonfinite_state_step.numpy())
    if state >= 0:
      found.append((state, "non-finite weights or optimizer state after an "
                    "update"))
    per_task = [
        (self.explosion_step, f"loss above {self.blowup_factor:g}x its "
         f"recent level for {self.explosion_patience} steps in a row"),
        (self.nonfinite_eval_step, "non-finite predictions on the held-out "
         "day"),
        (self.auc_collapse_step, f"held-out AUC fell to <= {self.auc_floor} "
         f"after >= {self.auc_ceiling}"),
        (self.collapse_step, f"collapsed: held-out AUC <= {self.auc_floor} "
         f"and prediction std < {self.collapse_std:g} x 2 sqrt(m(1-m))"),
        (self.rmse_blowup_step, f"held-out RMSE above {self.rmse_factor:g}x "
         "the untrained model's or the best")]
    for variable, why in per_task:
      for i, s in enumerate(variable.numpy()):
        if s >= 0:
          found.append((int(s), f"{names[i]}: {why}"))
    unrecovered = int(self.unrecovered_step.numpy())
    if unrecovered >= 0:
      i = int(self.unrecovered_task.numpy())
      binary = [t.name for t in self.tasks if t.kind == "binary"]
      healthy = (f"the held-out {binary[0]} AUC" if binary else
                 "no held-out RMSE")
      peak = float(self.peak_ratio.numpy()[i])
      found.append((unrecovered, f"{names[i]}: loss blew up ({peak:.3g}x its "
                    f"recent level) and {healthy} did not come back to "
                    + (f">= {self.auc_ceiling}" if binary else
                       "the untrained model's")))
    return sorted(found)

  def verdict(self) -> Dict:
    """The run summary's stability fields."""
    found = self.findings()
    names = [t.name for t in self.tasks]
    first = self.first_blowup_step.numpy()
    blowups = {names[i]: {"steps": int(count), "first_step": int(first[i]),
                          "peak_ratio": float(self.peak_ratio.numpy()[i])}
               for i, count in enumerate(self.blowups.numpy()) if count}
    binary = [i for i, t in enumerate(self.tasks) if t.kind == "binary"]
    return {
        "diverged": bool(found),
        "diverged_at_step": found[0][0] if found else None,
        "divergence_reason": "; ".join(why for _, why in found) or None,
        "micro_divergences": int(np.sum(self.micro.numpy())),
        "micro_divergences_per_task": {
            names[i]: int(c) for i, c in enumerate(self.micro.numpy())},
        "blowups": blowups,
        "nonfinite_steps": int(self.nonfinite_steps.numpy()),
        "best_eval_auc": (float(self.best_auc.numpy()[binary[0]])
                          if binary else None),
        "initial_losses": {names[i]: float(v) for i, v in
                           enumerate(self.first_loss.numpy())},
    }


def _set(variable, i, value):
  values = variable.numpy().copy()
  values[i] = value
  variable.assign(values)


def _set_once(variable, i, value):
  if variable.numpy()[i] < 0:
    _set(variable, i, value)


def step_is_finite(loss, grads) -> tf.Tensor:
  """Whether a step may be applied: its loss is finite and so is every
  gradient's sum of squares (so no entry is inf or NaN, and no g^2 fed to
  an accumulator overflows). One pass over each gradient."""
  checks = [tf.math.is_finite(loss)]
  for g in grads:
    if g is None:
      continue
    values = g.values if isinstance(g, tf.IndexedSlices) else g
    checks.append(tf.math.is_finite(tf.nn.l2_loss(values)))
  return tf.reduce_all(tf.stack(checks))


def state_is_finite(variables) -> tf.Tensor:
  """Whether every floating variable (weights, optimizer slots) is finite."""
  checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables
            if v.dtype.is_floating]
  return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def zero_if_nonfinite(finite, grads):
  """The gradients, or zeros when the step is not finite (a skipped step);
  `finite` from step_is_finite. One conditional for all of them: a finite
  step passes the gradients through untouched, without a pass over each."""
  present = [g for g in grads if g is not None]

  def zeros():
    return [tf.IndexedSlices(tf.zeros_like(g.values), g.indices,
                             g.dense_shape)
            if isinstance(g, tf.IndexedSlices) else tf.zeros_like(g)
            for g in present]

  guarded = iter(tf.cond(finite, lambda: list(present), zeros)
                 if present else [])
  return [None if g is None else next(guarded) for g in grads]
