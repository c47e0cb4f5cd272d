"""Builds an optimizer from a method name and its hyperparameters (gin)."""

from typing import Optional

import gin

from optim.scaled_adagrad import ScaledAdagrad
from optim.scaled_adam import ScaledAdam

# method name -> (base optimizer, clipping rule)
METHODS = {
    "naive": (ScaledAdagrad, "naive"),
    "gc": (ScaledAdagrad, "gc"),
    "agc": (ScaledAdagrad, "agc"),
    "lamb": (ScaledAdagrad, "lamb"),
    "clippy": (ScaledAdagrad, "clippy"),
    "adagc": (ScaledAdagrad, "adagc"),
    "zclip": (ScaledAdagrad, "zclip"),
    "adam": (ScaledAdam, "naive"),
    "clippy_adam": (ScaledAdam, "clippy"),
    "spam": (ScaledAdam, "naive"),        # with SPAM's spike clipping
    "stable_adam": (ScaledAdam, "stable"),
}
# SPAM's theta when the method is "spam" and none is given (paper: 5000).
SPAM_THRESHOLD = 5000.0

# The newer rules' settings: build_optimizer argument -> (method, the rule's
# hyperparameter). None (the default) keeps the rule's published default.
_NEWER = {
    "adagc_lambda_rel": ("adagc", "lambda_rel"),
    "adagc_lambda_abs": ("adagc", "lambda_abs"),
    "adagc_beta": ("adagc", "beta"),
    "adagc_warmup_steps": ("adagc", "warmup_steps"),
    "zclip_z_thresh": ("zclip", "z_thresh"),
    "zclip_alpha": ("zclip", "alpha"),
    "zclip_warmup_steps": ("zclip", "warmup_steps"),
    "stable_clip_threshold": ("stable_adam", "clip_threshold"),
}


