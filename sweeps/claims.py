"""Checks the paper's six claims against a sweep's results: claims.md.

Each line says HOLDS, FAILS or UNDECIDED (the sweep lacks the runs) and
gives the numbers it was decided on.
"""

import json
import math
import os
from typing import Dict, List, Mapping, Tuple

import numpy as np

from sweeps import curves
from sweeps import factors as factors_lib
from sweeps import figures
from sweeps import grid
from sweeps import table as table_lib

BASELINES = ("naive", "gc", "agc", "lamb")


def _verdict(ok) -> str:
  return {True: "HOLDS", False: "FAILS", None: "UNDECIDED"}[ok]


def _finished(sweep, summaries, method):
  """[(run, summary)] of the planned runs of `method` that have finished."""
  plan = grid.plan(sweep, grid.results_of(sweep, summaries))
  return [(r, summaries[r.name]) for r in plan
          if r.method == method and r.name in summaries]


def naive_diverges(sweep, summaries) -> Tuple[bool, str]:
  """(1) Naive Adagrad diverges in the grid: some naive run, on some model,
  at 1x or 2x. The grids' 1x is naive's edge of stability (the rate below
  the first divergence of a calibration ladder), so the divergences
  expected are at 2x; each rate's count is given."""
  if "naive" not in sweep.methods:
    return None, "no naive runs in this sweep"
  runs = _finished(sweep, summaries, "naive")
  if not runs:
    return None, "no naive run has finished"
  parts, diverged = [], False
  for model in sweep.models:
    mine = [(r, s) for r, s in runs if r.model == model]
    per_rate = []
    for multiplier in sweep.lr_multipliers:
      at = [s for r, s in mine if r.lr_multiplier == multiplier]
      if at:
        bad = [s for s in at if s["diverged"]]
        steps = ", ".join(str(s["diverged_at_step"]) for s in bad)
        per_rate.append(f"{multiplier:g}x {len(bad)}/{len(at)} diverged"
                        + (f" (at step {steps})" if bad else ""))
        diverged = diverged or bool(bad)
    parts.append(f"{model}: " + ", ".join(per_rate))
  return diverged, "; ".join(parts)


def clippy_trains_at_2x(sweep, summaries) -> Tuple[bool, str]:
  """(2) Clippy trains at 2x on every model without divergence (every
  planned Clippy run at the top rate, all seeds that were run there)."""
  top = max(sweep.lr_multipliers)
  if "clippy" not in sweep.methods or top <= 1:
    return None, "no Clippy runs above 1x in this sweep"
  runs = _finished(sweep, summaries, "clippy")
  parts, ok = [], True
  for model in sweep.models:
    at = [s for r, s in runs if r.model == model and r.lr_multiplier == top]
    if not at:
      return None, f"no Clippy {top:g}x run on {model} has finished"
    bad = [s for s in at if s["diverged"]]
    ok = ok and not bad
    aucs = [table_lib.number(s["final_metrics"].get(sweep.primary_auc))
            for s in at if not s["diverged"]]
    aucs = [a for a in aucs if math.isfinite(a)]
    parts.append(f"{model}: {len(at) - len(bad)}/{len(at)} runs at "
                 f"{top:g}x without divergence" + (
                     f", mean {sweep.primary_auc} {np.mean(aucs):.4f}"
                     if aucs else ""))
  return ok, "; ".join(parts)


def _incomplete(cells, models, methods):
  missing = [f"{model} {grid.METHOD_NAMES[m]}" for model in models
             for m in methods if not cells[model][m].complete]
  return (f"waiting for runs of {', '.join(missing)}" if missing else None)


def _mean_std(cell: table_lib.Cell, metric: str):
  if cell.all_diverged or not cell.runs:
    return None
  mean, std, _ = cell.stats(metric)
  return None if math.isnan(mean) else (mean, std)


