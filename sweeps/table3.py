"""Table 3 from an ablation's results: table3.md.

One row per variant: how many of its runs finished, how many of those
diverged (k/N and the rate), the steps where they did, the final primary
AUC over the runs that did not diverge (mean ± sample std) and the model's
dense (non-embedding) parameter count. A run diverged when the trainer's
stability monitor said so (summary.json's "diverged", ranking/stability.py).
Everything is read from the collected summary.json files, so the table is
rebuilt byte for byte from results/<name>/runs/ alone.
"""

import math
import os
from typing import Dict, List, Mapping, Optional

import numpy as np

from sweeps import ablation as ablation_lib
from sweeps import grid
from sweeps import runner
from sweeps import table

FILE = "table3.md"


class Row:
  """One variant of the ablation, over the runs of it that finished."""

  def __init__(self, ablation: ablation_lib.Ablation, variant: str,
               summaries: Mapping[str, Dict]):
    self.variant = variant
    self.bindings = list(ablation.variants[variant])
    planned = ablation.runs(variant)
    self.planned = len(planned)
    self.runs = [r for r in planned if r.name in summaries]
    self.summaries = [summaries[r.name] for r in self.runs]
    self.diverged = [bool(s["diverged"]) for s in self.summaries]
    self.primary_auc = ablation.primary_auc

  @property
  def finished(self) -> int:
    return len(self.runs)

  @property
  def diverged_count(self) -> int:
    return sum(self.diverged)

  def rate(self) -> Optional[float]:
    """Share of the finished runs that diverged; None before any."""
    return self.diverged_count / self.finished if self.runs else None

  def divergence_steps(self) -> List[str]:
    """'s<seed>: <step>' of each diverged run, by seed."""
    out = []
    for run, summary, diverged in zip(self.runs, self.summaries,
                                      self.diverged):
      if diverged:
        step = summary.get("diverged_at_step")
        out.append(f"s{run.seed}: {'?' if step is None else step}")
    return out

  def aucs(self) -> List[float]:
    """The primary AUC of the runs that did not diverge, finite ones."""
    out = []
    for summary, diverged in zip(self.summaries, self.diverged):
      value = table.number((summary.get("final_metrics") or {}).get(
          self.primary_auc))
      if not diverged and math.isfinite(value):
        out.append(value)
    return out

  def parameters(self) -> List[int]:
    """The distinct dense parameter counts the runs recorded."""
    return sorted({int(s["non_embedding_parameters"]) for s in self.summaries
                   if s.get("non_embedding_parameters") is not None})


def rows(ablation: ablation_lib.Ablation,
         summaries: Mapping[str, Dict]) -> List[Row]:
  return [Row(ablation, variant, summaries) for variant in ablation.variants]


def _auc(row: Row) -> str:
  if not row.runs:
    return "missing"
  values = row.aucs()
  not_diverged = row.finished - row.diverged_count
  if not not_diverged:
    return "all diverged"
  if not values:
    return "n/a"
  mean = 100.0 * float(np.mean(values))
  if len(values) > 1:
    text = f"{mean:.2f} ± {100.0 * float(np.std(values, ddof=1)):.2f}"
  else:
    text = f"{mean:.2f} (1 run)"
  if len(values) < not_diverged:
    text += f" ({not_diverged - len(values)} non-finite)"
  return text


def _rate(row: Row) -> str:
  rate = row.rate()
  return "n/a" if rate is None else f"{100.0 * rate:.0f}%"


def _parameters(row: Row) -> str:
  counts = row.parameters()
  return " / ".join(f"{c:,d}" for c in counts) if counts else "?"


def caption(ablation: ablation_lib.Ablation) -> str:
  task = ablation.primary_auc.split("/")[0]
  seeds = ", ".join(str(s) for s in ablation.seeds)
  return (
      f"Table 3 ({ablation.name}): divergence rate of {ablation.model_label} "
      f"({ablation.model}) trained with {grid.METHOD_NAMES[ablation.method]} "
      f"(configs/optimizers/{ablation.method}.gin) at learning rate "
      f"{ablation.learning_rate:g}, seeds {{{seeds}}} for every variant. A "
      f"run diverged when the trainer's stability monitor stopped it "
      f"(summary.json's \"diverged\"; ranking/stability.py). {task} AUC: "
      f"final next-day {ablation.primary_auc} (%), mean ± sample std over "
      f"the runs that did not diverge. Dense parameters: the model's "
      f"non-embedding parameters.")


def markdown(ablation: ablation_lib.Ablation,
             summaries: Mapping[str, Dict]) -> str:
  task = ablation.primary_auc.split("/")[0]
  lines = [caption(ablation), "",
           f"| Variant | Runs finished | Diverged | Divergence rate | Diverged at step "
           f"| {task} AUC (%) | Dense parameters |",
           "|---|---:|---:|---:|---|---:|---:|"]
  for row in rows(ablation, summaries):
    lines.append("| " + " | ".join([
        row.variant, f"{row.finished}/{row.planned}",
        f"{row.diverged_count}/{row.finished}", _rate(row),
        ", ".join(row.divergence_steps()) or "-", _auc(row),
        _parameters(row)]) + " |")
  lines += ["", "Variants and their gin bindings (applied last, over the "
            "settings every run shares):"]
  for variant, bindings in ablation.variants.items():
    shown = "; ".join(f"`{b}`" for b in bindings) or "none"
    lines.append(f"- {variant}: {shown}")
  return "\n".join(lines) + "\n"


def write(ablation: ablation_lib.Ablation, summaries: Mapping[str, Dict],
          directory: str) -> str:
  """Writes table3.md into `directory` (atomically); returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, FILE)
  with open(path + ".tmp", "w") as f:
    f.write(markdown(ablation, summaries))
  os.replace(path + ".tmp", path)
  return path


def report(ablation: ablation_lib.Ablation, log=print) -> List[str]:
  """Writes runs.csv and table3.md from the collected runs alone; returns
  the paths.

  Raises:
    FileNotFoundError: no run has finished.
    ValueError: collected runs trained with other settings than the
      ablation's now (say, another learning rate): they are not its runs.
  """
  out_dir = runner.results_dir(ablation)
  runs_dir = os.path.join(out_dir, "runs")
  summaries = runner.load_results(ablation, runs_dir)
  if not summaries:
    raise FileNotFoundError(f"No finished runs in {runs_dir}; run the "
                            "ablation first.")
  runner.check_specs(ablation, summaries)
  paths = [runner.write_runs_csv(ablation, summaries),
           write(ablation, summaries, out_dir)]
  with open(paths[1]) as f:
    log("\n" + f.read())
  log("wrote " + ", ".join(paths))
  return paths
