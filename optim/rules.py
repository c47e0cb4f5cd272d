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

Newer rules need more than one step's tensors, and say so by name in their
signature (`make_rule` reads it):

  - `state`: a rule that remembers (AdaGC, ZClip) takes its per-variable
    state vector, of length len(RULE_STATE[name]) and initially
    RULE_STATE[name], and returns (sigma, new_state). The optimizer keeps
    the state in a slot, so checkpoints save and resume it.
  - `second_moment`: a rule on the base optimizer's per-coordinate
    estimate of E[g^2] (StableAdamW's update clipping) takes Adam's
    bias-corrected v_t; only Adam has one to give.

`spike_clip` (SPAM) is not a sigma: it changes the gradient coordinates
before Adam's moments see them; ScaledAdam applies it.
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


def adagc_scale(grad, var, direction, lr, state, *, lambda_rel=1.05,
                lambda_abs=1.0, beta=0.98, warmup_steps=100):
  """AdaGC (Wang et al. 2025, arXiv 2502.11034), layer-wise: each variable
  is clipped to lambda_rel times an EMA gamma of its own clipped norms.

  state = [gamma, t], t the steps taken so far. At step t + 1:
    warm-up (t + 1 < warmup_steps): sigma = min(1, lambda_abs / ||g||),
      gamma = ||sigma g|| at the first step, then min(gamma, ||sigma g||);
    after: sigma = min(1, lambda_rel * gamma / ||g||),
      gamma = beta * gamma + (1 - beta) * ||sigma g||.
  AdaGC's warm-up clips the global norm; here every rule sees one variable,
  so the warm-up threshold applies to the variable's own norm, as GC does.
  Defaults are the paper's. Returns (sigma, [gamma, t + 1]).
  """
  del var, direction, lr
  dtype = grad.dtype
  gamma, t = state[0], state[1]
  g_norm = l2_norm(grad)
  warm = t + 1.0 < tf.cast(warmup_steps, dtype)
  bound = tf.where(warm, tf.constant(lambda_abs, dtype), lambda_rel * gamma)
  sigma = _at_most_one(tf.where(g_norm == 0.0, tf.ones_like(g_norm),
                                tf.math.divide_no_nan(bound, g_norm)))
  clipped = sigma * g_norm
  new_gamma = tf.where(
      warm, tf.where(t == 0.0, clipped, tf.minimum(gamma, clipped)),
      beta * gamma + (1.0 - beta) * clipped)
  return sigma, tf.stack([new_gamma, t + 1.0])


def zclip_scale(grad, var, direction, lr, state, *, z_thresh=2.5,
                alpha=0.97, warmup_steps=25, eps=1e-6):
  """ZClip (Kumar et al. 2025, arXiv 2504.02507), layer-wise: a gradient
  norm whose z-score against an EMA of the variable's past norms exceeds
  z_thresh is clipped.

  state = [mean, variance, t]. The first `warmup_steps` steps only collect
  norms (mean and population variance, no clipping). After them, with
  std = sqrt(variance) and z = (||g|| - mean) / (std + eps):
    z > z_thresh: ||g|| is clipped to mean + z_thresh^2 * std / z (ZClip's
      "adaptive scaling": the larger the outlier, the harder the clip);
    then mean = alpha mean + (1 - alpha) n and variance = alpha variance +
      (1 - alpha) (n - mean)^2 with the new mean, n the norm after clipping.
  ZClip clips the global norm; here, like every rule, one variable's.
  Defaults are the paper's. Returns (sigma, new state).
  """
  del var, direction, lr
  mean, variance, t = state[0], state[1], state[2]
  g_norm = l2_norm(grad)
  # Warm-up: running mean and population variance of the norms so far.
  n = t + 1.0
  warm_mean = mean + (g_norm - mean) / n
  warm_variance = variance + ((g_norm - mean) * (g_norm - warm_mean)
                              - variance) / n
  # After: clip the outliers, then the EMA of the norm as applied.
  std = tf.sqrt(variance)
  z = (g_norm - mean) / (std + eps)
  outlier = z > z_thresh
  limit = mean + tf.math.divide_no_nan(z_thresh**2 * std, z)
  applied = tf.where(outlier, limit, g_norm)
  sigma = tf.where(outlier, tf.math.divide_no_nan(limit, g_norm),
                   tf.ones_like(g_norm))
  ema_mean = alpha * mean + (1.0 - alpha) * applied
  ema_variance = alpha * variance + (1.0 - alpha) * tf.square(
      applied - ema_mean)
  warm = t < tf.cast(warmup_steps, grad.dtype)
  return (tf.where(warm, tf.ones_like(sigma), sigma),
          tf.stack([tf.where(warm, warm_mean, ema_mean),
                    tf.where(warm, warm_variance, ema_variance), n]))


def stable_scale(grad, var, direction, lr, second_moment, *,
                 clip_threshold=1.0, eps=1e-8):
  """StableAdamW's update clipping (Wortsman et al. 2023, arXiv 2304.13013,
  after Adafactor): sigma = 1 / max(1, RMS / d) with
  RMS = sqrt(mean(g^2 / max(v_hat, eps^2))), v_hat Adam's bias-corrected
  second moment including this step's g, d = clip_threshold. A gradient far
  above what v_hat expects (a stale second moment) shrinks the step.
  """
  del var, direction, lr
  floor = tf.constant(eps**2, grad.dtype)
  rms = tf.sqrt(tf.reduce_mean(tf.square(grad) /
                               tf.maximum(second_moment, floor)))
  return 1.0 / tf.maximum(rms / clip_threshold, tf.ones_like(rms))


def spike_clip(grad, second_moment, *, theta):
  """SPAM's spike-aware clipping (Huang et al. 2025, arXiv 2501.06842): a
  coordinate with g_i^2 > theta * V_i, V Adam's second moment before this
  step, is set to sign(g_i) sqrt(theta * V_i); the others are unchanged.
  A gradient transform for Adam, applied before its moments (SPAM's
  momentum reset is not part of it).
  """
  allowed = theta * second_moment
  spike = tf.square(grad) > allowed
  return tf.where(spike, tf.sign(grad) * tf.sqrt(allowed), grad)


RULES = {
    "naive": naive_scale,
    "gc": gc_scale,
    "agc": agc_scale,
    "lamb": lamb_scale,
    "clippy": clippy_scale,
    "adagc": adagc_scale,
    "zclip": zclip_scale,
    "stable": stable_scale,
}

# The initial per-variable state of the rules that keep one.
RULE_STATE = {
    "adagc": (0.0, 0.0),         # gamma, steps
    "zclip": (0.0, 0.0, 0.0),    # mean, variance, steps
}

# Hyperparameters that must be > 0 and those that must be >= 0.
_POSITIVE = {"clip_norm", "clip_factor", "trust_coefficient", "z_thresh",
             "clip_threshold", "theta"}
_NON_NEGATIVE = {"eps", "lambda_rel", "lambda_abs", "warmup_steps"}
_UNIT_INTERVAL = {"beta", "alpha"}  # EMA decays, in [0, 1)


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
    if name in _UNIT_INTERVAL and not 0 <= value < 1:
      raise ValueError(f"{method}: {name} must be in [0, 1), got {value!r}.")
  if method == "adagc" and not (values["lambda_rel"] > 0 and
                                values["lambda_abs"] > 0):
    raise ValueError("adagc: lambda_rel and lambda_abs must be > 0 (a "
                     "zero threshold would stop every update).")
  if method == "clippy" and values["lambda_rel"] == 0 and values[
      "lambda_abs"] == 0:
    raise ValueError("clippy: lambda_rel and lambda_abs cannot both be 0; "
                     "no update would ever be allowed.")
  return values


def needs(method: str) -> set:
  """Which of "state" and "second_moment" a rule takes besides the step's
  tensors (see the module docstring)."""
  return {"state", "second_moment"} & set(
      inspect.signature(_lookup(method)).parameters)


def make_rule(method: str, **hyperparameters) -> Rule:
  """Binds a rule to validated hyperparameters:

      rule(grad, var, r, lr, state=None, second_moment=None)
          -> (sigma, new_state)

  new_state is None for a rule without state. The bound values, defaults
  filled in, are its `hyperparameters` attribute; `initial_state` is
  RULE_STATE[method] or None, `needs_second_moment` whether it reads one.
  """
  rule = _lookup(method)
  values = validate_hyperparameters(method, hyperparameters)
  extra = needs(method)

  def bound(grad, var, direction, lr, state=None, second_moment=None):
    kwargs = dict(values)
    if "second_moment" in extra:
      if second_moment is None:
        raise ValueError(
            f"Clipping method {method!r} reads the base optimizer's second "
            "moment, which only Adam has (use it with ScaledAdam).")
      kwargs["second_moment"] = second_moment
    if "state" in extra:
      return rule(grad, var, direction, lr, state, **kwargs)
    return rule(grad, var, direction, lr, **kwargs), None

  bound.__name__ = f"{rule.__name__}({values})"
  bound.hyperparameters = values
  bound.initial_state = RULE_STATE.get(method)
  bound.needs_second_moment = "second_moment" in extra
  return bound
