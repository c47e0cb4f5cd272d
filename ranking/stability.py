"""Divergence detection, in the graph and cheap (paper section 3).

Per step, inside the training loop:
  - a non-finite step: a non-finite loss or gradient (any gradient whose
    sum of squares is not finite, so g^2 in the accumulator cannot overflow
    either); the step's gradients are zeroed and it is counted;
  - micro-divergence: a finite loss above `factor` times its running
    average (an exponential moving average of the losses before it);
  - explosion: a finite loss above `explosion_factor` times the run's first
    loss (the untrained model's), for `explosion_patience_steps` steps in a
    row (at a learning rate of 1e4 the loss reaches ~1e33 and stays finite).
After each evaluation, in Python:
  - full divergence: a non-finite step; an explosion; non-finite weights or
    optimizer state after an update (checked by the trainer, which then
    restores its newest checkpoint); the held-out binary AUC falling to
    <= `auc_floor` after having reached >= `auc_ceiling`; or a collapsed
    model: AUC <= `auc_floor` with predictions that hardly depend on the
    input (standard deviation of the predicted probability on the held-out
    day < `collapse_std`; dead units, which no gradient revives). A collapse
    can come before the first evaluation, so it is not required that the AUC
    was ever high. A model merely slow to learn is not flagged (its
    predictions still vary), nor is a good model of a rare event (its AUC
    is high). A collapse counts once it has lasted `collapse_patience_steps`
    (or is still there at the final evaluation), and dates from its first
    evaluation: early in training a healthy model can still predict the
    base rate for a moment (the CPU Table 2 sweep's Clippy on Large+DCN at
    2x looked so at step 49 while its loss fell like 1x's).
The state lives in variables, so it is checkpointed and resumes exactly.
"""

from typing import Dict, Optional

import gin
import tensorflow as tf


