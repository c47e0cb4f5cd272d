"""Config round trips, the gin factory, and clear errors for bad input."""

import glob
import os

import gin
import pytest
import tensorflow as tf

from optim import METHODS, ScaledAdagrad, ScaledAdam, build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
PAPER_THRESHOLDS = {"gc": {"clip_norm": 1e-2}, "agc": {"clip_factor": 1e-3},
                    "lamb": {"trust_coefficient": 1e-2}}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_config_round_trips_every_field(method):
  opt = build_optimizer(method, 0.05, **PAPER_THRESHOLDS.get(method, {}))
  config = opt.get_config()
  again = type(opt).from_config(dict(config)).get_config()
  assert again == config
  # Every constructor argument is in the config (TFRS ClippyAdagrad drops
  # use_standard_accumulator_update; we must drop nothing).
  import inspect  # pylint: disable=g-import-not-at-top
  params = set(inspect.signature(type(opt).__init__).parameters)
  assert params - {"self", "kwargs"} <= set(config)


def test_config_keeps_non_default_values_and_schedules():
  schedule = tf.keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
  opt = ScaledAdagrad(schedule, clipping="agc",
                      clipping_params={"clip_factor": 0.2, "unitwise": True},
                      initial_accumulator_value=0.3, epsilon=1e-6,
                      accumulator_update="clipped", record_diagnostics=False)
  config = opt.get_config()
  restored = ScaledAdagrad.from_config(dict(config))
  assert restored.get_config() == config
  assert restored.clipping_params == {"clip_factor": 0.2, "eps": 1e-3,
                                      "unitwise": True}
  assert restored.accumulator_update == "clipped"
  assert restored.initial_accumulator_value == 0.3
  assert not restored.record_diagnostics
  assert isinstance(restored._learning_rate,
                    tf.keras.optimizers.schedules.ExponentialDecay)
  adam = ScaledAdam(0.01, clipping="clippy",
                    clipping_params={"lambda_rel": 0.3}, beta_1=0.8)
  again = ScaledAdam.from_config(dict(adam.get_config()))
  assert again.beta_1 == 0.8
  assert again.clipping_params == {"lambda_rel": 0.3, "lambda_abs": 1e-2}


def test_keras_serialization_finds_our_classes():
  opt = build_optimizer("clippy", 0.1)
  restored = tf.keras.optimizers.deserialize(
      tf.keras.optimizers.serialize(opt))
  assert isinstance(restored, ScaledAdagrad)
  assert restored.get_config() == opt.get_config()


def test_factory_gives_the_paper_defaults():
  opt = build_optimizer("clippy", 0.1)
  assert isinstance(opt, ScaledAdagrad)
  assert opt.clipping_params == {"lambda_rel": 0.5, "lambda_abs": 1e-2}
  assert opt.initial_accumulator_value == 0.1
  assert opt.accumulator_update == "standard"
  clippy_adam = build_optimizer("clippy_adam", 0.1)
  assert isinstance(clippy_adam, ScaledAdam)
  assert clippy_adam.clipping == "clippy"


@pytest.mark.parametrize("path", sorted(
    glob.glob(os.path.join(ROOT, "configs", "optimizers", "*.gin"))))
def test_every_optimizer_gin_file_builds(path):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        [path], ["build_optimizer.learning_rate = 0.05"])
    opt = build_optimizer()
    method = os.path.splitext(os.path.basename(path))[0]
    assert opt.name == method
    assert (type(opt), opt.clipping) == METHODS[method]
  finally:
    gin.clear_config()


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="sgd"), "Unknown optimizer method 'sgd'"),
    (dict(method="gc"), "needs a value for ['clip_norm']"),
    (dict(method="gc", clip_norm=-1.0), "clip_norm must be > 0"),
    (dict(method="agc", clip_factor=0.0), "clip_factor must be > 0"),
    (dict(method="agc", clip_factor=1e-3, agc_eps=-1.0), "eps must be >= 0"),
    (dict(method="lamb", trust_coefficient=-0.1), "trust_coefficient must"),
    (dict(method="clippy", lambda_rel=-0.5), "lambda_rel must be >= 0"),
    (dict(method="clippy", lambda_abs=-1e-2), "lambda_abs must be >= 0"),
    (dict(method="clippy", lambda_rel=0.0, lambda_abs=0.0), "cannot both"),
    (dict(method="clippy", clip_norm=0.1), "does not use ['clip_norm']"),
    (dict(method="naive", accumulator_update="lazy"), "accumulator_update"),
    (dict(method="naive", initial_accumulator_value=-0.1),
     "initial_accumulator_value must be >= 0"),
    (dict(method="adam", beta_1=1.0), "beta_1 must be in [0, 1)"),
    (dict(method="adagc", adagc_beta=1.0), "beta must be in [0, 1)"),
    (dict(method="adagc", adagc_lambda_rel=0.0), "must be > 0 (a zero"),
    (dict(method="zclip", zclip_z_thresh=0.0), "z_thresh must be > 0"),
    (dict(method="zclip", zclip_warmup_steps=-1), "warmup_steps must be >="),
    (dict(method="zclip", adagc_beta=0.9), "does not use ['adagc_beta']"),
    (dict(method="stable_adam", stable_clip_threshold=-1.0),
     "clip_threshold must be > 0"),
    (dict(method="clippy", spike_threshold=50.0),
     "does not use ['spike_threshold']"),
    (dict(method="spam", spike_threshold=0.0), "spike_threshold must be > 0"),
    (dict(method="spam", spike_warmup_steps=0), "spike_warmup_steps must"),
])
def test_bad_hyperparameters_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=None) as error:
    build_optimizer(learning_rate=0.1, **kwargs)
  assert message in str(error.value)


def test_unknown_rule_hyperparameter_is_named():
  with pytest.raises(ValueError, match="clip_nrom"):
    ScaledAdagrad(0.1, clipping="gc", clipping_params={"clip_nrom": 1.0})


def test_unknown_gin_binding_is_named():
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="lambda_rell"):
      gin.parse_config("build_optimizer.lambda_rell = 0.5")
  finally:
    gin.clear_config()


def test_diagnostics_are_empty_before_the_first_step_or_when_off():
  assert build_optimizer("clippy", 0.1).diagnostics() == {}
  opt = build_optimizer("clippy", 0.1, record_diagnostics=False)
  var = tf.Variable([1.0, 2.0])
  opt.apply_gradients([(tf.constant([0.1, 0.2]), var)])
  assert opt.diagnostics() == {}
