"""table2.md, per_task.csv and claims.md from hand-made run results."""

import csv
import json
import os

import gin
import pytest

from sweeps import claims
from sweeps import grid
from sweeps import runner
from sweeps import table


def make_sweep(tmp_path, **overrides):
  args = dict(name="hand", models={"Small": "s.gin", "Large+DCN": "l.gin"},
              methods=("naive", "gc", "clippy"), learning_rate=0.1,
              lr_multipliers=(1, 2), seeds=(0, 1, 2),
              thresholds={"gc": (1e-1, 1e-2)},
              threshold_search_model="Small",
              results_dir=str(tmp_path / "results"),
              runs_dir=str(tmp_path / "runs"))
  args.update(overrides)
  with gin.unlock_config():
    return grid.Sweep(**args)


def summary(auc, rmse=1.0, diverged=False):
  return {"diverged": diverged, "diverged_at_step": 7 if diverged else None,
          "divergence_reason": "nonfinite loss" if diverged else None,
          "micro_divergences": 0, "final_step": 10, "scheduled_steps": 10,
          "final_metrics": {"click/auc": auc, "watch_time/rmse": rmse,
                            "like/auc": float(auc) - 0.1}}


# Small: naive 1x fine, 2x diverged; GC searched (1e-2 at 2x wins);
# Clippy best at 2x. Large+DCN: naive diverges at both; GC reuses 1e-2;
# Clippy 2x.
HAND = {
    "small-naive-lr1x-s0": summary(0.70, 1.2),
    "small-naive-lr2x-s0": summary(0.75, diverged=True),
    "small-naive-lr1x-s1": summary(0.72, 1.4),
    "small-naive-lr1x-s2": summary(0.74, 1.0),
    "small-gc-1e-01-lr1x-s0": summary(0.71),
    "small-gc-1e-01-lr2x-s0": summary(0.72),
    "small-gc-1e-02-lr1x-s0": summary(0.73),
    "small-gc-1e-02-lr2x-s0": summary(0.76),
    "small-gc-1e-02-lr2x-s1": summary(0.76),
    "small-gc-1e-02-lr2x-s2": summary(0.76),
    "small-clippy-lr1x-s0": summary(0.74),
    "small-clippy-lr2x-s0": summary(0.77),
    "small-clippy-lr2x-s1": summary(0.77),
    "small-clippy-lr2x-s2": summary(0.77),
    "large_dcn-naive-lr1x-s0": summary(0.5, diverged=True),
    "large_dcn-naive-lr2x-s0": summary(0.5, diverged=True),
    "large_dcn-naive-lr1x-s1": summary(0.5, diverged=True),
    "large_dcn-naive-lr1x-s2": summary(0.5, diverged=True),
    "large_dcn-gc-1e-02-lr1x-s0": summary(0.78),
    "large_dcn-gc-1e-02-lr2x-s0": summary(0.60, diverged=True),
    "large_dcn-gc-1e-02-lr1x-s1": summary(0.60, diverged=True),
    "large_dcn-gc-1e-02-lr1x-s2": summary(0.76),
    "large_dcn-clippy-lr1x-s0": summary(0.79),
    "large_dcn-clippy-lr2x-s0": summary(0.81),
    "large_dcn-clippy-lr2x-s1": summary(0.80),
    "large_dcn-clippy-lr2x-s2": summary(0.82),
}


def test_every_hand_run_is_in_the_plan(tmp_path):
  sweep = make_sweep(tmp_path)
  results = {n: (s["final_metrics"]["click/auc"], s["diverged"])
             for n, s in HAND.items()}
  assert sorted(r.name for r in grid.plan(sweep, results)) == sorted(HAND)
  assert sweep.total_runs() == len(HAND)


def test_table_cells(tmp_path):
  sweep = make_sweep(tmp_path)
  md = table.markdown(sweep, HAND)
  rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
          for line in md.splitlines() if line.startswith("| ")}
  # Naive Small: 1x picked; AUC (0.70, 0.72, 0.74): mean 72.00, sample std
  # 2.00 points; RMSE (1.2, 1.4, 1.0): 1.2000 +- 0.2000.
  assert rows["Naive"][1:4] == ["1x", "72.00 ± 2.00", "1.2000 ± 0.2000"]
  assert rows["Naive"][4:6] == ["1x", "diverged"]
  # GC on Small: 1e-2 at 2x; on Large+DCN the reused 1e-2 picks 1x, where
  # one seed of three diverged: mean of (0.78, 0.76).
  assert rows["GC"][1:3] == ["2x, λ=0.01", "76.00 ± 0.00"]
  assert rows["GC"][4:6] == ["1x, λ=0.01", "77.00 ± 1.41 (1/3 diverged)"]
  assert rows["Clippy"][4:6] == ["2x", "81.00 ± 1.00"]
  assert "searched once, on Small" in md and "GC λ=0.01" in md


