"""Does a divergence follow the edge of stability? (paper section 3.2)

  python -m sweeps.sharpness --run_dir=DIR [--run_dir=DIR ...] \\
      --output_dir=results/sharpness

Reads each run's sharpness measurements (split 'sharpness' of its
metrics.jsonl or metrics.jsonl.gz, written by ranking/sharpness.py when
trained with configs/sharpness.gin) and its summary.json, and writes:

  fig_sharpness.png  one panel per run: the top eigenvalues of the
                     preconditioned Hessian D^1/2 H D^1/2 and of the Hessian
                     H over training (log scale; a negative one is drawn at
                     its magnitude, hollow), the edge 2/eta, and a red line
                     at the step the run was found diverged;
  sharpness.md       per run: the first measured step at which each
                     eigenvalue exceeded 2/eta, the divergence step, and
                     whether the divergence followed the crossing.

A measurement at step s is of the weights after step s, and a divergence
dated s happened in step s, so the divergence "followed" the crossing only
when the crossing was measured strictly earlier. Both files are a function
of the input files only (PNG written without a software stamp).
"""

import dataclasses
import json
import math
import os
import sys
from typing import List, Optional, Sequence

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from sweeps import curves  # pylint: disable=g-import-not-at-top

flags.DEFINE_multi_string("run_dir", [], "A run directory (repeatable).")
flags.DEFINE_string("output_dir", "results/sharpness",
                    "Where fig_sharpness.png and sharpness.md go.")
FLAGS = flags.FLAGS

SPLIT = "sharpness"
FIGURE, REPORT = "fig_sharpness.png", "sharpness.md"


@dataclasses.dataclass
class RunSharpness:
  """One run's measurements (NaN where a value was non-finite or absent)
  and its verdict (diverged None: no summary.json, the run has not ended)."""
  name: str
  steps: List[int]
  hessian: List[float]
  preconditioned: Optional[List[float]]  # None: no Adagrad accumulator
  two_over_eta: List[float]
  diverged: Optional[bool]
  diverged_at_step: Optional[int]


def _values(records, key) -> List[float]:
  out = []
  for step in sorted(records):
    value = records[step].get(key)
    out.append(math.nan if value is None else float(value))
  return out


