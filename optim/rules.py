"""Clipping rules: the per-layer factor sigma_t of the paper's unified update.

Tang et al., "Improving Training Stability for Multitask Ranking Models in
Recommender Systems" (KDD 2023, arXiv 2302.09178), section 4.3.1, eq. 5, write
every method as a base optimizer whose learning rate is scaled per variable:

    w_{t+1} = w_t - eta_t * sigma_t * r_t

where r_t is the base optimizer's direction (for Adagrad g_t / sqrt(G_t)).
Each function here computes sigma_t for one variable (one layer) and nothing
else, the way optax writes one transformation per function. All take the same
arguments so the optimizer can call any of them:

    rule(grad, var, direction, lr, **hyperparameters) -> sigma

`grad`, `var` and `direction` are dense tensors of one shape (for a sparse
gradient, the rows it touches); `lr` is the scalar eta_t. sigma is a scalar,
or for unit-wise AGC a tensor that broadcasts against `var`.
"""

import inspect
from typing import Callable

import tensorflow as tf

Rule = Callable[..., tf.Tensor]


def l2_norm(x: tf.Tensor) -> tf.Tensor:
  """||x||_2 in one fused pass (tf.nn.l2_loss is sum(x^2) / 2)."""
  return tf.sqrt(2.0 * tf.nn.l2_loss(x))


def _at_most_one(x: tf.Tensor) -> tf.Tensor:
  """min(1, x) in x's dtype (a leading Python 1.0 would be made float32)."""
  return tf.minimum(x, tf.ones_like(x))


def naive_scale(grad, var, direction, lr):
  """No treatment: sigma_t = 1 (plain Adagrad / Adam)."""
  del grad, direction, lr
  return tf.ones([], var.dtype)


def gc_scale(grad, var, direction, lr, *, clip_norm):
  """Layer-wise gradient clipping (GC): sigma_t = min(1, lambda / ||g||_2).

  Pascanu et al. 2013 as used in the paper's baselines: a gradient whose L2
  norm exceeds `clip_norm` (lambda) is scaled down to norm lambda.
  """
  del var, direction, lr
  g_norm = l2_norm(grad)
  ratio = tf.math.divide_no_nan(tf.constant(clip_norm, grad.dtype), g_norm)
  return _at_most_one(tf.where(g_norm == 0.0, tf.ones_like(ratio), ratio))


def _unitwise_norm(x: tf.Tensor) -> tf.Tensor:
  """L2 norm per output unit, broadcast to x's shape (NFNets / optax form).

  Scalars and vectors (biases) are element-wise units; a kernel of rank >= 2
  has one unit per index of its last (output) axis, normed over all others.
  """
  if x.shape.rank <= 1:
    return tf.abs(x)
  axes = list(range(x.shape.rank - 1))
  return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axes, keepdims=True))


def agc_scale(grad, var, direction, lr, *, clip_factor, eps=1e-3,
              unitwise=False):
  """Adaptive gradient clipping (AGC, Brock et al. 2021, NFNets).

  sigma_t = min(1, lambda * max(||w||, eps) / ||g||), with the norms taken over
  the whole variable (layer-wise) or per output unit (unit-wise, NFNets form).
  The floor `eps` on ||w|| lets zero-initialised weights move.
  """
  del direction, lr
  norm = _unitwise_norm if unitwise else l2_norm
  w_norm = tf.maximum(norm(var), eps)
  g_norm = norm(grad)
  ratio = tf.math.divide_no_nan(clip_factor * w_norm, g_norm)
  return _at_most_one(tf.where(g_norm == 0.0, tf.ones_like(ratio), ratio))


def lamb_scale(grad, var, direction, lr, *, trust_coefficient):
  """LAMB's trust ratio on the base optimizer's direction (You et al. 2020).

  sigma_t = mu * phi(||w||_2) / ||r||_2 with phi(x) = x. Where either norm
  is zero the trust ratio phi(||w||)/||r|| is taken as 1 (You et al.), so
  sigma_t = mu: the paper's LAMB scales the learning rate by mu everywhere.
  Not capped at 1: LAMB also enlarges small updates.
  """
  del grad, lr
  w_norm = l2_norm(var)
  r_norm = l2_norm(direction)
  ratio = tf.math.divide_no_nan(w_norm, r_norm)
  trust = tf.where((w_norm > 0.0) & (r_norm > 0.0), ratio,
                   tf.ones_like(ratio))
  return trust_coefficient * trust


