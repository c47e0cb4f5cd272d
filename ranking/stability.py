"""Divergence detection, in the graph and cheap (paper section 3).

Per step, inside the training loop:
  - non-finite loss: the step's gradients are zeroed (weights and optimizer
    state stay finite, so no NaN ever reaches a checkpoint) and counted;
  - micro-divergence: a finite loss above `factor` times its running
    average (an exponential moving average of the losses before it).
After each evaluation, in Python:
  - full divergence: a non-finite loss; the held-out binary AUC falling to
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
               collapse_patience_steps: int = 100):
    super().__init__(name="stability")
    if not micro_factor > 1:
      raise ValueError(f"micro_factor must be > 1, got {micro_factor}.")
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

  @property
  def diverged(self) -> bool:
    return any(v.numpy() >= 0 for v in (self.first_nonfinite_step,
                                         self.auc_collapse_step,
                                         self.collapse_step))

  def verdict(self) -> Dict:
    """The run summary's stability fields."""
    found = [(self.first_nonfinite_step, "non-finite loss"),
             (self.auc_collapse_step, f"held-out AUC fell to <= "
              f"{self.auc_floor} after >= {self.auc_ceiling}"),
             (self.collapse_step, f"collapsed: held-out AUC <= {self.auc_floor}"
              f" and prediction std < {self.collapse_std}")]
    found = [(int(v.numpy()), why) for v, why in found if v.numpy() >= 0]
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
