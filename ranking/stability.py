"""Divergence detection, in the graph and cheap (paper section 3).

Per step, inside the training loop:
  - non-finite loss: the step's gradients are zeroed (weights and optimizer
    state stay finite, so no NaN ever reaches a checkpoint) and counted;
  - micro-divergence: a finite loss above `factor` times its running
    average (an exponential moving average of the losses before it).
After each evaluation, in Python:
  - full divergence: a non-finite loss, or the held-out binary AUC falling
    to <= `auc_floor` after having reached >= `auc_ceiling` (this one can
    stop a run early); and, in the final verdict, a run whose last held-out
    AUC is <= `auc_floor` (it collapsed before it was first evaluated, or
    never learned: the paper's "AUC near 0.5").
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
               auc_ceiling: float = 0.6):
    super().__init__(name="stability")
    if not micro_factor > 1:
      raise ValueError(f"micro_factor must be > 1, got {micro_factor}.")
    self.micro_factor = micro_factor
    self.ema_decay = ema_decay
    self.warmup_steps = warmup_steps
    self.auc_floor, self.auc_ceiling = auc_floor, auc_ceiling
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
    self.last_auc = tf.Variable(-1.0, trainable=False, aggregation=agg)
    self.chance_since_step = tf.Variable(-1, dtype=tf.int64,
                                         trainable=False, aggregation=agg)

  def observe(self, loss: tf.Tensor, step: tf.Tensor):
    """Updates the statistics with one step's (global) loss. In-graph."""
    finite = tf.math.is_finite(loss)
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

  def observe_eval(self, auc: Optional[float], step: int):
    """Records a held-out binary AUC; marks an AUC collapse."""
    if auc is None:
      return
    if (self.auc_collapse_step.numpy() < 0 and
        self.best_auc.numpy() >= self.auc_ceiling
        and auc <= self.auc_floor):
      self.auc_collapse_step.assign(step)
    self.best_auc.assign(max(float(self.best_auc.numpy()), auc))
    self.last_auc.assign(auc)
    if auc > self.auc_floor:
      self.chance_since_step.assign(-1)
    elif self.chance_since_step.numpy() < 0:
      self.chance_since_step.assign(step)

  @property
  def diverged(self) -> bool:
    """Diverged so far: a non-finite loss or an AUC collapse (stops a run)."""
    return bool(self.nonfinite_steps.numpy() > 0) or bool(
        self.auc_collapse_step.numpy() >= 0)

  @property
  def ended_at_chance(self) -> bool:
    return 0.0 <= float(self.last_auc.numpy()) <= self.auc_floor

  def verdict(self) -> Dict:
    """The run summary's stability fields (call at the end of the run)."""
    steps = [int(s.numpy()) for s in (self.first_nonfinite_step,
                                      self.auc_collapse_step)
             if s.numpy() >= 0]
    reasons = []
    if int(self.nonfinite_steps.numpy()):
      reasons.append("non-finite loss")
    if int(self.auc_collapse_step.numpy()) >= 0:
      reasons.append(f"held-out AUC fell to <= {self.auc_floor} after "
                     f">= {self.auc_ceiling}")
    if self.ended_at_chance and not steps:
      steps.append(int(self.chance_since_step.numpy()))
      reasons.append(f"held-out AUC ended at <= {self.auc_floor}")
    return {
        "diverged": bool(reasons),
        "diverged_at_step": min(steps) if steps else None,
        "divergence_reason": "; ".join(reasons) or None,
        "micro_divergences": int(self.micro_divergences.numpy()),
        "nonfinite_steps": int(self.nonfinite_steps.numpy()),
        "best_eval_auc": float(self.best_auc.numpy()),
    }


def zero_if_nonfinite(loss, grads):
  """The gradients, or zeros when the loss is not finite (a skipped step)."""
  finite = tf.math.is_finite(loss)

  def guard(g):
    if g is None:
      return None
    if isinstance(g, tf.IndexedSlices):
      return tf.IndexedSlices(tf.where(finite, g.values,
                                       tf.zeros_like(g.values)),
                              g.indices, g.dense_shape)
    return tf.where(finite, g, tf.zeros_like(g))

  return [guard(g) for g in grads]
