"""Whether a sweep's runs converged: convergence.md.

A run has converged when its next-day curve is flat over the last 20% of
training: the primary AUC changed by at most FLAT_AUC_POINTS between the
evaluation nearest to 80% of the run's steps (the earlier one on a tie)
and its final one. FLAT_AUC_POINTS is 0.5, about three times the sampling
error of an AUC on the CPU grid's evaluated day (0.14 points by Hanley and
McNeil for AUC 0.86 on 40,800 positives and 23,200 negatives). For
each table cell (the picked setting, every seed that did not diverge) the
file gives that change and the primary RMSE's, and says which seeds are
still moving and which never learned (final AUC below NEVER_LEARNED_AUC:
at chance without the detector seeing a divergence).
"""

import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from sweeps import curves
from sweeps import grid
from sweeps import table as table_lib

TAIL = 0.2
FLAT_AUC_POINTS = 0.5
NEVER_LEARNED_AUC = 0.55


def tail_change(evals: Mapping[int, Mapping], metric: str,
                final_step: int) -> Optional[Tuple[int, float, float]]:
  """(step, value there, final value) of `metric` from the evaluation
  nearest to (1 - TAIL) * final_step (the earlier on a tie) to the last
  one; None when the run has fewer than two finite evaluations of it."""
  points = [(s, v) for s, v in curves.series(evals, metric)
            if math.isfinite(v)]
  if len(points) < 2:
    return None
  mark = (1 - TAIL) * final_step
  start = min(points[:-1], key=lambda p: (abs(p[0] - mark), p[0]))
  return start[0], start[1], points[-1][1]


def cell_rows(sweep: grid.Sweep, summaries: Mapping[str, Dict],
              runs_directory: str) -> List[Dict]:
  """One row per table cell with runs: the mean tail changes over the
  seeds that did not diverge, and which seeds are flat."""
  rows = []
  for model, by_method in table_lib.cells(sweep, summaries).items():
    for method, cell in by_method.items():
      auc_changes, rmse_changes, finals, starts = [], [], [], []
      flat, moving, never = 0, [], []
      for run, summary in zip(cell.runs, cell.summaries):
        if summary["diverged"]:
          continue
        evals = curves.read_metrics(os.path.join(
            runs_directory, run.name)).get("eval", {})
        auc = tail_change(evals, sweep.primary_auc, summary["final_step"])
        if auc is None:
          continue
        starts.append(auc[0])
        finals.append(auc[2])
        auc_changes.append(auc[2] - auc[1])
        rmse = tail_change(evals, sweep.primary_rmse, summary["final_step"])
        if rmse is not None:
          rmse_changes.append(rmse[2] - rmse[1])
        if auc[2] < NEVER_LEARNED_AUC:
          never.append(run.seed)
        elif abs(auc[2] - auc[1]) * 100 <= FLAT_AUC_POINTS:
          flat += 1
        else:
          moving.append(run.seed)
      if not auc_changes:
        continue
      rows.append({
          "model": model, "method": method, "cell": cell,
          "from_step": int(min(starts)), "final_auc": float(np.mean(finals)),
          "auc_points": float(np.mean(auc_changes)) * 100,
          "auc_points_max": float(np.max(np.abs(auc_changes))) * 100,
          "rmse_change": (float(np.mean(rmse_changes)) if rmse_changes
                          else math.nan),
          "seeds": len(auc_changes), "flat": flat, "moving": moving,
          "never": never})
  return rows


def best_flat(sweep: grid.Sweep, rows: List[Dict]) -> Dict[str, str]:
  """{model: verdict line} for the best method of each model (the highest
  mean final AUC among its cells)."""
  out = {}
  for model in sweep.models:
    mine = [r for r in rows if r["model"] == model]
    if not mine:
      continue
    best = max(mine, key=lambda r: r["final_auc"])
    ok = best["flat"] == best["seeds"]
    out[model] = (
        f"{model}: best method {grid.METHOD_NAMES[best['method']]} "
        f"(final {sweep.primary_auc} {best['final_auc']:.4f}) is "
        + ("flat" if ok else "NOT flat") +
        f" on {best['flat']}/{best['seeds']} seeds (largest tail change "
        f"{best['auc_points_max']:.2f} points)")
  return out


def _setting(cell) -> str:
  text = f"{cell.best.lr_multiplier:g}x"
  if cell.best.threshold is not None:
    text += f", λ={cell.best.threshold:g}"
  return text


def markdown(sweep: grid.Sweep, summaries: Mapping[str, Dict],
             runs_directory: str) -> str:
  rows = cell_rows(sweep, summaries, runs_directory)
  lines = [
      f"# Convergence: {sweep.name}", "",
      f"Change of the next-day {sweep.primary_auc} (AUC points) and "
      f"{sweep.primary_rmse} over the last {TAIL:.0%} of training: from "
      f"the evaluation nearest to {1 - TAIL:.0%} of the run's steps to the "
      f"final one; mean over the seeds of the table's picked setting "
      f"that did not diverge. Flat: |change| <= {FLAT_AUC_POINTS:g} AUC "
      f"points. Never learned: final AUC < {NEVER_LEARNED_AUC:g}.", ""]
  lines += [f"- {v}." for v in best_flat(sweep, rows).values()]
  lines += ["", "| Model | Method | setting | from step | final AUC | "
            "AUC change (points) | RMSE change | flat seeds | moving seeds "
            "| never learned |", "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['model']} | {grid.METHOD_NAMES[r['method']]} | "
        f"{_setting(r['cell'])} | {r['from_step']} | {r['final_auc']:.4f} | "
        f"{r['auc_points']:+.2f} | {r['rmse_change']:+.4f} | "
        f"{r['flat']}/{r['seeds']} | "
        f"{', '.join(f's{s}' for s in r['moving']) or '-'} | "
        f"{', '.join(f's{s}' for s in r['never']) or '-'} |")
  return "\n".join(lines) + "\n"


def write(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          runs_directory: str, directory: str) -> str:
  path = os.path.join(directory, "convergence.md")
  os.makedirs(directory, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(markdown(sweep, summaries, runs_directory))
  os.replace(path + ".tmp", path)
  return path