def clippy_matches_best(sweep, cells) -> Tuple[bool, str]:
  """(3) Clippy's AUC >= the best baseline's minus one std on every model."""
  if "clippy" not in sweep.methods:
    return None, "no Clippy in this sweep"
  methods = [m for m in sweep.methods if m in BASELINES or m == "clippy"]
  waiting = _incomplete(cells, sweep.models, methods)
  if waiting:
    return None, waiting
  parts, ok = [], True
  for model in sweep.models:
    clippy = _mean_std(cells[model]["clippy"], sweep.primary_auc)
    if clippy is None:
      return False, f"{model}: Clippy diverged on every seed"
    baselines = {m: _mean_std(cells[model][m], sweep.primary_auc)
                 for m in methods if m != "clippy"}
    baselines = {m: v for m, v in baselines.items() if v is not None}
    if not baselines:
      parts.append(f"{model}: every baseline diverged; Clippy "
                   f"{clippy[0]:.4f}")
      continue
    best = max(baselines, key=lambda m: baselines[m][0])
    mean, std = baselines[best]
    diverged = sum(cells[model][best].diverged)
    ok = ok and clippy[0] >= mean - std
    parts.append(
        f"{model}: Clippy {clippy[0]:.4f} ± {clippy[1]:.4f} vs best baseline "
        f"{grid.METHOD_NAMES[best]} {mean:.4f} ± {std:.4f} (bar "
        f"{mean - std:.4f}" + (f"; {diverged} of its seeds diverged"
                               if diverged else "") + ")")
  return ok, "; ".join(parts)


def gain_over_gc_grows(sweep, cells) -> Tuple[bool, str]:
  """(4) Clippy's AUC gain over GC grows from the first model to the last,
  by more than the noise: the growth must exceed the standard deviation of
  a difference of four means, sqrt of the sum of the four cells' variances
  (std of each cell over its seeds).

  A GC cell in which every seed diverged counts as AUC 0.5 (chance), and
  the line says so."""
  if "clippy" not in sweep.methods or "gc" not in sweep.methods:
    return None, "needs Clippy and GC"
  if len(sweep.models) < 2:
    return None, "needs at least two models"
  waiting = _incomplete(cells, sweep.models, ("gc", "clippy"))
  if waiting:
    return None, waiting
  gains, variances, notes = {}, {}, []
  for model in sweep.models:
    clippy = _mean_std(cells[model]["clippy"], sweep.primary_auc)
    if clippy is None:
      return False, f"{model}: Clippy diverged on every seed"
    gc = _mean_std(cells[model]["gc"], sweep.primary_auc)
    if gc is None:
      notes.append(f"GC diverged on every seed on {model}, counted as AUC "
                   "0.5")
      gc = (0.5, 0.0)
    gains[model] = clippy[0] - gc[0]
    variances[model] = clippy[1] ** 2 + gc[1] ** 2
  models = list(sweep.models)
  first, last = models[0], models[-1]
  growth = gains[last] - gains[first]
  noise = math.sqrt(variances[first] + variances[last])
  monotone = all(gains[a] <= gains[b] for a, b in zip(models, models[1:]))
  return growth > noise, ", ".join(
      f"{m}: {g * 100:+.2f} AUC points" for m, g in gains.items()) + (
          f"; growth {first} to {last} {growth * 100:+.2f} points against "
          f"a noise of {noise * 100:.2f}; monotone: "
          f"{'yes' if monotone else 'no'}") + (
              f" ({'; '.join(notes)})" if notes else "")


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
    values = [v for _, v in curves.series(train, f"diagnostics/{layer}/sigma")
              if math.isfinite(v)]
    if values:
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
      f"{lowest:.4f}), task heads ({len(groups[True])}) {top:.4f}; "
      f"summaries with sigma < 1: {np.mean(clipped[False]) * 100:.0f}% vs "
      f"{np.mean(clipped[True]) * 100:.0f}%")


# Claim 6 looks at the training summaries within this many steps of the
# divergence, before or after it: the detector dates a divergence from its
# first finding, an evaluation that can come a day after the blow-up, and a
# blow-up in the first steps has no summary before it (they are written
# every Trainer.summary_every_steps).
DIVERGENCE_WINDOW_STEPS = 250


