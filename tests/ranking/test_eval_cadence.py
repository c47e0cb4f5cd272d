"""When the trainer evaluates: every eval_every_steps steps, at the end of
every eval_every_days-th training day (0: none), and at the end of the run.

The tiny run with MovingWindow.steps_per_day = 15 trains days 0..4 (the
evaluation day is 5): day ends at steps 15, 30, 45, 60, 75, and the run
ends at 75. (The default, eval_every_days = 1, adds every day end: 15, 20,
30, 40, 45, 60, 75.)
"""

import json
import os

import pytest

from tests.runs import train

SCHEDULE = ["MovingWindow.steps_per_day=15", "Trainer.eval_every_steps=20",
            "Trainer.steps_per_loop=10"]


def _eval_steps(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if r["split"] == "eval"]


@pytest.mark.parametrize("days,expected", [
    # Multiples of 20 (20, 40, 60), the end (75), and no day end.
    (0, [20, 40, 60, 75]),
    # ... and the ends of days 1 and 3 (30, 60): every second day.
    (2, [20, 30, 40, 60, 75]),
])
def test_evaluations_follow_the_cadence(tmp_path, days, expected):
  # The evaluation day's 10,000 examples have fewer than 10,000 of each
  # class: every binary task is named as left out of the AUC findings.
  summary, lines = train(str(tmp_path / "run"), SCHEDULE + [
      f"Trainer.eval_every_days={days}",
      "StabilityMonitor.min_auc_examples=10000"])
  binary = sorted(k[:-len("/auc")] for k in summary["final_metrics"]
                  if k.endswith("/auc"))
  unjudged = sorted(l.split(":")[0] for l in lines
                    if l.endswith("not judged for divergence"))
  assert binary and unjudged == binary, lines
  assert summary["final_step"] == 75, summary
  assert _eval_steps(str(tmp_path / "run")) == expected
  assert sum(l.startswith("eval day 5 at step") for l in lines) == len(
      expected)
  # The evaluation day and its date, once, when the run is built.
  built = [l for l in lines if l.startswith("evaluation day")]
  assert len(built) == 1 and built[0].startswith(
      "evaluation day 5 (2022-04-20): 10,000 examples; click: "), built


def test_eval_every_days_must_be_a_count(tmp_path):
  with pytest.raises(ValueError, match="Trainer.eval_every_days must be >= "
                     "0 \\(0: no day-end evaluations\\), got -1"):
    train(str(tmp_path / "run"), ["Trainer.eval_every_days=-1"])


@pytest.mark.parametrize("gap,expected", [
    # Every day end and multiple of 20: 15, 20, 30, 40, 45, 60, 75.
    (0, [15, 20, 30, 40, 45, 60, 75]),
    # 20 is 5 steps after 15 and 45 is 5 after 40: skipped; the end (75)
    # always runs.
    (6, [15, 30, 40, 60, 75]),
    # 30 comes 15 after 15, 40 10 after 30: all within 16 but the end.
    (16, [15, 40, 60, 75]),
])
def test_no_evaluation_a_few_steps_after_another(tmp_path, gap, expected):
  train(str(tmp_path / "run"), SCHEDULE + [
      f"Trainer.min_eval_gap_steps={gap}",
      "StabilityMonitor.min_auc_examples=10000"])
  assert _eval_steps(str(tmp_path / "run")) == expected


def test_min_eval_gap_must_be_a_count(tmp_path):
  with pytest.raises(ValueError, match="Trainer.min_eval_gap_steps must be "
                     ">= 0"):
    train(str(tmp_path / "run"), ["Trainer.min_eval_gap_steps=-1"])
