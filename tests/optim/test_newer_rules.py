"""StableAdamW's update clipping and SPAM's spike clipping against the numpy
reference (tests/optim/numpy_reference.py), by hand, and the state of AdaGC
and ZClip through a checkpoint. AdaGC and ZClip on Adagrad (dense, sparse,
every accumulator mode) are in test_scaled_updates.py's CASES."""

import numpy as np
import pytest
import tensorflow as tf

from optim import ScaledAdagrad, ScaledAdam, build_optimizer, rules
from tests.optim import numpy_reference as ref
from tests.optim.test_scaled_updates import CASES, _gradient

STEPS = 80
# The AdaGC and ZClip settings of test_scaled_updates (short warm-ups).
STATEFUL = {m: p for m, p in CASES if m in ("adagc", "zclip")}


def _acts_and_rests(sigmas):
  sigmas = np.asarray(sigmas)
  assert (sigmas < 1).any() and (sigmas == 1).any(), sigmas


ADAM_CASES = [
    # (id, clipping, rule params, spike threshold): theta = 50 so that the
    # 30x spikes cross it (SPAM's 5000 is for LLM gradients).
    ("stable_adam", "stable", {"clip_threshold": 1.0, "eps": 1e-8}, None),
    ("spam", "naive", {}, 50.0),
    ("spam_with_clippy", "clippy", {"lambda_rel": 0.5, "lambda_abs": 0.1},
     50.0),
]


@pytest.mark.parametrize("clipping,params,theta",
                         [c[1:] for c in ADAM_CASES],
                         ids=[c[0] for c in ADAM_CASES])
def test_adam_matches_numpy(clipping, params, theta):
  rng = np.random.default_rng(12)
  init = rng.normal(size=(5, 3)) * 0.3
  var = tf.Variable(init, dtype=tf.float64)
  reference = ref.AdamReference(init, clipping, params, spike_threshold=theta,
                                spike_warmup_steps=5)
  opt = ScaledAdam(learning_rate=0.2, clipping=clipping,
                   clipping_params=params, spike_threshold=theta,
                   spike_warmup_steps=5)
  sigmas = []
  for _ in range(STEPS):
    g = _gradient(rng, init.shape)
    opt.apply_gradients([(tf.constant(g), var)])
    sigmas.append(reference.step(g, float(np.float32(0.2))))
    np.testing.assert_allclose(var.numpy(), reference.w, rtol=1e-6, atol=1e-9)
  if theta is not None:
    assert reference.spikes > 0  # spike clipping acted
  if clipping != "naive":
    _acts_and_rests(sigmas)


def test_spike_clip_by_hand():
  g = tf.constant([3.0, -3.0, 0.5, 2.0, 1.0])
  v = tf.constant([0.1, 0.1, 0.1, 0.0, 0.5])
  # theta v = [1, 1, 1, 0, 5]: g^2 = [9, 9, .25, 4, 1] exceeds it in the
  # first two and the fourth (a zero moment allows nothing).
  np.testing.assert_allclose(rules.spike_clip(g, v, theta=10.0).numpy(),
                             [1.0, -1.0, 0.5, 0.0, 1.0], rtol=1e-6)


def test_stable_scale_by_hand():
  g = tf.constant([2.0, 0.0, 1.0, 1.0])
  v_hat = tf.constant([1.0, 1.0, 0.25, 1e-20])
  # g^2 / max(v_hat, eps^2 = 1e-4) = [4, 0, 4, 1e4]: RMS = sqrt(2502).
  sigma, _ = rules.make_rule("stable", eps=1e-2)(g, g, g, 0.1,
                                                 second_moment=v_hat)
  np.testing.assert_allclose(sigma.numpy(), 1 / np.sqrt(2502.0), rtol=1e-5)


def _run(opt, var, grads):
  for g in grads:
    opt.apply_gradients([(tf.constant(g), var)])


@pytest.mark.parametrize("method", ["adagc", "zclip"])
def test_rule_state_is_checkpointed_and_resumes(method, tmp_path):
  # 30 steps, checkpoint, 30 more in a fresh optimizer restored from it:
  # the same weights as 60 uninterrupted steps only if the rule's state
  # (its EMA of norms, its step count) came back with the checkpoint.
  params = STATEFUL[method]
  rng = np.random.default_rng(13)
  init = rng.normal(size=(6, 4)) * 0.3
  grads = [_gradient(rng, init.shape) for _ in range(60)]

  def fresh():
    var = tf.Variable(init, dtype=tf.float64)
    opt = ScaledAdagrad(0.3, clipping=method, clipping_params=params)
    return var, opt

  var, opt = fresh()
  _run(opt, var, grads)
  straight = var.numpy()

  var, opt = fresh()
  _run(opt, var, grads[:30])
  path = tf.train.Checkpoint(var=var, opt=opt).save(str(tmp_path / "ckpt"))
  state = opt._rule_states[0].numpy()
  assert state[-1] == 30  # its step count
  var, opt = fresh()
  opt.build([var])
  tf.train.Checkpoint(var=var, opt=opt).restore(path).assert_consumed()
  np.testing.assert_array_equal(opt._rule_states[0].numpy(), state)
  _run(opt, var, grads[30:])
  np.testing.assert_allclose(var.numpy(), straight, rtol=1e-12)

  # Without the state (a rule restarting its warm-up) the weights differ:
  # the test can tell.
  var, opt = fresh()
  _run(opt, var, grads[:30])
  var2, opt2 = fresh()
  var2.assign(var)
  _run(opt2, var2, grads[30:])
  assert not np.allclose(var2.numpy(), straight, rtol=1e-6)


def test_second_moment_rules_refuse_adagrad():
  with pytest.raises(ValueError, match="reads Adam's second moment"):
    ScaledAdagrad(0.1, clipping="stable")


def test_factory_builds_the_newer_methods_with_their_defaults():
  adagc = build_optimizer("adagc", 0.1)
  assert adagc.clipping_params == {"lambda_rel": 1.05, "lambda_abs": 1.0,
                                   "beta": 0.98, "warmup_steps": 100}
  zclip = build_optimizer("zclip", 0.1, zclip_z_thresh=3.0)
  assert zclip.clipping_params["z_thresh"] == 3.0
  spam = build_optimizer("spam", 0.1)
  assert isinstance(spam, ScaledAdam) and spam.spike_threshold == 5000.0
  assert spam.clipping == "naive"
  stable = build_optimizer("stable_adam", 0.1)
  assert stable.clipping == "stable"
  assert stable.clipping_params == {"clip_threshold": 1.0, "eps": 1e-8}
  assert build_optimizer("adam", 0.1).spike_threshold is None