def clippy_factor_smaller(sweep, cells, summaries, runs_directory
                          ) -> Tuple[bool, str]:
  """(6) At the divergence of a naive run, the factor Clippy would apply is
  two orders of magnitude (100x) smaller than GC's and AGC's (paper Fig.
  4b): the smallest over layers and over the training summaries within
  DIVERGENCE_WINDOW_STEPS steps of the divergence, with the sweep's picked
  thresholds (sweeps/factors.py)."""
  run = figures.diverged_naive_run(sweep, summaries)
  if run is None:
    return None, "no naive run diverged"
  summary = summaries[run.name]
  train = curves.read_metrics(os.path.join(runs_directory, run.name))["train"]
  layers = curves.layers(train)
  if not layers:
    return None, f"{run.name} has no per-layer diagnostics"
  end = summary.get("diverged_at_step") or max(train)
  lo, hi = max(0, end - DIVERGENCE_WINDOW_STEPS), end + DIVERGENCE_WINDOW_STEPS
  window = {s: r for s, r in train.items() if lo <= s <= hi}
  if not window:
    return None, (f"{run.name} has no training summary within "
                  f"{DIVERGENCE_WINDOW_STEPS} steps of step {end}")
  gc, agc = (figures.picked_threshold(cells, sweep, m, run.model)
             for m in ("gc", "agc"))
  smallest = {m: float(np.min(f)) for m, f in factors_lib.smallest_factors(
      window, layers, run.learning_rate(sweep), gc, agc).items()}
  ratios = {m: smallest[m] / smallest["clippy"] if smallest["clippy"] > 0
            else math.inf for m in ("gc", "agc")}
  return all(r >= 100 for r in ratios.values()), (
      f"{run.name} (diverged at step {end}), smallest factor over layers "
      f"and summaries at steps {min(window)}-{max(window)}: Clippy "
      f"{smallest['clippy']:.3g}, GC (λ={gc:g}) {smallest['gc']:.3g} "
      f"({ratios['gc']:.3g}x Clippy's), AGC (λ={agc:g}) "
      f"{smallest['agc']:.3g} ({ratios['agc']:.3g}x Clippy's)")


def check(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          runs_directory: str) -> List[Tuple[str, bool, str]]:
  cells = table_lib.cells(sweep, summaries)
  return [
      ("Naive Adagrad diverges (at 1x or 2x, on some model)",
       *naive_diverges(sweep, summaries)),
      ("Clippy trains at 2x on every model without divergence",
       *clippy_trains_at_2x(sweep, summaries)),
      ("Clippy's AUC >= the best baseline's minus one std, on every model",
       *clippy_matches_best(sweep, cells)),
      ("Clippy's gain over GC grows from the smallest to the largest model",
       *gain_over_gc_grows(sweep, cells)),
      ("Clippy clips bottom layers more than top layers",
       *bottom_clipped_more(sweep, cells, runs_directory)),
      ("At a naive run's divergence, Clippy's factor is 100x smaller than "
       "GC's and AGC's",
       *clippy_factor_smaller(sweep, cells, summaries, runs_directory)),
  ]


def write(sweep: grid.Sweep, summaries: Mapping[str, Dict],
          runs_directory: str, directory: str) -> str:
  """Writes claims.md, and claims.json (the same verdicts, read by
  sweeps/claims_by_dataset.py); returns the path of claims.md."""
  checked = check(sweep, summaries, runs_directory)
  lines = [f"# Claims check: {sweep.name}", "",
           f"Primary metric {sweep.primary_auc}; generated by "
           f"`python -m sweeps` from runs.csv and the collected runs.", ""]
  for i, (claim, ok, numbers) in enumerate(checked, 1):
    lines.append(f"{i}. **{_verdict(ok)}**: {claim}. {numbers}.")
  os.makedirs(directory, exist_ok=True)
  record = {"sweep": sweep.name, "primary_auc": sweep.primary_auc,
            "claims": [{"claim": c, "verdict": _verdict(ok), "numbers": n}
                       for c, ok, n in checked]}
  for name, text in (("claims.md", "\n".join(lines) + "\n"),
                     ("claims.json", json.dumps(record, indent=1,
                                                ensure_ascii=False) + "\n")):
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  return os.path.join(directory, "claims.md")
