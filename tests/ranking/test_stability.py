"""The in-graph divergence monitor, per task, by hand."""

import numpy as np
import pytest
import tensorflow as tf

from ranking.stability import (StabilityMonitor, step_is_finite,
                               zero_if_nonfinite)
from ranking.tasks import Task

CLICK, TIME = Task("click", "binary"), Task("time", "regression")


def feed(monitor, rows, first_step=1):
  for step, losses in enumerate(rows, first_step):
    monitor.observe(tf.constant(losses, tf.float32),
                    tf.constant(step, tf.int64))


def test_micro_blowup_nonfinite_and_the_clipped_level_per_task():
  monitor = StabilityMonitor(tasks=[CLICK, TIME], micro_factor=2.0,
                             blowup_factor=10.0, ema_decay=0.5,
                             warmup_steps=2)
  feed(monitor, [[1, 4], [1, 4], [3, 4], [1, 80], [float("nan"), 4]])
  # Level: seeded [1, 4]; step 2 [1, 4]; step 3: click 3 > 2 x 1 is a
  # micro spike (warm), level 0.5 + 0.5 min(3, 2) = 1.5, then 1.25; step 4:
  # time 80 is 20x its level 4, a blow-up (and a spike), level 2 + 0.5
  # min(80, 8) = 6;
  # step 5: NaN, the level stays.
  np.testing.assert_allclose(monitor.level.numpy(), [1.25, 6.0])
  np.testing.assert_array_equal(monitor.micro.numpy(), [1, 1])
  np.testing.assert_array_equal(monitor.blowups.numpy(), [0, 1])
  np.testing.assert_array_equal(monitor.first_blowup_step.numpy(), [-1, 4])
  assert float(monitor.peak_ratio.numpy()[1]) == 20.0
  np.testing.assert_array_equal(monitor.first_loss.numpy(), [1, 4])
  assert monitor.blew_up and int(monitor.open_blowup_task.numpy()) == 1
  verdict = monitor.verdict()
  assert verdict["diverged_at_step"] == 5
  assert verdict["divergence_reason"] == "non-finite loss (click)"
  assert verdict["micro_divergences"] == 2
  assert verdict["micro_divergences_per_task"] == {"click": 1, "time": 1}
  assert verdict["blowups"] == {"time": {"steps": 1, "first_step": 4,
                                         "peak_ratio": 20.0}}


def test_an_early_blowup_counts_inside_the_warmup():
  monitor = StabilityMonitor(tasks=[TIME], warmup_steps=20)
  feed(monitor, [[2.0], [100.0], [1.9]])  # 50x the first loss at step 2
  assert int(monitor.micro.numpy()[0]) == 0  # micro spikes wait
  assert monitor.first_blowup_step.numpy()[0] == 2 and monitor.blew_up
  assert not monitor.diverged  # not yet: it may come back


def test_a_corrupt_first_batch_does_not_blind_the_detector():
  monitor = StabilityMonitor(tasks=[TIME], collapse_patience_steps=0)
  feed(monitor, [[8.5e6], [4.0], [4.0], [4e4]])
  # Step 2 brings the level down to 2 x 4 = 8; step 3 to 7.96; step 4 is
  # 4e4 / 7.96 ~ 5000x it.
  assert monitor.first_blowup_step.numpy()[0] == 4
  # The RMSE bar: 10x the lower of the untrained RMSE (sqrt 8.5e6 = 2915)
  # and the best so far (1.0).
  monitor.observe_eval({"time/rmse": 1.0}, 5)
  monitor.observe_eval({"time/rmse": 9.0}, 6)
  assert not monitor.diverged
  monitor.observe_eval({"time/rmse": 30.0}, 7)
  assert monitor.verdict()["divergence_reason"].startswith(
      "time: held-out RMSE above 10x")


def test_a_rare_labels_spikes_below_the_untrained_loss_are_no_blowup():
  # A rare label: the untrained loss 0.66, then batches without a positive
  # at 0.004 (the level falls to 2 x 0.004 at once, then towards 0.004)
  # and twelve in a row with one (0.1, over 10x the level): below the
  # untrained loss, so no blow-up and no explosion (judged by the level
  # alone, twelve blow-ups in a row). A spike to 0.9 passes both.
  forward = Task("forward", "binary")
  monitor = StabilityMonitor(tasks=[forward])
  feed(monitor, [[0.66]] + [[0.004]] * 10 + [[0.1]] * 12)
  assert 0.1 > 10 * float(monitor.level.numpy()[0])
  assert monitor.blowups.numpy()[0] == 0 and not monitor.diverged
  feed(monitor, [[0.004]] * 10 + [[0.9]], first_step=24)
  assert monitor.blowups.numpy()[0] == 1
  assert monitor.first_blowup_step.numpy()[0] == 34


