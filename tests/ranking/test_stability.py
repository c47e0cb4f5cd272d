"""The in-graph divergence monitor, by hand."""

import numpy as np
import pytest
import tensorflow as tf

from ranking.stability import (StabilityMonitor, step_is_finite,
                                zero_if_nonfinite)


def test_micro_divergence_nonfinite_and_ema():
  monitor = StabilityMonitor(micro_factor=2.0, ema_decay=0.5, warmup_steps=2)
  for step, loss in enumerate([1.0, 1.0, 1.0, 3.0, float("nan"), 1.0], 1):
    monitor.observe(tf.constant(loss), tf.constant(step, tf.int64))
  # EMA: 1, 1, 1 -> step 4 loss 3 > 2 * 1 is a spike; EMA 2; NaN skipped;
  # then 0.5 * 2 + 0.5 * 1 = 1.5.
  assert int(monitor.micro_divergences) == 1
  assert int(monitor.nonfinite_steps) == 1
  assert int(monitor.first_nonfinite_step) == 5
  assert float(monitor.loss_ema) == 1.5
  assert monitor.diverged
  verdict = monitor.verdict()
  assert verdict["diverged_at_step"] == 5
  assert verdict["divergence_reason"] == "non-finite loss or gradient"


def test_auc_collapse_after_learning():
  monitor = StabilityMonitor()
  for step, auc in [(10, 0.58), (20, 0.65), (30, 0.6), (40, 0.52)]:
    monitor.observe_eval(auc, 0.1, step)
    assert monitor.diverged == (step == 40)
  assert monitor.verdict()["diverged_at_step"] == 40


def test_constant_predictions_are_a_collapse_slow_learning_is_not():
  collapsed = StabilityMonitor(collapse_std=0.01, collapse_patience_steps=100)
  collapsed.observe_eval(0.5, 0.006, 10)
  assert not collapsed.diverged  # not yet: it may be a slow start
  collapsed.observe_eval(0.5, 0.007, 109)
  assert not collapsed.diverged
  collapsed.observe_eval(0.5, 0.006, 110)
  assert collapsed.diverged
  verdict = collapsed.verdict()
  assert verdict["diverged_at_step"] == 10
  assert verdict["divergence_reason"].startswith("collapsed")
  slow = StabilityMonitor(collapse_std=0.01)
  for step, auc in [(10, 0.47), (20, 0.5)]:  # never learned yet, but alive
    slow.observe_eval(auc, 0.3, step)
  assert not slow.diverged and not slow.verdict()["diverged"]
  rare = StabilityMonitor(collapse_std=0.01)
  rare.observe_eval(0.8, 0.004, 10)  # a good model of a rare event
  assert not rare.diverged


def test_a_collapse_that_recovers_or_ends_the_run():
  recovered = StabilityMonitor(collapse_std=0.01, collapse_patience_steps=100)
  recovered.observe_eval(0.5, 0.006, 49)   # base rate at the first eval
  recovered.observe_eval(0.56, 0.03, 100)  # then learning: the clock resets
  recovered.observe_eval(0.5, 0.006, 150)
  recovered.observe_eval(0.5, 0.006, 200)  # only 50 steps collapsed
  assert not recovered.diverged
  ended = StabilityMonitor(collapse_std=0.01, collapse_patience_steps=100)
  ended.observe_eval(0.5, 0.006, 30)
  ended.observe_eval(0.5, 0.006, 40, final=True)  # no more training
  assert ended.diverged and ended.verdict()["diverged_at_step"] == 30
  with pytest.raises(ValueError, match="collapse_patience_steps"):
    StabilityMonitor(collapse_patience_steps=-1)


def test_nonfinite_loss_zeroes_every_gradient():
  dense = tf.constant([1.0, 2.0])
  sparse = tf.IndexedSlices(tf.constant([[3.0]]), tf.constant([1]),
                            tf.constant([4, 1]))
  grads = [dense, sparse, None]
  kept = zero_if_nonfinite(step_is_finite(tf.constant(0.3), grads), grads)
  np.testing.assert_array_equal(kept[0], [1.0, 2.0])
  np.testing.assert_array_equal(kept[1].values, [[3.0]])
  assert kept[2] is None
  zeroed = zero_if_nonfinite(
      step_is_finite(tf.constant(float("inf")), grads), grads)
  np.testing.assert_array_equal(zeroed[0], [0.0, 0.0])
  np.testing.assert_array_equal(zeroed[1].values, [[0.0]])
