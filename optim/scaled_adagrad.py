"""Adagrad scaled per layer by a clipping rule (paper section 4.3.1, eq. 5)."""

import tensorflow as tf

from optim.scaled_optimizer import RuleScaledOptimizer

# How the accumulator G is fed, and which G the direction r_t is taken from.
ACCUMULATOR_UPDATES = {
    # Eq. 5: G_t = G_{t-1} + g_t^2, then r_t = g_t / sqrt(G_t + eps).
    "standard",
    # r_t from G_{t-1}, then G_t = G_{t-1} + (sigma_t g_t)^2: the accumulator
    # sees the clipped gradient (TFRS ClippyAdagrad clip_accumulator_update).
    "clipped",
    # r_t from G_{t-1}, then G_t = G_{t-1} + g_t^2 (the TFRS default).
    "delayed",
}


@tf.keras.utils.register_keras_serializable(package="optim")
class ScaledAdagrad(RuleScaledOptimizer):
  r"""Adagrad whose learning rate is scaled per variable by a clipping rule.

  Tang et al., "Improving Training Stability for Multitask Ranking Models in
  Recommender Systems", KDD 2023 (arXiv 2302.09178), eq. 5:

      G_t = G_{t-1} + g_t^2,   r_t = g_t / sqrt(G_t + eps),
      w_{t+1} = w_t - eta_t * sigma_t * r_t,

  with sigma_t from `clipping` (naive, gc, agc, lamb, clippy, adagc,
  zclip; see `optim.rules`). With clipping="clippy" and accumulator_update="standard"
  this is the paper's Algorithm 1 and equals TFRS
  `ClippyAdagrad(use_standard_accumulator_update=True,
  accumulator_relative_threshold=0)`.

  A sparse gradient (tf.IndexedSlices) updates only the rows it touches, and
  its rule sees only those rows (as TFRS ClippyAdagrad does), so the cost
  follows the batch, not the vocabulary.
  """

  def __init__(self,
               learning_rate=0.001,
               clipping: str = "naive",
               clipping_params=None,
               initial_accumulator_value: float = 0.1,
               epsilon: float = 1e-7,
               accumulator_update: str = "standard",
               record_diagnostics: bool = True,
               diagnostics_every: int = 1,
               name: str = "ScaledAdagrad",
               **kwargs):
    """Creates the optimizer.

    Args:
      learning_rate: eta, a float or a LearningRateSchedule; the rule sees
        the schedule's current value eta_t.
      clipping: name of the rule in `optim.rules.RULES`.
      clipping_params: the rule's hyperparameters, e.g. {"lambda_rel": 0.5,
        "lambda_abs": 1e-2} for clippy.
      initial_accumulator_value: G_0 (paper: 0.1), >= 0.
      epsilon: added to G under the square root, >= 0.
      accumulator_update: "standard" (eq. 5, the original gradient),
        "clipped" or "delayed"; see ACCUMULATOR_UPDATES.
      record_diagnostics: store sigma, ||g||, ||g||/||w||, ||r/w||_inf per
        variable (read with `diagnostics()`).
      diagnostics_every: compute the norms every this many steps (sigma is
        stored every step).
      name: name scope of the optimizer's variables.
      **kwargs: passed to `tf.keras.optimizers.Optimizer`.

    Raises:
      ValueError: unknown clipping rule or accumulator update, or a
        hyperparameter out of range.
    """
    if accumulator_update not in ACCUMULATOR_UPDATES:
      raise ValueError(
          f"accumulator_update must be one of {sorted(ACCUMULATOR_UPDATES)}, "
          f"got {accumulator_update!r}.")
    if not initial_accumulator_value >= 0:
      raise ValueError("initial_accumulator_value must be >= 0, got "
                       f"{initial_accumulator_value!r}.")
    if not epsilon >= 0:
      raise ValueError(f"epsilon must be >= 0, got {epsilon!r}.")
    if initial_accumulator_value == 0 and epsilon == 0:
      raise ValueError("initial_accumulator_value and epsilon cannot both be "
                       "0: the first step would divide by zero.")
    super().__init__(learning_rate=learning_rate, clipping=clipping,
                     clipping_params=clipping_params,
                     record_diagnostics=record_diagnostics,
                     diagnostics_every=diagnostics_every, name=name,
                     **kwargs)
    if self._rule.needs_second_moment:
      raise ValueError(
          f"Clipping method {clipping!r} reads Adam's second moment; "
          "Adagrad's accumulator is a sum, not an estimate of E[g^2] (with "
          "the standard update g^2/G <= 1, so it would never clip). Use "
          "it with ScaledAdam.")
    self.initial_accumulator_value = initial_accumulator_value
    self.epsilon = epsilon
    self.accumulator_update = accumulator_update

  def build_slots(self, var_list):
    self._accumulators = [
        self.add_variable_from_reference(
            var, "accumulator",
            initial_value=tf.fill(var.shape, tf.constant(
                self.initial_accumulator_value, var.dtype)))
        for var in var_list
    ]

  def update_step(self, gradient, variable):
    lr = tf.cast(self.learning_rate, variable.dtype)
    accumulator = self.slot(self._accumulators, variable)
    sparse = isinstance(gradient, tf.IndexedSlices)
    grad = gradient.values if sparse else gradient

    def rows(t):
      return tf.gather(t, gradient.indices) if sparse else t

    def add_to(ref, delta):
      if sparse:
        ref.scatter_add(tf.IndexedSlices(delta, gradient.indices))
      else:
        ref.assign_add(delta)

    if self.accumulator_update == "standard":
      add_to(accumulator, tf.square(grad))
    # G as the direction reads it: the "clipped" and "delayed" updates below
    # change the accumulator before a fused update's diagnostics run.
    accumulated = tf.convert_to_tensor(rows(accumulator))
    def direction_fn():
      return grad * tf.math.rsqrt(
          accumulated + tf.constant(self.epsilon, variable.dtype))

    direction = direction_fn()
    sigma = self.scale(grad, rows(variable), direction, lr, variable,
                       direction_fn=direction_fn)
    if self.accumulator_update == "clipped":
      add_to(accumulator, tf.square(sigma * grad))
    elif self.accumulator_update == "delayed":
      add_to(accumulator, tf.square(grad))
    add_to(variable, direction * -(lr * sigma))

  def preconditioner(self, variable) -> tf.Tensor:
    """D = 1 / sqrt(G + eps) of `variable`, the current accumulator G under
    the same square root as update_step, whose step is -eta sigma D g.

    It is the D of the next step with the "clipped" and "delayed" updates,
    and of the next step before its own g^2 is added with "standard".
    """
    accumulator = self.slot(self._accumulators, variable)
    return tf.math.rsqrt(tf.convert_to_tensor(accumulator) + tf.constant(
        self.epsilon, variable.dtype))

  def get_config(self):
    config = super().get_config()
    config.update({
        "initial_accumulator_value": self.initial_accumulator_value,
        "epsilon": self.epsilon,
        "accumulator_update": self.accumulator_update,
    })
    return config