def test_a_finite_but_exploding_loss_is_full_divergence():
  monitor = StabilityMonitor(tasks=[CLICK], explosion_patience_steps=3)
  # The level stays ~2 (clipped input); 1e33 on steps 3, 4, 5: dated 3.
  feed(monitor, [[2.0], [1.5], [1e33], [1e33], [1e33], [1e33]])
  verdict = monitor.verdict()
  assert verdict["diverged"] and verdict["diverged_at_step"] == 3
  assert verdict["divergence_reason"].startswith(
      "click: loss above 10x its recent level for 3 steps")
  brief = StabilityMonitor(tasks=[CLICK], explosion_patience_steps=3)
  feed(brief, [[2.0], [1e33], [1e33], [1.0], [1e33]])
  assert not brief.diverged and int(brief.blowups.numpy()[0]) == 3


def test_a_blowup_the_model_does_not_come_back_from_is_divergence():
  gone = StabilityMonitor(tasks=[CLICK, TIME], collapse_patience_steps=100)
  feed(gone, [[0.7, 4.0], [0.7, 4e4]])  # time blows up at step 2
  gone.observe_eval({"click/auc": 0.57, "click/prediction_std": 0.2}, 50)
  assert not gone.diverged  # 48 steps: still within the patience
  gone.observe_eval({"click/auc": 0.58, "click/prediction_std": 0.2}, 102)
  verdict = gone.verdict()
  assert verdict["diverged"] and verdict["diverged_at_step"] == 2
  assert verdict["divergence_reason"] == (
      "time: loss blew up (1e+04x its recent level) and the held-out click "
      "AUC did not come back to >= 0.6")
  back = StabilityMonitor(tasks=[CLICK, TIME], collapse_patience_steps=100)
  feed(back, [[0.7, 4.0], [0.7, 4e4]])
  back.observe_eval({"click/auc": 0.65, "click/prediction_std": 0.2}, 50)
  assert not back.blew_up
  back.observe_eval({"click/auc": 0.58, "click/prediction_std": 0.2}, 200)
  assert not back.diverged  # 0.58 is no collapse: it never fell to 0.55
  ended = StabilityMonitor(tasks=[CLICK, TIME])
  feed(ended, [[0.7, 4.0], [0.7, 4e4]])
  ended.observe_eval({"click/auc": 0.52}, 20, final=True)
  assert ended.verdict()["diverged_at_step"] == 2


def test_an_auc_that_falls_after_learning_and_stays_down():
  monitor = StabilityMonitor(tasks=[CLICK], collapse_patience_steps=100)
  for step, auc in [(10, 0.58), (20, 0.65), (30, 0.6), (40, 0.52),
                    (139, 0.5)]:
    monitor.observe_eval({"click/auc": auc}, step)
    assert not monitor.diverged  # fallen at 40, but not for 100 steps yet
  monitor.observe_eval({"click/auc": 0.5}, 140)
  assert monitor.verdict()["diverged_at_step"] == 40
  assert monitor.verdict()["divergence_reason"] == (
      "click: held-out AUC fell to <= 0.55 after >= 0.6")
  dip = StabilityMonitor(tasks=[CLICK])  # a dip at a shift of the data
  for step, auc in [(10, 0.7), (20, 0.5), (30, 0.72)]:
    dip.observe_eval({"click/auc": auc}, step)
  assert not dip.diverged


def test_other_binary_tasks_are_judged_at_the_end():
  tasks = [CLICK, Task("like", "binary")]
  noisy = StabilityMonitor(tasks=tasks, collapse_patience_steps=10)
  for step, auc in [(10, 0.65), (20, 0.5), (40, 0.5), (60, 0.62)]:
    noisy.observe_eval({"click/auc": 0.7, "like/auc": auc}, step)
  assert not noisy.diverged  # down for 40 steps, then back
  ended = StabilityMonitor(tasks=tasks)
  ended.observe_eval({"click/auc": 0.7, "like/auc": 0.65}, 10)
  ended.observe_eval({"click/auc": 0.7, "like/auc": 0.5}, 20, final=True)
  assert ended.verdict()["divergence_reason"] == (
      "like: held-out AUC fell to <= 0.55 after >= 0.6")