def load_run(run_directory: str, name: Optional[str] = None) -> RunSharpness:
  """The sharpness records and verdict of one run directory."""
  records = curves.read_metrics(run_directory).get(SPLIT, {})
  has_preconditioned = any(f"{SPLIT}/preconditioned" in r
                           for r in records.values())
  diverged, at = None, None
  path = os.path.join(run_directory, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      summary = json.load(f)
    diverged = bool(summary.get("diverged"))
    at = summary.get("diverged_at_step") if diverged else None
  return RunSharpness(
      name=name or os.path.basename(os.path.normpath(run_directory)),
      steps=sorted(records),
      hessian=_values(records, f"{SPLIT}/hessian"),
      preconditioned=(_values(records, f"{SPLIT}/preconditioned")
                      if has_preconditioned else None),
      two_over_eta=_values(records, f"{SPLIT}/two_over_eta"),
      diverged=diverged, diverged_at_step=None if at is None else int(at))


def first_crossing(steps: Sequence[int], values: Optional[Sequence[float]],
                   edges: Sequence[float]) -> Optional[int]:
  """The first step whose value exceeds its edge (NaN never does)."""
  for step, value, edge in zip(steps, values or (), edges):
    if value > edge:
      return step
  return None


def peak_ratio(values, edges) -> float:
  """The largest value / edge (NaN if none is finite)."""
  ratios = [v / e for v, e in zip(values or (), edges)
            if math.isfinite(v) and math.isfinite(e) and e > 0]
  return max(ratios) if ratios else math.nan


def verdict(run: RunSharpness) -> str:
  """Whether the divergence followed the preconditioned crossing."""
  if run.diverged is None:
    return "unknown: no summary.json (the run has not ended)"
  if not run.diverged:
    return "did not diverge"
  if run.preconditioned is None:
    return "n/a: no preconditioned eigenvalue (not Adagrad)"
  crossing = first_crossing(run.steps, run.preconditioned, run.two_over_eta)
  at = run.diverged_at_step
  if crossing is None:
    return "no: diverged without a measured crossing"
  if crossing < at:
    return f"yes: {at - crossing} steps after the crossing"
  return ("no: diverged at the step of the crossing" if crossing == at else
          f"no: diverged {crossing - at} steps before the crossing")


def _step(value: Optional[int], none: str) -> str:
  return none if value is None else str(value)


def _number(value: float) -> str:
  return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def markdown(runs: Sequence[RunSharpness]) -> str:
  lines = [
      "# Sharpness against divergence",
      "",
      "Per run: the first measured step at which the top eigenvalue of the "
      "preconditioned Hessian D^1/2 H D^1/2 (Adagrad, D = 1/sqrt(G + eps)) "
      "and of the Hessian H of the training loss over the dense parameters "
      "exceeded 2/eta (the edge of stability: gradient descent on a "
      "quadratic is stable iff eta lambda_max < 2); the largest "
      "eta lambda_max / 2 measured; the step the run was found diverged "
      "(summary.json); and whether that followed the preconditioned "
      "crossing (a crossing measured strictly before the divergence step).",
      "",
      "| run | measurements | preconditioned > 2/eta first at | peak "
      "eta lambda / 2 (preconditioned) | H > 2/eta first at | peak "
      "eta lambda / 2 (H) | diverged at | divergence followed the crossing |",
      "|---|---:|---:|---:|---:|---:|---:|---|",
  ]
  for run in runs:
    if run.preconditioned is None:
      crossing, peak = "n/a", "n/a"
    else:
      crossing = _step(first_crossing(run.steps, run.preconditioned,
                                      run.two_over_eta), "never")
      peak = _number(peak_ratio(run.preconditioned, run.two_over_eta))
    raw = _step(first_crossing(run.steps, run.hessian, run.two_over_eta),
                "never")
    diverged = ("unknown" if run.diverged is None else
                _step(run.diverged_at_step, "none"))
    lines.append(
        f"| {run.name} | {len(run.steps)} | {crossing} | {peak} | {raw} | "
        f"{_number(peak_ratio(run.hessian, run.two_over_eta))} | {diverged} "
        f"| {verdict(run)} |")
  negative = [(run.name, sum(v < 0 for v in run.hessian + (
      run.preconditioned or []))) for run in runs]
  noted = [f"{name} ({count})" for name, count in negative if count]
  lines += ["", "Power iteration finds the eigenvalue of largest magnitude; "
            "negative ones (curvature downwards winning) measured: " +
            (", ".join(noted) if noted else "none") + "."]
  return "\n".join(lines) + "\n"


def figure(runs: Sequence[RunSharpness], path: str):
  columns = min(3, len(runs))
  rows = math.ceil(len(runs) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat[len(runs):]:
    ax.axis("off")
  for ax, run in zip(axes.flat, runs):
    series = [("preconditioned", run.preconditioned, "C0", "-"),
              ("H", run.hessian, "C1", "--")]
    for label, values, color, style in series:
      points = [(s, v) for s, v in zip(run.steps, values or ())
                if math.isfinite(v) and v != 0]
      if not points:
        continue
      steps, magnitudes = zip(*[(s, abs(v)) for s, v in points])
      ax.plot(steps, magnitudes, style, color=color, marker=".",
              label=f"top eigenvalue, {label}")
      negative = [(s, -v) for s, v in points if v < 0]
      if negative:
        ax.plot(*zip(*negative), "o", mfc="none", color=color)
    if run.steps:
      ax.plot(run.steps, run.two_over_eta, ":", color="black",
              drawstyle="steps-post", label="2 / eta")
      ax.set_yscale("log")
    else:
      ax.text(0.5, 0.5, "no sharpness measurement", ha="center",
              transform=ax.transAxes)
    if run.diverged_at_step is not None:
      ax.axvline(run.diverged_at_step, color="red", alpha=0.5,
                 label=f"diverged (step {run.diverged_at_step})")
    ax.set_title(run.name, fontsize=9)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
  fig.suptitle("Top Hessian eigenvalue against the edge of stability 2/eta "
               "(hollow: a negative eigenvalue, at its magnitude)",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path + ".tmp", format="png", dpi=110,
              metadata={"Software": None})
  plt.close(fig)
  os.replace(path + ".tmp", path)


def write(run_directories: Sequence[str], output_directory: str
          ) -> List[str]:
  """Writes fig_sharpness.png and sharpness.md; returns their paths.

  Raises:
    ValueError: no run directory, or a metrics file that cannot be read.
    FileNotFoundError: a run directory without metrics.jsonl(.gz).
  """
  if not run_directories:
    raise ValueError("Give at least one --run_dir.")
  names = [os.path.basename(os.path.normpath(d)) for d in run_directories]
  if len(set(names)) < len(names):  # name them by the paths given
    names = [os.path.normpath(d) for d in run_directories]
  runs = [load_run(d, n) for d, n in zip(run_directories, names)]
  os.makedirs(output_directory, exist_ok=True)
  figure_path = os.path.join(output_directory, FIGURE)
  figure(runs, figure_path)
  report_path = os.path.join(output_directory, REPORT)
  with open(report_path + ".tmp", "w") as f:
    f.write(markdown(runs))
  os.replace(report_path + ".tmp", report_path)
  return [figure_path, report_path]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.run_dir:
    raise app.UsageError("Give --run_dir (repeatable).")
  paths = write(FLAGS.run_dir, FLAGS.output_dir)
  with open(paths[1]) as f:
    print(f.read())
  print("wrote " + ", ".join(paths))
  return 0


if __name__ == "__main__":
  app.run(main)