@gin.configurable
def build_optimizer(method: str = gin.REQUIRED,
                    learning_rate: float = gin.REQUIRED,
                    *,
                    clip_norm: Optional[float] = None,
                    clip_factor: Optional[float] = None,
                    agc_eps: float = 1e-3,
                    unitwise: bool = False,
                    trust_coefficient: Optional[float] = None,
                    lambda_rel: float = 0.5,
                    lambda_abs: float = 1e-2,
                    initial_accumulator_value: float = 0.1,
                    epsilon: float = 1e-7,
                    accumulator_update: str = "standard",
                    beta_1: float = 0.9,
                    beta_2: float = 0.999,
                    adagc_lambda_rel: Optional[float] = None,
                    adagc_lambda_abs: Optional[float] = None,
                    adagc_beta: Optional[float] = None,
                    adagc_warmup_steps: Optional[int] = None,
                    zclip_z_thresh: Optional[float] = None,
                    zclip_alpha: Optional[float] = None,
                    zclip_warmup_steps: Optional[int] = None,
                    stable_clip_threshold: Optional[float] = None,
                    spike_threshold: Optional[float] = None,
                    spike_warmup_steps: int = 20,
                    record_diagnostics: bool = True,
                    diagnostics_every: int = 1,
                    name: Optional[str] = None):
  """The optimizer of one method of the paper, with the paper's defaults.

  Args:
    method: one of METHODS: naive (Adagrad), gc, agc, lamb, clippy, adagc,
      zclip (all on Adagrad), adam, clippy_adam, spam, stable_adam.
    learning_rate: eta, a float or a tf.keras LearningRateSchedule.
    clip_norm: GC threshold lambda (paper grid {1e-1, 1e-2, 1e-3}).
    clip_factor: AGC threshold lambda (paper grid {1e-2, 1e-3, 1e-4}).
    agc_eps: AGC floor on ||w|| (NFNets: 1e-3).
    unitwise: AGC per output unit instead of per layer.
    trust_coefficient: LAMB mu (paper grid {1e-1, 1e-2, 1e-3}).
    lambda_rel: Clippy relative threshold (paper: 0.5).
    lambda_abs: Clippy absolute threshold (paper: 1e-2).
    initial_accumulator_value: Adagrad G_0 (paper: 0.1).
    epsilon: Adagrad / Adam epsilon.
    accumulator_update: Adagrad accumulator feed: "standard" (original
      gradient, eq. 5), "clipped" or "delayed".
    beta_1: Adam first-moment decay.
    beta_2: Adam second-moment decay.
    adagc_lambda_rel, adagc_lambda_abs, adagc_beta, adagc_warmup_steps:
      AdaGC's relative threshold (1.05), warm-up absolute threshold (1.0),
      EMA decay (0.98) and warm-up length (100); None keeps the default.
    zclip_z_thresh, zclip_alpha, zclip_warmup_steps: ZClip's z-score
      threshold (2.5), EMA decay (0.97) and warm-up length (25).
    stable_clip_threshold: StableAdamW's d (1.0).
    spike_threshold: SPAM's theta for any Adam method (spam: 5000 unless
      given); None: no spike clipping.
    spike_warmup_steps: first step of spike clipping (SPAM: 20).
    record_diagnostics: store per-variable diagnostics (paper Fig. 4b, 6, 7).
    diagnostics_every: compute their norms every this many steps; sigma is
      stored every step. Set it to the summary interval.
    name: optimizer name; defaults to the method.

  Returns:
    A ScaledAdagrad or ScaledAdam.

  Raises:
    ValueError: unknown method, a learning rate <= 0, a threshold the method
      needs but was not given, one given that the method does not use, or a
      value out of range.
  """
  arguments = dict(locals())
  if method not in METHODS:
    raise ValueError(f"Unknown optimizer method {method!r}; expected one of "
                     f"{sorted(METHODS)}.")
  if isinstance(learning_rate, (int, float)) and (
      isinstance(learning_rate, bool) or not learning_rate > 0):
    raise ValueError(f"build_optimizer.learning_rate must be > 0, got "
                     f"{learning_rate!r}.")
  base, rule = METHODS[method]
  thresholds = {"clip_norm": clip_norm, "clip_factor": clip_factor,
                "trust_coefficient": trust_coefficient}
  params = {
      "naive": {},
      "gc": {"clip_norm": clip_norm},
      "agc": {"clip_factor": clip_factor, "eps": agc_eps,
              "unitwise": unitwise},
      "lamb": {"trust_coefficient": trust_coefficient},
      "clippy": {"lambda_rel": lambda_rel, "lambda_abs": lambda_abs},
      "adagc": {}, "zclip": {}, "stable": {},
  }[rule]
  given = {arg: arguments[arg] for arg in _NEWER}
  params.update({name_in_rule: given[arg]
                 for arg, (owner, name_in_rule) in _NEWER.items()
                 if owner == method and given[arg] is not None})
  stray = sorted(k for k, v in thresholds.items()
                 if v is not None and k not in params)
  stray += sorted(arg for arg, (owner, _) in _NEWER.items()
                  if given[arg] is not None and owner != method)
  if spike_threshold is not None and base is not ScaledAdam:
    stray.append("spike_threshold")
  if stray:
    raise ValueError(f"Optimizer method {method!r} does not use {stray}.")
  common = dict(learning_rate=learning_rate, clipping=rule,
                clipping_params=params, epsilon=epsilon,
                record_diagnostics=record_diagnostics,
                diagnostics_every=diagnostics_every, name=name or method)
  if base is ScaledAdam:
    if method == "spam" and spike_threshold is None:
      spike_threshold = SPAM_THRESHOLD
    return ScaledAdam(beta_1=beta_1, beta_2=beta_2,
                      spike_threshold=spike_threshold,
                      spike_warmup_steps=spike_warmup_steps, **common)
  return ScaledAdagrad(initial_accumulator_value=initial_accumulator_value,
                       accumulator_update=accumulator_update, **common)
