"""Table 2 from a sweep's results: table2.md and per_task.csv.

Each cell is the picked setting's seeds: mean +- sample standard deviation
over the seeds that did not diverge; "diverged" when every seed diverged.
"""

import csv
import math
import os
from typing import Dict, List, Mapping, Sequence

import numpy as np

from sweeps import grid


def number(value) -> float:
  """A stored metric as a float; missing or unreadable is NaN."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


class Cell:
  """One (model, method) entry of the table."""

  def __init__(self, sweep: grid.Sweep, model: str, method: str,
               summaries: Mapping[str, Dict]):
    results = grid.results_of(sweep, summaries)
    self.model, self.method = model, method
    self.best, runs = grid.table_runs(sweep, model, method, results)
    self.runs = [r for r in runs if r.name in summaries]
    self.expected = len(runs)
    self.summaries = [summaries[r.name] for r in self.runs]
    self.diverged = [s["diverged"] for s in self.summaries]

  @property
  def complete(self) -> bool:
    return self.best is not None and len(self.runs) == self.expected

  @property
  def all_diverged(self) -> bool:
    return bool(self.runs) and all(self.diverged)

  def values(self, metric: str) -> List[float]:
    """The metric over the seeds that did not diverge and have a finite
    value of it."""
    out = []
    for summary, diverged in zip(self.summaries, self.diverged):
      value = number((summary["final_metrics"] or {}).get(metric))
      if not diverged and math.isfinite(value):
        out.append(value)
    return out

  def stats(self, metric: str):
    values = self.values(metric)
    if not values:
      return float("nan"), float("nan"), 0
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std, len(values)


def cells(sweep: grid.Sweep, summaries: Mapping[str, Dict]
          ) -> Dict[str, Dict[str, Cell]]:
  return {model: {method: Cell(sweep, model, method, summaries)
                  for method in sweep.methods} for model in sweep.models}


def _format(cell: Cell, metric: str, percent: bool) -> str:
  if not cell.runs:
    return "missing"
  notes = []
  if not cell.complete:
    notes.append(f"{len(cell.runs)}/{cell.expected} seeds")
  mean, std, n = cell.stats(metric)
  if cell.all_diverged:
    text = "diverged"
  elif math.isnan(mean):
    text = "n/a"
  else:
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    text = f"{mean * scale:.{digits}f}"
    text += f" ± {std * scale:.{digits}f}" if n > 1 else " (1 seed)"
    diverged = sum(cell.diverged)
    if diverged:
      notes.append(f"{diverged}/{len(cell.runs)} diverged")
    if n < len(cell.runs) - diverged:
      notes.append(f"{len(cell.runs) - diverged - n} non-finite")
  return text + (f" ({', '.join(notes)})" if notes else "")


def _setting(cell: Cell) -> str:
  if cell.best is None:
    return "?"
  text = f"{cell.best.lr_multiplier:g}x"
  if cell.best.threshold is not None:
    text += f", λ={cell.best.threshold:g}"
  return text


def caption(sweep: grid.Sweep, table: Mapping[str, Mapping[str, Cell]]
            ) -> str:
  auc_task = sweep.primary_auc.split("/")[0]
  rmse_task = sweep.primary_rmse.split("/")[0]
  lines = [
      f"Table 2 ({sweep.name}): next-day {auc_task} AUC (%) and "
      f"{rmse_task} RMSE, mean ± std over {len(sweep.seeds)} seeds "
      f"(sample std; seeds that diverged are left out of the mean) at the "
      f"best of learning rate "
      f"{{{', '.join(f'{m:g}x' for m in sweep.lr_multipliers)}}} "
      f"(1x = {sweep.learning_rate:g}), picked by seed {sweep.seeds[0]}'s "
      f"{auc_task} AUC. \"diverged\": every seed diverged."]
  if sweep.learning_rates:
    own = ", ".join(f"{grid.METHOD_NAMES[m]} {v:g}"
                    for m, v in sweep.learning_rates.items())
    lines.append(f"Methods with their own 1x dense rate: {own}.")
  searched = [m for m in sweep.methods if m in sweep.thresholds]
  if searched:
    grids = "; ".join(
        f"{grid.METHOD_NAMES[m]} {grid.THRESHOLD_PARAMS[m].split('.')[-1]} "
        f"in {{{', '.join(f'{v:g}' for v in sweep.thresholds[m])}}}"
        for m in searched)
    if sweep.threshold_search_model is None:
      lines.append(f"Baseline thresholds searched on every model ({grids}).")
    else:
      source = table[sweep.threshold_search_model]
      chosen = ", ".join(
          f"{grid.METHOD_NAMES[m]} λ={source[m].best.threshold:g}"
          for m in searched if source[m].best is not None)
      lines.append(
          f"Baseline thresholds searched once, on "
          f"{sweep.threshold_search_model} ({grids}), and the picks "
          f"({chosen}) reused for the other models.")
  return " ".join(lines)


def markdown(sweep: grid.Sweep, summaries: Mapping[str, Dict]) -> str:
  table = cells(sweep, summaries)
  header = ["Method"]
  for model in sweep.models:
    header += [f"{model} setting", f"{model} AUC (%)", f"{model} RMSE"]
  lines = [caption(sweep, table), "",
           "| " + " | ".join(header) + " |",
           "|" + "---|" + "---|---:|---:|" * len(sweep.models)]
  for method in sweep.methods:
    row = [grid.METHOD_NAMES[method]]
    for model in sweep.models:
      cell = table[model][method]
      row += [_setting(cell), _format(cell, sweep.primary_auc, True),
              _format(cell, sweep.primary_rmse, False)]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def per_task_rows(sweep: grid.Sweep, summaries: Mapping[str, Dict]
                  ) -> List[Dict]:
  rows = []
  for model, by_method in cells(sweep, summaries).items():
    for method, cell in by_method.items():
      if not cell.runs:
        continue
      metrics = sorted({k for s in cell.summaries
                        for k in (s["final_metrics"] or {})})
      for metric in metrics:
        mean, std, n = cell.stats(metric)
        task, name = metric.rsplit("/", 1)
        rows.append({
            "model": model, "method": method,
            "threshold": "" if cell.best.threshold is None
                         else cell.best.threshold,
            "lr_multiplier": cell.best.lr_multiplier,
            "task": task, "metric": name, "mean": mean, "std": std,
            "seeds": len(cell.runs), "seeds_diverged": sum(cell.diverged),
        })
  return rows


def write(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          directory: str) -> Sequence[str]:
  """Writes table2.md and per_task.csv into `directory`; returns paths."""
  os.makedirs(directory, exist_ok=True)
  md = os.path.join(directory, "table2.md")
  with open(md + ".tmp", "w") as f:
    f.write(markdown(sweep, summaries))
  os.replace(md + ".tmp", md)
  path = os.path.join(directory, "per_task.csv")
  rows = per_task_rows(sweep, summaries)
  with open(path + ".tmp", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=[
        "model", "method", "threshold", "lr_multiplier", "task", "metric",
        "mean", "std", "seeds", "seeds_diverged"])
    writer.writeheader()
    writer.writerows(rows)
  os.replace(path + ".tmp", path)
  return md, path
