"""The in-graph divergence monitor, by hand."""

import numpy as np
import tensorflow as tf

from ranking.stability import StabilityMonitor, zero_if_nonfinite


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
  assert verdict["divergence_reason"] == "non-finite loss"


def test_auc_collapse_after_learning():
  monitor = StabilityMonitor()
  for step, auc in [(10, 0.58), (20, 0.65), (30, 0.6), (40, 0.52)]:
    monitor.observe_eval(auc, 0.1, step)
    assert monitor.diverged == (step == 40)
  assert monitor.verdict()["diverged_at_step"] == 40


def test_constant_predictions_are_a_collapse_slow_learning_is_not():
  collapsed = StabilityMonitor(collapse_std=0.01)
  collapsed.observe_eval(0.5, 0.006, 10)
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


def test_nonfinite_loss_zeroes_every_gradient():
  dense = tf.constant([1.0, 2.0])
  sparse = tf.IndexedSlices(tf.constant([[3.0]]), tf.constant([1]),
                            tf.constant([4, 1]))
  kept = zero_if_nonfinite(tf.constant(0.3), [dense, sparse, None])
  np.testing.assert_array_equal(kept[0], [1.0, 2.0])
  np.testing.assert_array_equal(kept[1].values, [[3.0]])
  assert kept[2] is None
  zeroed = zero_if_nonfinite(tf.constant(float("inf")), [dense, sparse])
  np.testing.assert_array_equal(zeroed[0], [0.0, 0.0])
  np.testing.assert_array_equal(zeroed[1].values, [[0.0]])
