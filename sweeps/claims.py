"""Checks the paper's five claims against a sweep's results: claims.md.

Each line says HOLDS, FAILS or UNDECIDED (the sweep lacks the runs) and
gives the numbers it was decided on.
"""

import math
import os
from typing import Dict, List, Mapping, Tuple

import numpy as np

from sweeps import curves
from sweeps import grid
from sweeps import table as table_lib

BASELINES = ("naive", "gc", "agc", "lamb")


def _verdict(ok) -> str:
  return {True: "HOLDS", False: "FAILS", None: "UNDECIDED"}[ok]


def naive_diverges(sweep, summaries) -> Tuple[bool, str]:
  """(1) Naive Adagrad diverges: some naive run diverged."""
  if "naive" not in sweep.methods:
    return None, "no naive runs in this sweep"
  seen, diverged = [], []
  for model in sweep.models:
    for name, s in summaries.items():
      if name.startswith(grid.slug(model) + "-naive-"):
        seen.append(name)
        if s["diverged"]:
          diverged.append(f"{name} (step {s['diverged_at_step']})")
  if not seen:
    return None, "no naive run has finished"
  return bool(diverged), (f"{len(diverged)} of {len(seen)} naive runs "
                          f"diverged: " + (", ".join(diverged) or "none"))


def clippy_trains_at_2x(sweep, summaries) -> Tuple[bool, str]:
  """(2) Clippy trains at 2x on every model without divergence."""
  top = max(sweep.lr_multipliers)
  if "clippy" not in sweep.methods or top <= 1:
    return None, "no Clippy runs above 1x in this sweep"
  parts, ok = [], True
  for model in sweep.models:
    prefix = f"{grid.slug(model)}-clippy-lr{top:g}x-"
    runs = {n: s for n, s in summaries.items() if n.startswith(prefix)}
    if not runs:
      return None, f"no Clippy {top:g}x run on {model} has finished"
    bad = [n for n, s in runs.items() if s["diverged"]]
    ok = ok and not bad
    auc = np.mean([s["final_metrics"][sweep.primary_auc]
                   for s in runs.values()])
    parts.append(f"{model}: {len(runs) - len(bad)}/{len(runs)} runs at "
                 f"{top:g}x without divergence, mean {sweep.primary_auc} "
                 f"{auc:.4f}")
  return ok, "; ".join(parts)


def _mean_std(cell: table_lib.Cell, metric: str):
  if cell.best is None or cell.all_diverged or not cell.runs:
    return None
  mean, std, _ = cell.stats(metric)
  return None if math.isnan(mean) else (mean, std)


def clippy_matches_best(sweep, cells) -> Tuple[bool, str]:
  """(3) Clippy's AUC >= the best baseline's minus one std on every model."""
  if "clippy" not in sweep.methods:
    return None, "no Clippy in this sweep"
  parts, ok = [], True
  for model in sweep.models:
    clippy = _mean_std(cells[model]["clippy"], sweep.primary_auc)
    baselines = {m: _mean_std(cells[model][m], sweep.primary_auc)
                 for m in BASELINES if m in sweep.methods}
    baselines = {m: v for m, v in baselines.items() if v is not None}
    if clippy is None:
      return None if cells[model]["clippy"].best is None else False, (
          f"{model}: Clippy has no AUC (missing or diverged)")
    if not baselines:
      parts.append(f"{model}: every baseline diverged; Clippy "
                   f"{clippy[0]:.4f}")
      continue
    best = max(baselines, key=lambda m: baselines[m][0])
    mean, std = baselines[best]
    ok = ok and clippy[0] >= mean - std
    parts.append(f"{model}: Clippy {clippy[0]:.4f} ± {clippy[1]:.4f} vs best "
                 f"baseline {grid.METHOD_NAMES[best]} {mean:.4f} ± {std:.4f} "
                 f"(bar {mean - std:.4f})")
  return ok, "; ".join(parts)


