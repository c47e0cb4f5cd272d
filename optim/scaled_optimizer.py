"""Base class for optimizers whose step is scaled per variable by a rule.

Paper (Tang et al. 2023, section 4.3.1, eq. 5): every method is a base
optimizer with direction r_t and a per-layer factor sigma_t,

    w_{t+1} = w_t - eta_t * sigma_t * r_t.

Subclasses say how r_t is made (Adagrad, Adam); this class holds the rule
that makes sigma_t (one function from `optim.rules`), its hyperparameters,
the per-variable diagnostics and the config round trip.
"""

import types
from typing import Dict, Optional

import tensorflow as tf

from optim import rules

# Order of the per-variable diagnostics vector (paper Figures 4b, 6, 7).
DIAGNOSTICS = ("sigma", "grad_norm", "grad_to_weight_norm",
               "max_direction_to_weight")


def diagnostics_vector(grad, var, direction, sigma) -> tf.Tensor:
  """[sigma_t, ||g||_2, ||g||_2/||w||_2, ||r/w||_inf] of one variable.

  sigma_t is the smallest factor applied (unit-wise AGC has one per unit).
  Ratios over a zero weight are undefined and left out: ||g||/||w|| is 0 when
  ||w|| = 0, and ||r/w||_inf is the largest |r_i|/|w_i| over w_i != 0.
  """
  g_norm = rules.l2_norm(grad)
  w_norm = rules.l2_norm(var)
  ratio = tf.math.divide_no_nan(tf.abs(direction), tf.abs(var))
  return tf.stack([
      tf.reduce_min(sigma),
      g_norm,
      tf.math.divide_no_nan(g_norm, w_norm),
      tf.reduce_max(ratio),
  ])


def _sigma_only(stored, sigma) -> tf.Tensor:
  """The diagnostics vector of a step off the norms' cadence: this step's
  sigma_t, the norms kept from the last step that computed them."""
  return tf.concat([tf.reshape(tf.reduce_min(sigma), [1]), stored[1:]], 0)


