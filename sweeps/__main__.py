"""Runs a Table 2 sweep or a Table 3 ablation and writes its report.

  python -m sweeps --gin_file=configs/table2_cpu.gin          # the CPU grid
  python -m sweeps --gin_file=configs/table2_cpu.gin --report_only
  python -m sweeps --gin_file=configs/table2_cpu.gin --rejudge
  python -m sweeps --gin_file=configs/table3_cpu.gin          # the ablation

What the gin files bind says which: `Sweep` (sweeps/grid.py, Table 2) or
`Ablation` (sweeps/ablation.py, Table 3). Runs already finished are
skipped; a run killed midway resumes from its checkpoints. Stopping the
sweep (Ctrl-C, SIGTERM, even SIGKILL) stops its trainings; rerunning it
finishes only the missing runs. Writes results/<name>/: runs.csv,
runs/<run>/{summary.json,metrics.jsonl.gz,operative_config.gin,run.json},
and for a Table 2 sweep table2.md, per_task.csv, convergence.md, claims.md
(and claims.json) and the figures, for an ablation table3.md.
"""

import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from sweeps import claims
from sweeps import convergence
from sweeps import figures
from sweeps import grid
from sweeps import kinds
from sweeps import runner
from sweeps import table
from sweeps import table3

flags.DEFINE_multi_string("gin_file", [],
                          "Sweep or Ablation gin files, in order.")
flags.DEFINE_multi_string("gin_param", [],
                          "Sweep or Ablation bindings, applied last.")
flags.DEFINE_bool("report_only", False,
                  "Only (re)write the table (and for Table 2 the figures "
                  "and claims) from the results directory; start no run.")
flags.DEFINE_bool("rejudge", False,
                  "Table 2 sweeps only: re-judge the collected runs with "
                  "today's divergence detector (sweeps/rejudge.py): "
                  "results/<name>/rejudged.md; start no run.")
FLAGS = flags.FLAGS
def report(sweep: grid.Sweep, log=print):
  """Writes table2.md, per_task.csv, the figures, convergence.md and
  claims.md from the collected runs; returns the paths."""
  out_dir = runner.results_dir(sweep)
  runs_dir = os.path.join(out_dir, "runs")
  summaries = runner.load_results(sweep, runs_dir)
  if not summaries:
    raise FileNotFoundError(f"No finished runs in {runs_dir}; run the sweep "
                            "first.")
  runner.write_runs_csv(sweep, summaries)
  paths = list(table.write(sweep, summaries, out_dir))
  for path, shown in figures.write(sweep, summaries, runs_dir,
                                   out_dir).items():
    if shown is None:
      log(f"  {os.path.basename(path)}: not drawn, the sweep has no such run")
      if os.path.exists(path):
        os.remove(path)
    else:
      paths.append(path)
  paths.append(convergence.write(sweep, summaries, runs_dir, out_dir))
  paths.append(claims.write(sweep, summaries, runs_dir, out_dir))
  with open(os.path.join(out_dir, "table2.md")) as f:
    log("\n" + f.read())
  with open(os.path.join(out_dir, "claims.md")) as f:
    log(f.read())
  log("wrote " + ", ".join(paths))
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.gin_file:
    raise app.UsageError("Give --gin_file, e.g. configs/table2_cpu.gin.")
  try:
    kind = kinds.kind_of(FLAGS.gin_file, FLAGS.gin_param)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.rejudge:
    if kind != "Sweep":
      raise app.UsageError("--rejudge re-judges Table 2 sweeps (Sweep) "
                           "only; this is an Ablation.")
    from sweeps import rejudge  # pylint: disable=g-import-not-at-top
    # It builds models: every configurable registers before gin locks.
    sweep = grid.load_sweep(FLAGS.gin_file, FLAGS.gin_param)
    print(f"wrote {rejudge.write(sweep, log=lambda s: print(s, flush=True))}")
    return 0
  sweep = kinds.load(FLAGS.gin_file, FLAGS.gin_param)
  if not FLAGS.report_only:
    start = time.time()
    runner.run_sweep(sweep, log=lambda s: print(s, flush=True))
    print(f"sweep {sweep.name}: all runs finished; this invocation took "
          f"{(time.time() - start) / 60:.1f} min", flush=True)
  if kind == "Ablation":
    table3.report(sweep)
  else:
    report(sweep)
  return 0


if __name__ == "__main__":
  app.run(main)
