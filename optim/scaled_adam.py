"""Adam scaled per layer by a clipping rule: Clippy on Adam (paper 4.3.3)."""

from typing import Optional

import tensorflow as tf

from optim import rules
from optim.scaled_optimizer import RuleScaledOptimizer


@tf.keras.utils.register_keras_serializable(package="optim")
class ScaledAdam(RuleScaledOptimizer):
  r"""Adam whose step is scaled per variable by a clipping rule.

  Tang et al., KDD 2023 (arXiv 2302.09178), section 4.3.3: Clippy applies to
  any optimizer by clipping its update. With Keras' Adam step (Kingma & Ba
  2015, epsilon as tf.keras.optimizers.Adam places it):

      m_t = b1 m_{t-1} + (1 - b1) g_t,    v_t = b2 v_{t-1} + (1 - b2) g_t^2,
      r_t = m_t / (1 - b1^t) * sqrt(1 - b2^t) / (sqrt(v_t) + eps),
      w_{t+1} = w_t - eta_t * sigma_t * r_t.

  clipping="naive" is exactly tf.keras Adam; clipping="clippy" is Clippy-Adam;
  clipping="stable" is StableAdamW's update clipping (without weight decay),
  the rule reading v_hat_t = v_t / (1 - b2^t). With `spike_threshold` theta,
  SPAM's spike clipping (`optim.rules.spike_clip`) replaces g_t before the
  moments from step `spike_warmup_steps` on (counting from 1; before it v is
  too young to judge a spike by: at step 1 it is 0).
  A sparse gradient is densified: Adam's moments decay on every row anyway,
  so every row moves and the rule must see all of them.
  """

  def __init__(self,
               learning_rate=0.001,
               clipping: str = "naive",
               clipping_params=None,
               beta_1: float = 0.9,
               beta_2: float = 0.999,
               epsilon: float = 1e-7,
               spike_threshold: Optional[float] = None,
               spike_warmup_steps: int = 20,
               record_diagnostics: bool = True,
               diagnostics_every: int = 1,
               name: str = "ScaledAdam",
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: eta, a float or a LearningRateSchedule.
      clipping: name of the rule in `optim.rules.RULES`.
      clipping_params: the rule's hyperparameters.
      beta_1: decay of the first moment, in [0, 1).
      beta_2: decay of the second moment, in [0, 1).
      epsilon: added to sqrt(v_t), > 0.
      spike_threshold: SPAM's theta (paper: 5000), > 0; None: no spike
        clipping.
      spike_warmup_steps: the first step (from 1) that spike clipping
        applies to (SPAM: 20), >= 1.
      record_diagnostics: store per-variable diagnostics.
      diagnostics_every: compute the norms every this many steps.
      name: name scope of the optimizer's variables.
      **kwargs: passed to `tf.keras.optimizers.Optimizer`.

    Raises:
      ValueError: unknown rule or a hyperparameter out of range.
    """
    for key, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
      if not 0 <= beta < 1:
        raise ValueError(f"{key} must be in [0, 1), got {beta!r}.")
    if not epsilon > 0:
      raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
    if spike_threshold is not None and not spike_threshold > 0:
      raise ValueError(
          f"spike_threshold must be > 0 (or None), got {spike_threshold!r}.")
    if not (isinstance(spike_warmup_steps, int) and spike_warmup_steps >= 1):
      raise ValueError("spike_warmup_steps must be an integer >= 1, got "
                       f"{spike_warmup_steps!r}.")
    super().__init__(learning_rate=learning_rate, clipping=clipping,
                     clipping_params=clipping_params,
                     record_diagnostics=record_diagnostics,
                     diagnostics_every=diagnostics_every, name=name,
                     **kwargs)
    self.beta_1 = beta_1
    self.beta_2 = beta_2
    self.epsilon = epsilon
    self.spike_threshold = spike_threshold
    self.spike_warmup_steps = spike_warmup_steps

  def build_slots(self, var_list):
    self._momentums = [
        self.add_variable_from_reference(var, "m") for var in var_list]
    self._velocities = [
        self.add_variable_from_reference(var, "v") for var in var_list]

  def update_step(self, gradient, variable):
    dtype = variable.dtype
    lr = tf.cast(self.learning_rate, dtype)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.constant(self.beta_1, dtype)
    beta_2 = tf.constant(self.beta_2, dtype)
    grad = tf.convert_to_tensor(gradient)
    m = self.slot(self._momentums, variable)
    v = self.slot(self._velocities, variable)
    if self.spike_threshold is not None:
      clipped = rules.spike_clip(grad, tf.convert_to_tensor(v),
                                 theta=self.spike_threshold)
      grad = tf.where(step >= self.spike_warmup_steps, clipped, grad)
    m.assign_add((grad - m) * (1 - beta_1))
    v.assign_add((tf.square(grad) - v) * (1 - beta_2))
    # The moments as the direction reads them (a fused update's diagnostics
    # run after the weights' updates).
    m_t, v_t = tf.convert_to_tensor(m), tf.convert_to_tensor(v)
    correction = tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    def direction_fn():
      return m_t * correction / (tf.sqrt(v_t) + tf.constant(self.epsilon,
                                                            dtype))

    direction = direction_fn()
    v_hat = (v_t / (1 - tf.pow(beta_2, step))
             if self._rule.needs_second_moment else None)
    sigma = self.scale(grad, variable, direction, lr, variable,
                       second_moment=v_hat, direction_fn=direction_fn)
    variable.assign_sub(direction * (lr * sigma))

  def get_config(self):
    config = super().get_config()
    config.update({
        "beta_1": self.beta_1,
        "beta_2": self.beta_2,
        "epsilon": self.epsilon,
        "spike_threshold": self.spike_threshold,
        "spike_warmup_steps": self.spike_warmup_steps,
    })
    return config
