"""Re-judges a sweep's committed runs with today's divergence detector.

  python -m sweeps --gin_file=configs/table2_cpu.gin --rejudge

For every collected run (results/<sweep>/runs/<run>/) the detector of
ranking/stability.py is fed what metrics.jsonl holds: the untrained model's
per-task loss first, then each summary interval's mean per-task loss (one
observation per interval), then the evaluations, in order. The untrained
loss is summary.json's "initial_losses" when the run recorded it; older runs
did not, and it is recomputed: the run's operative config builds its model
with its seed, and the loss of the stream's first batch is taken.

The judging is coarser than the live detector's: a blow-up is dated by the
end of its interval, one that a 10-step mean averages away is missed, the
moving level moves once an interval, and the explosion patience counts
intervals. Writes results/<sweep>/rejudged.md.
"""

import collections
import csv
import math
import os
import tempfile
from typing import Dict, List

import gin
import tensorflow as tf
from ranking import launch  # registers every configurable, before locking
from ranking.stability import StabilityMonitor
from ranking.tasks import Task
from sweeps import curves
from sweeps import runner


def initial_losses(run_directory: str) -> Dict[str, float]:
  """The untrained model's loss of each task on the stream's first batch,
  built from the run's operative_config.gin (model, data, seed)."""
  config = os.path.join(run_directory, "operative_config.gin")
  gin.clear_config()
  try:
    with tempfile.TemporaryDirectory() as model_dir:
      trainer = launch.build_trainer([config], [], model_dir)
      batch = next(iter(trainer.window.train_dataset(0)))
      outputs = trainer.model(batch, training=True)
      losses = trainer.model.per_example_losses(batch, outputs)
      return {t.name: float(tf.reduce_mean(losses[t.name]))
              for t in trainer.model.tasks}
  finally:
    gin.clear_config()


def rejudge(run_directory: str, summary: Dict,
            first: Dict[str, float]) -> Dict:
  """The verdict of today's detector on a run's metrics.jsonl."""
  metrics = curves.read_metrics(run_directory)
  final = summary["final_metrics"] or {}
  tasks = [Task(name, "binary" if f"{name}/auc" in final else "regression")
           for name in first]
  monitor = StabilityMonitor(tasks=tasks)
  monitor.observe(tf.constant([first[t.name] for t in tasks]),
                  tf.constant(0, tf.int64))
  train, evals = metrics.get("train", {}), metrics.get("eval", {})
  last_eval = max(evals) if evals else None

  def number(value):
    return math.nan if value is None else float(value)

  for step in sorted(set(train) | set(evals)):
    if step in train:
      record = train[step]
      losses = [number(record.get(f"{t.name}/loss")) for t in tasks]
      finite = (all(math.isfinite(x) for x in losses) and
                not record.get("skipped_steps"))
      monitor.observe(tf.constant(losses), tf.constant(step, tf.int64),
                      tf.constant(finite))
    if step in evals:
      results = {k: number(v) for k, v in evals[step].items()
                 if k not in ("step", "split", "nonfinite")}
      monitor.observe_eval(results, step, final=step == last_eval)
  return monitor.verdict()


def write(sweep, log=print) -> str:
  """Re-judges every collected run of `sweep`; writes and returns the path
  of results/<sweep>/rejudged.md."""
  runs_dir = os.path.join(runner.results_dir(sweep), "runs")
  summaries = runner.load_results(sweep, runs_dir)
  if not summaries:
    raise FileNotFoundError(f"No finished runs in {runs_dir}.")
  listing = os.path.join(runner.results_dir(sweep), "runs.csv")
  if not os.path.exists(listing):
    raise FileNotFoundError(f"{listing} is missing; write it with `python -m "
                            "sweeps --gin_file=... --report_only` first.")
  with open(listing) as f:
    table = {r["run"]: r for r in csv.DictReader(f)}
  cache: Dict[tuple, Dict[str, float]] = {}
  rows: List[tuple] = []
  for i, (name, summary) in enumerate(sorted(summaries.items()), 1):
    directory = os.path.join(runs_dir, name)
    if name not in table:  # collected, but no longer in the sweep's grid
      log(f"  skipping {name}: not in runs.csv (the sweep's grid)")
      continue
    run = dict(table[name], lr_multiplier=float(
        table[name]["lr_multiplier"]), threshold=table[name]["threshold"]
               or None)
    first = summary.get("initial_losses")
    if not first:
      key = (run["model"], run["seed"])  # the rate does not change it
      if key not in cache:
        log(f"  recomputing the untrained loss of {key[0]}, seed {key[1]}")
        cache[key] = initial_losses(directory)
      first = cache[key]
    verdict = rejudge(directory, summary, first)
    rows.append((name, run, summary, verdict))
    log(f"  [{i}/{len(summaries)}] {name}: "
          f"{'diverged' if summary['diverged'] else 'ok'} -> "
          + (f"diverged at step {verdict['diverged_at_step']} "
             f"({verdict['divergence_reason']})" if verdict["diverged"]
             else "ok"))
  path = os.path.join(runner.results_dir(sweep), "rejudged.md")
  text = report(sweep, rows)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  log(text)
  return path


def report(sweep, rows) -> str:
  """Counts per cell, before and after, and every changed verdict."""
  cells = collections.OrderedDict()
  for name, run, summary, verdict in rows:
    key = (run["model"], run["method"], run.get("threshold"),
           run["lr_multiplier"])
    old, new, n = cells.get(key, (0, 0, 0))
    cells[key] = (old + summary["diverged"], new + verdict["diverged"],
                  n + 1)
  total_old = sum(o for o, _, _ in cells.values())
  total_new = sum(n for _, n, _ in cells.values())
  lines = [
      f"# {sweep.name}: divergence counts re-judged",
      "",
      "Generated by `python -m sweeps --rejudge` from the committed runs' "
      "metrics.jsonl (see sweeps/rejudge.py for how interval means are "
      "judged). \"before\": the verdict the run wrote itself; \"after\": "
      "today's per-task detector (ranking/stability.py, default settings).",
      "",
      f"Diverged runs: {total_old} before, {total_new} after, of "
      f"{len(rows)}.",
      "",
      "| model | method | threshold | lr | runs | diverged before | "
      "diverged after |",
      "|---|---|---|---|---:|---:|---:|"]
  for (model, method, threshold, lr), (old, new, n) in cells.items():
    lines.append(f"| {model} | {method} | "
                 f"{'' if threshold is None else threshold} | {lr:g}x | {n} "
                 f"| {old} | {new} |")
  lines += ["", "Changed verdicts:", ""]
  changed = False
  for name, _, summary, verdict in rows:
    if bool(summary["diverged"]) != verdict["diverged"]:
      changed = True
      why = (f"diverged at step {verdict['diverged_at_step']}: "
             f"{verdict['divergence_reason']}" if verdict["diverged"] else
             "not diverged")
      before = (f"diverged at step {summary['diverged_at_step']} "
                f"({summary['divergence_reason']})" if summary["diverged"]
                else "not diverged")
      lines.append(f"- `{name}`: {before} -> {why}")
  if not changed:
    lines.append("- none")
  return "\n".join(lines) + "\n"