def gain_over_gc_grows(sweep, cells) -> Tuple[bool, str]:
  """(4) Clippy's AUC gain over GC grows from the first model to the last.

  A GC cell in which every seed diverged counts as AUC 0.5 (chance)."""
  if "clippy" not in sweep.methods or "gc" not in sweep.methods:
    return None, "needs Clippy and GC"
  if len(sweep.models) < 2:
    return None, "needs at least two models"
  gains = {}
  for model in sweep.models:
    clippy = _mean_std(cells[model]["clippy"], sweep.primary_auc)
    gc_cell = cells[model]["gc"]
    if clippy is None or gc_cell.best is None:
      return None, f"{model}: Clippy or GC missing"
    gc = 0.5 if gc_cell.all_diverged else _mean_std(
        gc_cell, sweep.primary_auc)[0]
    gains[model] = clippy[0] - gc
  first, last = list(sweep.models)[0], list(sweep.models)[-1]
  return gains[last] > gains[first], ", ".join(
      f"{m}: {g * 100:+.2f} AUC points" for m, g in gains.items())


def bottom_clipped_more(sweep, cells, runs_directory) -> Tuple[bool, str]:
  """(5) Clippy clips bottom layers more than top layers: mean sigma over
  training of the shared bottom's kernels < that of the task heads'."""
  model = list(sweep.models)[-1]
  cell = cells[model].get("clippy")
  if cell is None or cell.best is None:
    return None, f"no Clippy run on {model}"
  train = curves.read_metrics(os.path.join(runs_directory,
                                           cell.best.name))["train"]
  groups: Dict[bool, List[float]] = {False: [], True: []}
  clipped: Dict[bool, List[float]] = {False: [], True: []}
  for layer in curves.layers(train):
    values = [v for _, v in curves.series(train,
                                          f"diagnostics/{layer}/sigma")]
    groups[curves.is_head(layer)].append(float(np.mean(values)))
    clipped[curves.is_head(layer)].append(
        float(np.mean([v < 1.0 for v in values])))
  if not groups[False] or not groups[True]:
    return None, "the run has no per-layer diagnostics"
  bottom, top = np.mean(groups[False]), np.mean(groups[True])
  lowest = min(groups[False])
  return bool(bottom < top), (
      f"{cell.best.name}: mean sigma over training, shared bottom "
      f"({len(groups[False])} kernels) {bottom:.4f} (lowest layer "
      f"{lowest:.4f}), task heads ({len(groups[True])}) {top:.4f}; steps "
      f"clipped {np.mean(clipped[False]) * 100:.0f}% vs "
      f"{np.mean(clipped[True]) * 100:.0f}%")


def check(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          runs_directory: str) -> List[Tuple[str, bool, str]]:
  cells = table_lib.cells(sweep, summaries)
  return [
      ("Naive Adagrad diverges", *naive_diverges(sweep, summaries)),
      ("Clippy trains at 2x on every model without divergence",
       *clippy_trains_at_2x(sweep, summaries)),
      ("Clippy's AUC >= the best baseline's minus one std, on every model",
       *clippy_matches_best(sweep, cells)),
      ("Clippy's gain over GC grows from the smallest to the largest model",
       *gain_over_gc_grows(sweep, cells)),
      ("Clippy clips bottom layers more than top layers",
       *bottom_clipped_more(sweep, cells, runs_directory)),
  ]


def write(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          runs_directory: str, directory: str) -> str:
  lines = [f"# Claims check: {sweep.name}", "",
           f"Primary metric {sweep.primary_auc}; generated by "
           f"`python -m sweeps` from runs.csv and the collected runs.", ""]
  for i, (claim, ok, numbers) in enumerate(
      check(sweep, summaries, runs_directory), 1):
    lines.append(f"{i}. **{_verdict(ok)}**: {claim}. {numbers}.")
  path = os.path.join(directory, "claims.md")
  os.makedirs(directory, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(path + ".tmp", path)
  return path
