"""The paper's figures from a sweep's collected runs (PNG, matplotlib Agg).

  fig5_auc_curves.png     next-day AUC over training, one line per method at
                          its picked setting (first seed), one panel per model
                          (paper Fig. 5).
  fig6_clippy_sigma.png   Clippy's factor sigma per layer over training on the
                          last model (Large+DCN), picked setting (Fig. 6).
  fig4b_naive_diverging.png  a naive run that diverged: per-layer ||g||,
                          ||g||/||w||, ||r/w||_inf, and the factor GC, AGC
                          and Clippy would have applied at each step (Fig. 4b).

Factors of Fig. 4b from the recorded norms (sweeps/factors.py), with the
sweep's picked thresholds.
"""

import math
import os
from typing import Dict, List, Mapping, Optional

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from sweeps import curves
from sweeps import factors as factors_lib
from sweeps import grid
from sweeps import table as table_lib

PAPER_DEFAULT = {"gc": 1e-2, "agc": 1e-3}


def _run_metrics(runs_directory: str, run: grid.Run):
  return curves.read_metrics(os.path.join(runs_directory, run.name))


def fig5(sweep, cells, runs_directory, path):
  models = list(sweep.models)
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    for method in sweep.methods:
      cell = cells[model][method]
      if cell.best is None:
        continue
      points = curves.series(_run_metrics(runs_directory, cell.best)["eval"],
                             sweep.primary_auc)
      if not points:
        continue
      steps, values = zip(*points)
      diverged = cell.summaries[0]["diverged"]
      label = (f"{grid.METHOD_NAMES[method]} ({cell.best.lr_multiplier:g}x)"
               + (" diverged" if diverged else ""))
      line, = ax.plot(steps, values, label=label,
                      linestyle="--" if diverged else "-")
      if diverged:
        ax.plot(steps[-1], values[-1], "x", color=line.get_color(), ms=9)
    ax.set_title(model)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"next-day {sweep.primary_auc}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{sweep.name}: next-day AUC over training (picked setting, "
               f"seed {sweep.seeds[0]})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fig6(sweep, cells, runs_directory, path) -> Optional[str]:
  model = list(sweep.models)[-1]
  cell = cells[model].get("clippy")
  if cell is None or cell.best is None:
    return None
  train = _run_metrics(runs_directory, cell.best)["train"]
  fig, ax = plt.subplots(figsize=(8, 4.2))
  for layer in curves.layers(train):
    points = curves.series(train, f"diagnostics/{layer}/sigma")
    steps, values = zip(*points)
    ax.plot(steps, values, label=curves.short_name(layer),
            linestyle=":" if curves.is_head(layer) else "-")
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("Clippy factor sigma (1 = no clipping)")
  ax.set_title(f"{sweep.name}: Clippy's factor per layer, {model} "
               f"({cell.best.lr_multiplier:g}x, seed {cell.best.seed})\n"
               "solid: cross and shared bottom layers; dotted: task heads",
               fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return cell.best.name


def diverged_naive_run(sweep, summaries) -> Optional[grid.Run]:
  """The naive run that diverged latest (the longest history before it;
  ties go to the larger model, then the higher rate)."""
  candidates = []
  for i, model in enumerate(sweep.models):
    for multiplier in sweep.lr_multipliers:
      for seed in sweep.seeds:
        run = grid.Run(model, "naive", None, multiplier, seed, "select")
        summary = summaries.get(run.name)
        if summary is not None and summary["diverged"]:
          step = summary.get("diverged_at_step") or 0
          candidates.append(((step, i, multiplier, -seed), run))
  return max(candidates, key=lambda c: c[0])[1] if candidates else None


def picked_threshold(cells, sweep, method, model=None) -> float:
  """The threshold picked for `method` on `model`, else on the first model
  that has one (the paper's default when none has)."""
  for name in ([model] if model in sweep.models else []) + list(sweep.models):
    cell = cells[name].get(method)
    if cell is not None and cell.best is not None and \
        cell.best.threshold is not None:
      return cell.best.threshold
  return PAPER_DEFAULT[method]


def fig4b(sweep, cells, summaries, runs_directory, path) -> Optional[str]:
  run = diverged_naive_run(sweep, summaries)
  if run is None:
    return None
  summary = summaries[run.name]
  train = _run_metrics(runs_directory, run)["train"]
  eta = run.learning_rate(sweep)
  gc, agc = (picked_threshold(cells, sweep, m, run.model)
             for m in ("gc", "agc"))
  panels = [("grad_norm", "||g||"), ("grad_to_weight_norm", "||g|| / ||w||"),
            ("max_direction_to_weight", "||r / w||_inf")]
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  layer_names = curves.layers(train)
  for ax, (key, title) in zip(axes.flat, panels):
    for layer in layer_names:
      points = [(s, v) for s, v in curves.series(
          train, f"diagnostics/{layer}/{key}") if math.isfinite(v)]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=curves.short_name(layer),
                linestyle=":" if curves.is_head(layer) else "-")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
  axes[0][0].legend(fontsize=6, ncol=2)
  ax = axes[1][1]
  steps = np.array(sorted(train))
  smallest = factors_lib.smallest_factors(train, layer_names, eta, gc, agc)
  labels = {"gc": f"GC (λ={gc:g})", "agc": f"AGC (λ={agc:g})",
            "clippy": f"Clippy (λ_rel={factors_lib.CLIPPY_LAMBDA_REL:g}, "
                      "λ_abs=0)"}
  for method, label in labels.items():
    shown = np.isfinite(smallest[method])
    ax.plot(steps[shown], smallest[method][shown], label=label)
  ax.set_yscale("log")
  ax.set_title("factor each method would apply (smallest over layers)")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3, which="both")
  for a in axes.flat:
    a.set_xlabel("training step")
    if summary.get("diverged_at_step"):
      a.axvline(summary["diverged_at_step"], color="red", alpha=0.4)
  fig.suptitle(f"{sweep.name}: naive Adagrad diverging, {run.model} "
               f"{run.lr_multiplier:g}x (eta={eta:g}), seed {run.seed}\n"
               f"red: divergence detected (step "
               f"{summary.get('diverged_at_step')}); a layer whose gradient "
               "is 0 (dead units) drops off the log scale",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return run.name


def write(sweep: grid.Sweep, summaries: Mapping[str, Dict], runs_directory,
          directory: str) -> Dict[str, Optional[str]]:
  """Writes the figures into `directory`; {file: run it shows or None when
  the sweep has no such run}."""
  os.makedirs(directory, exist_ok=True)
  cells = table_lib.cells(sweep, summaries)
  out = {}
  path = os.path.join(directory, "fig5_auc_curves.png")
  fig5(sweep, cells, runs_directory, path)
  out[path] = "picked settings"
  path = os.path.join(directory, "fig6_clippy_sigma.png")
  out[path] = fig6(sweep, cells, runs_directory, path)
  path = os.path.join(directory, "fig4b_naive_diverging.png")
  out[path] = fig4b(sweep, cells, summaries, runs_directory, path)
  return out