@gin.configurable
class StabilityMonitor(tf.Module):
  """Running statistics of the loss and the divergence verdict."""

  def __init__(self, micro_factor: float = 2.0, ema_decay: float = 0.99,
               warmup_steps: int = 20, auc_floor: float = 0.55,
               auc_ceiling: float = 0.6, collapse_std: float = 0.01,
               collapse_patience_steps: int = 100,
               explosion_factor: float = 1e3,
               explosion_patience_steps: int = 10):
    super().__init__(name="stability")
    if not micro_factor > 1:
      raise ValueError(f"micro_factor must be > 1, got {micro_factor}.")
    if not explosion_factor > 1:
      raise ValueError(f"explosion_factor must be > 1, got "
                       f"{explosion_factor}.")
    if explosion_patience_steps < 1:
      raise ValueError("explosion_patience_steps must be >= 1, got "
                       f"{explosion_patience_steps}.")
    self.explosion_factor = explosion_factor
    self.explosion_patience = explosion_patience_steps
    self.micro_factor = micro_factor
    self.ema_decay = ema_decay
    self.warmup_steps = warmup_steps
    self.auc_floor, self.auc_ceiling = auc_floor, auc_ceiling
    self.collapse_std = collapse_std
    if collapse_patience_steps < 0:
      raise ValueError("collapse_patience_steps must be >= 0, got "
                       f"{collapse_patience_steps}.")
    self.collapse_patience = collapse_patience_steps
    agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.loss_ema = tf.Variable(0.0, trainable=False, aggregation=agg)
    self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                    aggregation=agg)
    self.micro_divergences = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         aggregation=agg)
    self.nonfinite_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       aggregation=agg)
    self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64,
                                            trainable=False, aggregation=agg)
    self.best_auc = tf.Variable(0.0, trainable=False, aggregation=agg)
    self.auc_collapse_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                         aggregation=agg)
    self.collapse_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                     aggregation=agg)
    self.collapse_candidate_step = tf.Variable(
        -1, dtype=tf.int64, trainable=False, aggregation=agg)
    self.first_loss = tf.Variable(0.0, trainable=False, aggregation=agg)
    self.explosion_streak = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        aggregation=agg)
    self.explosion_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                      aggregation=agg)
    self.nonfinite_state_step = tf.Variable(-1, dtype=tf.int64,
                                            trainable=False, aggregation=agg)

  def observe(self, loss: tf.Tensor, step: tf.Tensor,
              finite: Optional[tf.Tensor] = None):
    """Updates the statistics with one step's (global) loss; `finite`: the
    step's loss and gradients were finite (default: the loss is). In-graph.
    """
    finite = tf.math.is_finite(loss) if finite is None else finite
    loss = tf.where(finite, loss, 0.0)
    self.first_loss.assign(tf.where(
        finite & (self.finite_steps == 0), loss, self.first_loss))
    exploding = finite & (self.first_loss > 0) & (
        loss > self.explosion_factor * self.first_loss)
    self.explosion_streak.assign(tf.where(
        exploding, self.explosion_streak + 1, 0))
    self.explosion_step.assign(tf.where(
        (self.explosion_step < 0) &
        (self.explosion_streak >= self.explosion_patience),
        step - self.explosion_streak + 1, self.explosion_step))
    warm = self.finite_steps >= self.warmup_steps
    spike = finite & warm & (loss > self.micro_factor * self.loss_ema)
    self.micro_divergences.assign_add(tf.cast(spike, tf.int64))
    self.nonfinite_steps.assign_add(tf.cast(~finite, tf.int64))
    self.first_nonfinite_step.assign(tf.where(
        (~finite) & (self.first_nonfinite_step < 0), step,
        self.first_nonfinite_step))
    decay = tf.where(self.finite_steps > 0, self.ema_decay, 0.0)
    new_ema = decay * self.loss_ema + (1 - decay) * loss
    self.loss_ema.assign(tf.where(finite, new_ema, self.loss_ema))
    self.finite_steps.assign_add(tf.cast(finite, tf.int64))

  def observe_eval(self, auc: Optional[float],
                   prediction_std: Optional[float], step: int,
                   final: bool = False):
    """Records the held-out AUC and prediction spread of the primary binary
    task; marks an AUC collapse or a collapsed model (`final`: the last
    evaluation of the run, where a collapse needs no patience)."""
    if auc is None:
      return
    if (self.auc_collapse_step.numpy() < 0 and
        self.best_auc.numpy() >= self.auc_ceiling
        and auc <= self.auc_floor):
      self.auc_collapse_step.assign(step)
    collapsed = (prediction_std is not None and auc <= self.auc_floor and
                 prediction_std < self.collapse_std)
    if self.collapse_step.numpy() < 0:
      if not collapsed:
        self.collapse_candidate_step.assign(-1)
      else:
        if self.collapse_candidate_step.numpy() < 0:
          self.collapse_candidate_step.assign(step)
        since = int(self.collapse_candidate_step.numpy())
        if final or step - since >= self.collapse_patience:
          self.collapse_step.assign(since)
    self.best_auc.assign(max(float(self.best_auc.numpy()), auc))

  def mark_nonfinite_state(self, step: int):
    """The weights or optimizer state went non-finite by `step`."""
    if self.nonfinite_state_step.numpy() < 0:
      self.nonfinite_state_step.assign(step)

  @property
  def diverged(self) -> bool:
    return any(v.numpy() >= 0 for v, _ in self._findings())

  def _findings(self):
    return [(self.first_nonfinite_step, "non-finite loss or gradient"),
            (self.explosion_step, f"loss exploded: above "
             f"{self.explosion_factor:g} x the first loss for "
             f"{self.explosion_patience} steps"),
            (self.nonfinite_state_step, "non-finite weights or optimizer "
             "state after an update"),
            (self.auc_collapse_step, f"held-out AUC fell to <= "
             f"{self.auc_floor} after >= {self.auc_ceiling}"),
            (self.collapse_step, f"collapsed: held-out AUC <= {self.auc_floor}"
             f" and prediction std < {self.collapse_std}")]

  def verdict(self) -> Dict:
    """The run summary's stability fields."""
    found = [(int(v.numpy()), why) for v, why in self._findings()
             if v.numpy() >= 0]
    steps = [s for s, _ in found]
    reasons = [why for _, why in found]
    return {
        "diverged": bool(reasons),
        "diverged_at_step": min(steps) if steps else None,
        "divergence_reason": "; ".join(reasons) or None,
        "micro_divergences": int(self.micro_divergences.numpy()),
        "nonfinite_steps": int(self.nonfinite_steps.numpy()),
        "best_eval_auc": float(self.best_auc.numpy()),
    }


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
  `finite` from step_is_finite."""

  def guard(g):
    if g is None:
      return None
    if isinstance(g, tf.IndexedSlices):
      return tf.IndexedSlices(tf.where(finite, g.values,
                                       tf.zeros_like(g.values)),
                              g.indices, g.dense_shape)
    return tf.where(finite, g, tf.zeros_like(g))

  return [guard(g) for g in grads]
