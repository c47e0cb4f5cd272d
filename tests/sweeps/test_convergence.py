"""convergence.md, the would-be factors of Fig. 4b and claim 6, from
hand-made run files."""

import json
import os

import gin
import numpy as np
import pytest

from sweeps import claims
from sweeps import convergence
from sweeps import factors
from sweeps import grid
from sweeps import table


def make_sweep(tmp_path, **overrides):
  args = dict(name="hand", models={"Small": "s.gin"},
              methods=("naive", "clippy"), learning_rate=0.1,
              lr_multipliers=(1,), seeds=(0, 1), thresholds={},
              results_dir=str(tmp_path / "results"),
              runs_dir=str(tmp_path / "runs"))
  args.update(overrides)
  with gin.unlock_config():
    return grid.Sweep(**args)


def summary(diverged=False, at=None, final_step=1000):
  return {"diverged": diverged, "diverged_at_step": at,
          "divergence_reason": "x" if diverged else None,
          "micro_divergences": 0, "final_step": final_step,
          "scheduled_steps": 1000,
          "final_metrics": {"click/auc": 0.8, "watch_time/rmse": 1.0}}


def write_run(directory, name, s, records):
  path = os.path.join(directory, name)
  os.makedirs(path)
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump(s, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def evals(aucs, rmses=None):
  """Evaluations at steps 100, 200, ..., one per value."""
  return [{"step": 100 * (i + 1), "split": "eval", "click/auc": a,
           "watch_time/rmse": (rmses or [1.0] * len(aucs))[i]}
          for i, a in enumerate(aucs)]


def test_tail_change_starts_at_the_evaluation_nearest_80_percent():
  records = {e["step"]: e for e in evals(
      [0.6, 0.7, 0.75, 0.78, 0.79, 0.8, 0.805, 0.81, 0.811, 0.812])}
  # 80% of 1000 steps: from step 800 (0.81) to step 1000 (0.812).
  assert convergence.tail_change(records, "click/auc", 1000) == (
      800, 0.81, 0.812)
  # A run that stopped at step 950: 80% is 760, nearer to 800 than to 700.
  assert convergence.tail_change(records, "click/auc", 950) == (
      800, 0.81, 0.812)
  # At step 875, 80% is 700: from 700, not from 800.
  assert convergence.tail_change(records, "click/auc", 875) == (
      700, 0.805, 0.812)
  # A tie (80% of 937.5 is 750) goes to the earlier evaluation.
  assert convergence.tail_change(records, "click/auc", 937.5)[0] == 700
  # A single evaluation has no tail.
  assert convergence.tail_change({1000: records[1000]}, "click/auc",
                                 1000) is None


def test_convergence_md_counts_flat_moving_and_never_learned(tmp_path):
  sweep = make_sweep(tmp_path)
  runs = str(tmp_path / "collected")
  base = [0.6, 0.7, 0.75, 0.78, 0.79, 0.8, 0.8, 0.8]
  # naive s0: +0.1 points over the tail (flat); s1: +2 points (moving).
  write_run(runs, "small-naive-lr1x-s0", summary(),
            evals(base + [0.8005, 0.801], [2, 2, 2, 2, 2, 2, 2, 1.5, 1.4,
                                           1.3]))
  write_run(runs, "small-naive-lr1x-s1", summary(),
            evals(base + [0.81, 0.82], [1.0] * 10))
  # clippy s0 at chance throughout; s1 diverged (left out).
  write_run(runs, "small-clippy-lr1x-s0", summary(), evals([0.5] * 10))
  write_run(runs, "small-clippy-lr1x-s1", summary(True, 300, 300),
            evals([0.6, 0.7, 0.5]))
  summaries = {n: json.load(open(os.path.join(runs, n, "summary.json")))
               for n in os.listdir(runs)}
  rows = {r["method"]: r for r in convergence.cell_rows(sweep, summaries,
                                                         runs)}
  naive = rows["naive"]
  # Mean change (0.001 + 0.02) / 2 = 1.05 points; RMSE (-0.2 + 0) / 2.
  assert naive["auc_points"] == pytest.approx(1.05)
  assert naive["auc_points_max"] == pytest.approx(2.0)
  assert naive["rmse_change"] == pytest.approx(-0.1)
  assert (naive["flat"], naive["moving"], naive["never"]) == (1, [1], [])
  assert naive["final_auc"] == pytest.approx((0.801 + 0.82) / 2)
  clippy = rows["clippy"]
  assert (clippy["seeds"], clippy["flat"], clippy["never"]) == (1, 0, [0])
  text = convergence.markdown(sweep, summaries, runs)
  # The best method (highest final AUC) is naive, flat on 1 of 2 seeds.
  assert ("- Small: best method Naive (final click/auc 0.8105) is NOT flat "
          "on 1/2 seeds (largest tail change 2.00 points).") in text
  assert ("| Small | Naive | 1x | 800 | 0.8105 | +1.05 | -0.1000 | 1/2 | "
          "s1 | - |") in text
  assert "| Small | Clippy | 1x | 800 | 0.5000 | +0.00 | +0.0000 | 0/1 | " \
         "- | s0 |" in text


def diagnostics(step, **layers):
  record = {"step": step, "split": "train"}
  for layer, (g, gw, rw) in layers.items():
    record[f"diagnostics/{layer}/sigma"] = 1.0
    record[f"diagnostics/{layer}/grad_norm"] = g
    record[f"diagnostics/{layer}/grad_to_weight_norm"] = gw
    record[f"diagnostics/{layer}/max_direction_to_weight"] = rw
  return record


def test_smallest_factors_by_hand():
  train = {
      10: diagnostics(10, a=(2.0, 0.5, 100.0), b=(0.05, 0.001, 1.0)),
      20: diagnostics(20, a=(None, None, None), b=(0.0, 0.0, 0.0)),
  }
  got = factors.smallest_factors(train, ["a", "b"], eta=0.1, gc=0.1,
                                 agc=0.01)
  # Step 10, layer a: GC 0.1/2, AGC 0.01/0.5, Clippy 0.5/(0.1*100); layer b
  # needs none (2, 10, 5 -> 1). Step 20: nothing recorded or zero norms.
  np.testing.assert_allclose(got["gc"], [0.05, 1.0])
  np.testing.assert_allclose(got["agc"], [0.02, 1.0])
  np.testing.assert_allclose(got["clippy"], [0.05, 1.0])


K = "ranker/bottom/dense_0/kernel"


def claim6_run(tmp_path, grad_norm):
  sweep = make_sweep(tmp_path, methods=("naive", "gc", "clippy"),
                     thresholds={"gc": (1e-2,)}, lr_multipliers=(1, 2),
                     seeds=(0,))
  runs = str(tmp_path / "collected")
  quiet = (1e-4, 1e-5, 1.0)  # every factor 1 at eta 0.2
  records = [diagnostics(s, **{K: quiet}) for s in range(0, 551, 25)]
  # At step 275 (in the window 50-550): Clippy 0.5/(0.2*1000) = 0.0025.
  records[11] = diagnostics(275, **{K: (grad_norm, 1e-3, 1000.0)})
  # Smaller factors outside the window (250 steps either side of the
  # divergence at 300) must not count.
  records[1] = diagnostics(25, **{K: (1.0, 1.0, 1e6)})
  records.append(diagnostics(575, **{K: (1.0, 1.0, 1e6)}))
  summaries = {
      "small-naive-lr1x-s0": summary(),
      "small-naive-lr2x-s0": summary(True, 300, 575),
      "small-gc-1e-02-lr1x-s0": summary(),
      "small-gc-1e-02-lr2x-s0": summary(),
      "small-clippy-lr1x-s0": summary(),
      "small-clippy-lr2x-s0": summary(),
  }
  write_run(runs, "small-naive-lr2x-s0", summaries["small-naive-lr2x-s0"],
            records)
  return claims.clippy_factor_smaller(
      sweep, table.cells(sweep, summaries), summaries, runs)


def test_claim6_holds_when_clippy_clips_100x_harder(tmp_path):
  # GC 0.01/0.002 -> 1 and AGC 0.001/0.001 = 1: both 400x Clippy's.
  ok, numbers = claim6_run(tmp_path, grad_norm=0.002)
  assert ok is True
  assert numbers == (
      "small-naive-lr2x-s0 (diverged at step 300), smallest factor over "
      "layers and summaries at steps 50-550: Clippy 0.0025, GC (λ=0.01) 1 (400x "
      "Clippy's), AGC (λ=0.001) 1 (400x Clippy's)")


def test_claim6_fails_when_gc_clips_nearly_as_hard(tmp_path):
  # GC 0.01/0.5 = 0.02: only 8x Clippy's.
  ok, numbers = claim6_run(tmp_path, grad_norm=0.5)
  assert ok is False
  assert "GC (λ=0.01) 0.02 (8x Clippy's)" in numbers