class RuleScaledOptimizer(tf.keras.optimizers.Optimizer):
  """A Keras optimizer whose per-variable step is scaled by a clipping rule.

  Subclasses implement `update_step` with `self.scale(...)` between the
  direction and the variable update.

  Attributes:
    clipping: name of the rule in `optim.rules.RULES`.
    clipping_params: the rule's hyperparameters, defaults filled in.
    record_diagnostics: whether steps store DIAGNOSTICS per variable, read
      with `diagnostics()`.
    diagnostics_every: sigma is stored every step (it costs nothing); the
      norms, which cost passes over every weight, on every this many-th
      step (the step that makes iterations a multiple of it: the trainer's
      summary steps) and kept in between. `diagnostics_clock` (None: the
      optimizer's iterations) is the step count that decides: the trainer
      sets its global step, which a rollback's skipped batches move ahead
      of the optimizer's iterations.
    fused_update: compile the update of every dense gradient of a step into
      one XLA computation, whatever the device (tf-keras compiles one
      computation per variable, and only on GPUs): on a CPU the rule's
      elementwise passes over each weight become one or two, and one launch
      replaces hundreds of small ops (bench/job.py). Only where each
      variable is one local copy (the default and one-device strategies);
      mirrored variables, variables on parameter servers and sparse
      gradients take tf-keras's per-variable updates.
  """

  def __init__(self,
               learning_rate=0.001,
               clipping: str = "naive",
               clipping_params: Optional[Dict] = None,
               record_diagnostics: bool = True,
               diagnostics_every: int = 1,
               fused_update: bool = False,
               name: str = "RuleScaledOptimizer",
               **kwargs):
    if not (isinstance(diagnostics_every, int) and diagnostics_every >= 1):
      raise ValueError("diagnostics_every must be an integer >= 1, got "
                       f"{diagnostics_every!r}.")
    # tf-keras's default weight_decay=0 still runs var -= var * 0 * lr over
    # every variable each step (whole embedding tables included, and an inf
    # weight becomes NaN): no decay pass unless one is asked for.
    kwargs.setdefault("weight_decay", None)
    super().__init__(name=name, **kwargs)
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.clipping = clipping
    self._rule = rules.make_rule(clipping, **dict(clipping_params or {}))
    self.clipping_params = dict(self._rule.hyperparameters)
    self.record_diagnostics = record_diagnostics
    self.diagnostics_every = diagnostics_every
    self.diagnostics_clock = None
    self.fused_update = bool(fused_update)
    # {variables' keys: their compiled update}, in a plain object: an
    # attribute dict would be tracked, and saved with the checkpoints.
    # pending: a fused update's diagnostics, stored together at its end.
    self._fused = types.SimpleNamespace(steps={}, pending=None)
    self._scaled_variables = []
    self._diagnostics = []

  def build(self, var_list):
    for var in var_list:
      if not var.dtype.is_floating:
        raise ValueError(
            f"{self.name}: variable {var.name} has dtype {var.dtype.name}; "
            "the scaled optimizers (and their clipping rules) support real "
            "floating-point variables only.")
    super().build(var_list)
    if getattr(self, "_built", False):
      return
    self._built = True
    self._scaled_variables = list(var_list)
    self._diagnostics = []
    self._rule_states = []
    if self._rule.initial_state is not None:
      # A rule that remembers (AdaGC, ZClip) keeps its state in a slot, so
      # checkpoints save and resume it with the optimizer.
      for var in var_list:
        self._rule_states.append(self.add_variable_from_reference(
            var, "rule_state", initial_value=tf.constant(
                self._rule.initial_state, var.dtype)))
    if self.record_diagnostics:
      for var in var_list:
        self._diagnostics.append(
            self.add_variable_from_reference(
                var, "diagnostics", shape=(len(DIAGNOSTICS),)))
    self.build_slots(var_list)

  def build_slots(self, var_list):
    """Creates the base optimizer's own per-variable state."""
    raise NotImplementedError

  def slot(self, slots, variable):
    """The entry of a per-variable list (built in `build`) for `variable`."""
    return slots[self._index_dict[self._var_key(variable)]]

  def scale(self, grad, var, direction, lr, variable, second_moment=None,
            direction_fn=None):
    """sigma_t of the configured rule; advances its state and records
    diagnostics for `variable`. `second_moment`: the base optimizer's
    estimate of E[g^2] for the rules that read one (Adam's v_hat).
    `direction_fn`: makes `direction` again, for the norms of a summary
    step: under XLA a tensor that enters a conditional must be written out
    in full, while one made inside it is fused into its reductions."""
    state = (self.slot(self._rule_states, variable)
             if self._rule_states else None)
    sigma, new_state = self._rule(
        grad, var, direction, lr,
        state=None if state is None else tf.convert_to_tensor(state),
        second_moment=second_moment)
    if state is not None:
      state.assign(new_state)
    if self.record_diagnostics:
      stored = self.slot(self._diagnostics, variable)
      if self.diagnostics_every == 1:
        stored.assign(diagnostics_vector(grad, var, direction, sigma))
      elif self._fused.pending is not None:
        # In a fused update: one conditional for every variable (see
        # _store_diagnostics), with the weight as it is before its update.
        self._fused.pending.append(
            (stored, grad, tf.convert_to_tensor(var),
             direction_fn or (lambda: direction), sigma))
      else:
        stored.assign(tf.cond(
            self._diagnostics_due(),
            lambda: diagnostics_vector(
                grad, var, direction_fn() if direction_fn else direction,
                sigma),
            lambda: _sigma_only(stored, sigma)))
    return sigma

  def _store_diagnostics(self, pending):
    """Stores the diagnostics of a fused update's variables under one
    conditional. One per variable (30 in the main job, each two branch
    graphs to trace and compile) made make train's first loop 4.2-4.6 s
    against 3.8-4.0 s."""
    if not pending:
      return
    values = tf.cond(
        self._diagnostics_due(),
        lambda: [diagnostics_vector(grad, var, direction_fn(), sigma)
                 for _, grad, var, direction_fn, sigma in pending],
        lambda: [_sigma_only(stored, sigma)
                 for stored, _, _, _, sigma in pending])
    for (stored, *_), value in zip(pending, values):
      stored.assign(value)

  def _distributed_apply_gradients_fn(self, distribution, grads_and_vars,
                                      **kwargs):
    """With fused_update, the dense gradients' updates of the step are one
    XLA computation (their elementwise passes fused, one launch for all
    variables) when each variable is one local copy; otherwise (mirrored
    copies, variables on parameter servers), and for sparse gradients
    (their row counts change from step to step, and XLA would compile each
    anew), tf-keras's per-variable updates."""
    grads_and_vars = list(grads_and_vars)
    if not self.fused_update or self.use_ema or isinstance(
        distribution, tf.distribute.experimental.ParameterServerStrategy
    ) or any(isinstance(v, tf.distribute.DistributedValues)
             for _, v in grads_and_vars):
      return super()._distributed_apply_gradients_fn(
          distribution, grads_and_vars, **kwargs)
    dense = []
    for grad, var in grads_and_vars:
      if isinstance(grad, tf.IndexedSlices):
        self._update_step(grad, var)
      else:
        dense.append((grad, var))
    if dense:
      grads, variables = zip(*dense)
      key = tuple(self._var_key(v) for v in variables)
      if key not in self._fused.steps:
        def fused(grads, variables=variables):
          self._fused.pending = []
          try:
            for grad, var in zip(grads, variables):
              self._update_step(grad, var)
            self._store_diagnostics(self._fused.pending)
          finally:
            self._fused.pending = None
        self._fused.steps[key] = tf.function(fused, jit_compile=True,
                                             autograph=False)
      self._fused.steps[key](list(grads))
    return self.iterations.assign_add(1)

  def norms_fresh_after(self, steps):
    """Whether the stored norms are those of the step that brought the
    clock to `steps` (an int, or a tensor in the graph): the norms are
    refreshed by the steps that make it a multiple of diagnostics_every."""
    return steps % self.diagnostics_every == 0

  def _diagnostics_due(self):
    """Whether this step refreshes the norms (the clock counts the steps
    before it)."""
    clock = (self.iterations if self.diagnostics_clock is None
             else self.diagnostics_clock)
    return self.norms_fresh_after(tf.cast(clock, tf.int64) + 1)

  def diagnostics(self) -> Dict[str, Dict[str, tf.Tensor]]:
    """The last step's diagnostics: {variable name: {DIAGNOSTICS[i]: value}}.

    Empty before the first step or when `record_diagnostics` is False. A
    name shared by several variables gets a suffix _1, _2, ... in the order
    the optimizer was built with.
    """
    return {key: {k: values[i] for i, k in enumerate(DIAGNOSTICS)}
            for key, values in zip(
                self.diagnosed_variables(),
                (tf.convert_to_tensor(d) for d in self._diagnostics))}

  def diagnosed_variables(self) -> Dict[str, tf.Variable]:
    """{name: variable} of the variables `diagnostics()` reports, under the
    same names; empty when `record_diagnostics` is False."""
    out = {}
    if not self._diagnostics:
      return out
    for var in self._scaled_variables:
      key, n = var.name, 1
      while key in out:  # variable names need not be unique
        key, n = f"{var.name}_{n}", n + 1
      out[key] = var
    return out

  def get_config(self):
    config = super().get_config()
    config.update({
        "learning_rate": self._serialize_hyperparameter(self._learning_rate),
        "clipping": self.clipping,
        "clipping_params": dict(self.clipping_params),
        "record_diagnostics": self.record_diagnostics,
        "diagnostics_every": self.diagnostics_every,
        "fused_update": self.fused_update,
    })
    return config