def test_per_task_csv(tmp_path):
  sweep = make_sweep(tmp_path)
  _, path = table.write(sweep, HAND, str(tmp_path))
  with open(path) as f:
    rows = list(csv.DictReader(f))
  like = [r for r in rows if r["model"] == "Small" and
          r["method"] == "naive" and r["task"] == "like"]
  assert len(like) == 1
  assert float(like[0]["mean"]) == pytest.approx(0.62)
  assert float(like[0]["std"]) == pytest.approx(0.02)
  assert like[0]["seeds"] == "3" and like[0]["seeds_diverged"] == "0"


def write_run(directory, name, s, sigmas=None):
  path = os.path.join(directory, name)
  os.makedirs(path)
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump(s, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for step in (10, 20):
      record = {"step": step, "split": "train"}
      for layer, sigma in (sigmas or {}).items():
        record[f"diagnostics/{layer}/sigma"] = sigma
      f.write(json.dumps(record) + "\n")


def test_claims(tmp_path):
  sweep = make_sweep(tmp_path)
  runs = str(tmp_path / "collected")
  for name, s in HAND.items():
    sigmas = ({"ranker/bottom/dense_0/kernel": 0.2,
               "ranker/bottom/dense_1/kernel": 0.4,
               "logit/kernel": 1.0, "logit/kernel_1": 0.8}
              if name == "large_dcn-clippy-lr2x-s0" else None)
    write_run(runs, name, s, sigmas)
  checked = claims.check(sweep, HAND, runs)
  verdicts = [ok for _, ok, _ in checked]
  # (6) undecided: the diverged naive run has no per-layer diagnostics.
  assert verdicts == [True, True, True, True, True, None]
  assert checked[5][2] == ("large_dcn-naive-lr2x-s0 has no per-layer "
                           "diagnostics")
  # (3) Large+DCN: Clippy 0.81 vs the best baseline, GC 0.77 - 0.0141.
  assert "best baseline GC 0.7700" in checked[2][2]
  # (4) gains: Small 0.77 - 0.76 = +1.00 points; Large+DCN 0.81 - 0.77;
  # noise sqrt(0 + 0 + 0.01^2 + 0.0141^2) = 1.73 points.
  assert checked[3][2] == (
      "Small: +1.00 AUC points, Large+DCN: +4.00 AUC points; growth Small "
      "to Large+DCN +3.00 points against a noise of 1.73; monotone: yes")
  # (5) bottom mean sigma (0.2+0.4)/2 = 0.3 vs heads 0.9.
  assert "0.3000" in checked[4][2] and "0.9000" in checked[4][2]


def test_a_gain_that_grows_within_the_noise_does_not_hold(tmp_path):
  sweep = make_sweep(tmp_path)
  results = dict(HAND)
  # Large+DCN Clippy seeds 0.81, 0.77, 0.79 -> 0.79 +- 0.02: growth 1 point
  # against sqrt(0.02^2 + 0.0141^2) = 2.45 points.
  results["large_dcn-clippy-lr2x-s1"] = summary(0.77)
  results["large_dcn-clippy-lr2x-s2"] = summary(0.79)
  ok, numbers = claims.gain_over_gc_grows(sweep, table.cells(sweep, results))
  assert ok is False
  assert "growth Small to Large+DCN +1.00 points against a noise of 2.45" in (
      numbers)


def test_claims_fail_when_clippy_diverges_at_2x(tmp_path):
  sweep = make_sweep(tmp_path)
  results = dict(HAND)
  results["small-clippy-lr2x-s1"] = summary(0.5, diverged=True)
  ok, numbers = claims.clippy_trains_at_2x(sweep, results)
  assert ok is False and "Small: 2/3 runs at 2x" in numbers


def test_runs_csv_lists_runs_in_plan_order(tmp_path):
  sweep = make_sweep(tmp_path)
  path = runner.write_runs_csv(sweep, HAND)
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(HAND)
  assert rows[0]["run"] == "small-naive-lr1x-s0"
  gc = [r for r in rows if r["run"] == "large_dcn-gc-1e-02-lr1x-s1"][0]
  assert gc["diverged"] == "True" and gc["threshold"] == "0.01"
  assert gc["threshold_param"] == "build_optimizer.clip_norm"
  assert float(gc["learning_rate"]) == pytest.approx(0.1)


def test_finished_runs_with_other_settings_are_refused(tmp_path):
  sweep = make_sweep(tmp_path, methods=("naive",), models={"Small": "s.gin"},
                     seeds=(0,))
  collected = os.path.join(sweep.results_dir, "hand", "runs")
  run = grid.Run("Small", "naive", None, 1.0, 0, "select")
  write_run(collected, run.name, summary(0.7))
  spec = run.spec(sweep)
  spec["gin_params"] = [p.replace("0.1", "0.05") for p in spec["gin_params"]]
  with open(os.path.join(collected, run.name, "run.json"), "w") as f:
    json.dump(spec, f)
  with pytest.raises(ValueError, match="small-naive-lr1x-s0: recorded"):
    runner.run_sweep(sweep, log=lambda s: None)
  # The same settings pass the check (then the 2x run would start; stop
  # before starting any).
  with open(os.path.join(collected, run.name, "run.json"), "w") as f:
    json.dump(run.spec(sweep), f)
  runner.run_sweep(sweep, log=lambda s: None, max_new_runs=0)


def test_non_finite_metrics_are_left_out_and_said(tmp_path):
  sweep = make_sweep(tmp_path)
  results = dict(HAND)
  # A Small GC seed that did not diverge but ended with a NaN AUC (stored
  # as a string, as summary.json stores non-finite values).
  results["small-gc-1e-02-lr2x-s2"] = summary("nan")
  md = table.markdown(sweep, results)
  gc = [l for l in md.splitlines() if l.startswith("| GC |")][0]
  assert "76.00 ± 0.00 (1 non-finite)" in gc
  ok, numbers = claims.clippy_matches_best(sweep, table.cells(sweep, results))
  assert ok is True and "GC 0.7600 ± 0.0000" in numbers


def test_claims_wait_for_incomplete_cells(tmp_path):
  sweep = make_sweep(tmp_path)
  results = dict(HAND)
  del results["large_dcn-gc-1e-02-lr1x-s2"]
  md = table.markdown(sweep, results)
  assert "(1/3 diverged, 2/3 seeds)" not in md  # the note says both
  assert "2/3 seeds" in md
  ok, numbers = claims.clippy_matches_best(sweep, table.cells(sweep, results))
  assert ok is None and "waiting for runs of Large+DCN GC" in numbers


def test_naive_diverging_only_at_2x_holds_and_no_divergence_fails(tmp_path):
  # 1x is naive's edge of stability, so its divergences are at 2x.
  sweep = make_sweep(tmp_path)
  results = {n: s for n, s in HAND.items() if "naive" not in n}
  results.update({"small-naive-lr1x-s0": summary(0.7),
                  "small-naive-lr2x-s0": summary(0.5, diverged=True),
                  "large_dcn-naive-lr1x-s0": summary(0.7),
                  "large_dcn-naive-lr2x-s0": summary(0.7)})
  ok, numbers = claims.naive_diverges(sweep, results)
  assert ok is True
  assert numbers.startswith("Small: 1x 0/1 diverged, 2x 1/1 diverged (at "
                            "step 7)")
  results["small-naive-lr2x-s0"] = summary(0.7)
  ok, numbers = claims.naive_diverges(sweep, results)
  assert ok is False
  assert numbers == ("Small: 1x 0/1 diverged, 2x 0/1 diverged; "
                     "Large+DCN: 1x 0/1 diverged, 2x 0/1 diverged")


def test_a_partly_collected_run_is_collected_again(tmp_path):
  sweep = make_sweep(tmp_path, methods=("naive",), models={"Small": "s.gin"},
                     seeds=(0,))
  name = "small-naive-lr1x-s0"
  write_run(os.path.join(sweep.runs_dir, "hand"), name, summary(0.7))
  target = os.path.join(sweep.results_dir, "hand", "runs", name)
  os.makedirs(target)
  with open(os.path.join(target, "summary.json"), "w") as f:
    json.dump(dict(summary(0.7), wall_seconds=12.5), f)
  runner.run_sweep(sweep, log=lambda s: None, max_new_runs=0)
  assert os.path.exists(os.path.join(target, "metrics.jsonl.gz"))
  assert runner.read_summary(target)["wall_seconds"] == 12.5