def test_a_task_with_too_few_examples_of_a_class_is_not_judged():
  tasks = [CLICK, Task("follow", "binary")]
  monitor = StabilityMonitor(tasks=tasks, min_auc_examples=30)
  lines = monitor.set_eval_counts({"click": (1123, 622), "follow": (7, 1738)})
  assert lines == [
      "follow: 7 positives and 1,738 negatives on the evaluation day, fewer "
      "than StabilityMonitor.min_auc_examples = 30 of a class: its AUC is "
      "reported but not judged for divergence"]
  # follow rises to 0.8, then falls to chance and to a collapse's std at
  # the end: neither is judged; click, with enough of both, is.
  monitor.observe_eval({"click/auc": 0.7, "follow/auc": 0.8}, 10)
  monitor.observe_eval({"click/auc": 0.7, "follow/auc": 0.5,
                        "follow/prediction_mean": 0.01,
                        "follow/prediction_std": 0.0}, 20, final=True)
  assert not monitor.diverged
  assert monitor.verdict()["best_eval_auc"] == pytest.approx(0.7)
  # 30 of each class is enough.
  judged = StabilityMonitor(tasks=tasks, min_auc_examples=30)
  assert judged.set_eval_counts({"click": (1123, 622),
                                 "follow": (30, 1715)}) == []
  judged.observe_eval({"click/auc": 0.7, "follow/auc": 0.8}, 10)
  judged.observe_eval({"click/auc": 0.7, "follow/auc": 0.5}, 20, final=True)
  assert judged.verdict()["divergence_reason"] == (
      "follow: held-out AUC fell to <= 0.55 after >= 0.6")
  with pytest.raises(ValueError, match="min_auc_examples must be >= 1"):
    StabilityMonitor(tasks=tasks, min_auc_examples=0)


def test_collapsed_predictions_judged_against_the_base_rate():
  # Mean 0.5: 2 sqrt(0.25) = 1, std < 0.01 collapses.
  half = StabilityMonitor(tasks=[CLICK], collapse_patience_steps=100)
  half.observe_eval({"click/auc": 0.5, "click/prediction_std": 0.006,
                     "click/prediction_mean": 0.5}, 10)
  assert not half.diverged  # not yet: it may be a slow start
  half.observe_eval({"click/auc": 0.5, "click/prediction_std": 0.007,
                     "click/prediction_mean": 0.5}, 110)
  assert half.diverged and half.verdict()["diverged_at_step"] == 10
  # A rare event, mean 0.01: the bar is 0.01 x 2 sqrt(0.0099) = 0.00199.
  alive = StabilityMonitor(tasks=[CLICK])
  alive.observe_eval({"click/auc": 0.5, "click/prediction_std": 0.003,
                      "click/prediction_mean": 0.01}, 10, final=True)
  assert not alive.diverged
  dead = StabilityMonitor(tasks=[CLICK])
  dead.observe_eval({"click/auc": 0.5, "click/prediction_std": 0.0015,
                     "click/prediction_mean": 0.01}, 10, final=True)
  assert dead.diverged
  good = StabilityMonitor(tasks=[CLICK])  # a good model of a rare event
  good.observe_eval({"click/auc": 0.8, "click/prediction_std": 0.001,
                     "click/prediction_mean": 0.01}, 10, final=True)
  assert not good.diverged


def test_a_collapse_that_recovers_resets_the_clock():
  monitor = StabilityMonitor(tasks=[CLICK], collapse_patience_steps=100)
  dead = {"click/auc": 0.5, "click/prediction_std": 0.006}
  monitor.observe_eval(dead, 49)
  monitor.observe_eval({"click/auc": 0.56, "click/prediction_std": 0.03},
                       100)
  monitor.observe_eval(dead, 150)
  monitor.observe_eval(dead, 200)  # only 50 steps collapsed
  assert not monitor.diverged
  with pytest.raises(ValueError, match="collapse_patience_steps"):
    StabilityMonitor(collapse_patience_steps=-1)
  with pytest.raises(ValueError, match="blowup_factor"):
    StabilityMonitor(blowup_factor=1.0)


def test_rmse_blowup_against_the_untrained_model_and_nonfinite_metrics():
  monitor = StabilityMonitor(tasks=[TIME], collapse_patience_steps=10)
  feed(monitor, [[4.0]])  # untrained RMSE sqrt(4) = 2; the bar is 20
  monitor.observe_eval({"time/rmse": 19.0}, 5)
  monitor.observe_eval({"time/rmse": 25.0}, 10)
  assert not monitor.diverged
  monitor.observe_eval({"time/rmse": 30.0}, 20)
  verdict = monitor.verdict()
  assert verdict["diverged_at_step"] == 10
  assert verdict["divergence_reason"] == (
      "time: held-out RMSE above 10x the untrained model's or the best")
  nan = StabilityMonitor(tasks=[CLICK])
  nan.observe_eval({"click/auc": float("nan")}, 7)
  assert nan.verdict()["divergence_reason"] == (
      "click: non-finite predictions on the held-out day")


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