def clippy_scale(grad, var, direction, lr, *, lambda_rel=0.5, lambda_abs=1e-2):
  """Clippy (paper Algorithm 1): the L-infinity, update-based clipping factor.

  sigma_t = min(1, min_i (lambda_rel * |w_i| + lambda_abs) / (eta_t * |r_i|)),
  over the coordinates with r_i != 0, so that every applied update satisfies
  |eta_t * sigma_t * r_i| <= lambda_rel * |w_i| + lambda_abs.
  Defaults are the paper's (lambda_rel = 0.5, lambda_abs = 1e-2).
  """
  del grad
  # Computed as 1 / (eta_t * max_i |r_i| / allowed_i): the same value in
  # fewer passes over the variable than a per-coordinate minimum (this runs
  # every step on every dense weight). |r_i| = 0 constrains nothing. With
  # lambda_abs > 0 every allowed_i > 0; with lambda_abs = 0 a zero weight
  # allows no update, so r_i != 0 there gives |r_i| / 0 = inf and sigma = 0.
  allowed = lambda_rel * tf.abs(var) + lambda_abs
  ratio = tf.abs(direction) / allowed
  if lambda_abs == 0:
    ratio = tf.where(direction == 0.0, tf.zeros_like(ratio), ratio)
  worst = lr * tf.reduce_max(ratio)
  return _at_most_one(1.0 / worst)


RULES = {
    "naive": naive_scale,
    "gc": gc_scale,
    "agc": agc_scale,
    "lamb": lamb_scale,
    "clippy": clippy_scale,
}

# Hyperparameters that must be > 0 and those that must be >= 0.
_POSITIVE = {"clip_norm", "clip_factor", "trust_coefficient"}
_NON_NEGATIVE = {"eps", "lambda_rel", "lambda_abs"}


def rule_hyperparameters(method: str) -> dict:
  """The keyword hyperparameters of a rule and their defaults (None: none)."""
  rule = _lookup(method)
  return {
      name: (None if p.default is inspect.Parameter.empty else p.default)
      for name, p in inspect.signature(rule).parameters.items()
      if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


def _lookup(method: str) -> Rule:
  if method not in RULES:
    raise ValueError(
        f"Unknown clipping method {method!r}; expected one of "
        f"{sorted(RULES)}.")
  return RULES[method]


def validate_hyperparameters(method: str, hyperparameters: dict) -> dict:
  """Checks a rule's hyperparameters; returns them with defaults filled in.

  Raises:
    ValueError: unknown method, unknown or missing hyperparameter, or a value
      out of range (thresholds must be positive, floors non-negative).
  """
  accepted = rule_hyperparameters(method)
  unknown = set(hyperparameters) - set(accepted)
  if unknown:
    raise ValueError(
        f"Unknown hyperparameter(s) {sorted(unknown)} for clipping method "
        f"{method!r}; it accepts {sorted(accepted) or 'none'}.")
  values = {**accepted, **hyperparameters}
  missing = [name for name, value in values.items() if value is None]
  if missing:
    raise ValueError(
        f"Clipping method {method!r} needs a value for {sorted(missing)}.")
  for name, value in values.items():
    if isinstance(value, bool):
      continue
    if name in _POSITIVE and not value > 0:
      raise ValueError(f"{method}: {name} must be > 0, got {value!r}.")
    if name in _NON_NEGATIVE and not value >= 0:
      raise ValueError(f"{method}: {name} must be >= 0, got {value!r}.")
  if method == "clippy" and values["lambda_rel"] == 0 and values[
      "lambda_abs"] == 0:
    raise ValueError("clippy: lambda_rel and lambda_abs cannot both be 0; "
                     "no update would ever be allowed.")
  return values


def make_rule(method: str, **hyperparameters) -> Rule:
  """Binds a rule to validated hyperparameters: rule(grad, var, r, lr).

  The bound values, defaults filled in, are its `hyperparameters` attribute.
  """
  rule = _lookup(method)
  values = validate_hyperparameters(method, hyperparameters)

  def bound(grad, var, direction, lr):
    return rule(grad, var, direction, lr, **values)

  bound.__name__ = f"{rule.__name__}({values})"
  bound.hyperparameters = values
  return bound
