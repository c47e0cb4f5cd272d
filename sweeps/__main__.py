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
from gin import config_parser
from ranking import gin_files as gin_files_lib
from sweeps import ablation
from sweeps import claims
from sweeps import convergence
from sweeps import figures
from sweeps import grid
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
KINDS = {"Sweep": "a Table 2 grid, e.g. configs/table2_cpu.gin",
         "Ablation": "a Table 3 ablation, e.g. configs/table3_cpu.gin"}


def _bound(text: str, where: str, seen=()) -> set:
  """The configurables a gin text binds (through its includes)."""
  out = set()
  for statement in gin_files_lib.gin_statements(text, where):
    if isinstance(statement, config_parser.BindingStatement):
      out.add(statement.selector.rsplit(".", 1)[-1])
    elif isinstance(statement, config_parser.IncludeStatement):
      path = gin_files_lib.resolve(statement.filename)
      if os.path.isfile(path) and path not in seen:
        with open(path) as f:
          out |= _bound(f.read(), statement.filename, seen + (path,))
  return out


def kind_of(gin_files, gin_params) -> str:
  """'Sweep' or 'Ablation': which of the two the gin files bind.

  Raises:
    FileNotFoundError: a gin file is missing.
    ValueError: they bind neither, or both.
  """
  bound = set()
  for path in gin_files:
    if not os.path.isfile(gin_files_lib.resolve(path)):
      raise FileNotFoundError(f"Gin file not found: {path}")
    with open(gin_files_lib.resolve(path)) as f:
      bound |= _bound(f.read(), path, (gin_files_lib.resolve(path),))
  bound |= _bound("\n".join(gin_params), "--gin_param")
  kinds = [k for k in KINDS if k in bound]
  files = ", ".join(gin_files)
  if not kinds:
    raise ValueError(
        f"{files}: binds neither Sweep ({KINDS['Sweep']}) nor Ablation "
        f"({KINDS['Ablation']}); python -m sweeps runs one of them (a "
        f"single training is train.py's).")
  if len(kinds) > 1:
    raise ValueError(f"{files}: binds both Sweep and Ablation; a sweep is "
                     "one of them.")
  return kinds[0]


def load(gin_files, gin_params):
  """The grid.Sweep or ablation.Ablation the gin files declare."""
  if kind_of(gin_files, gin_params) == "Ablation":
    return ablation.load_ablation(gin_files, gin_params)
  return grid.load_sweep(gin_files, gin_params)


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
    kind = kind_of(FLAGS.gin_file, FLAGS.gin_param)
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
  sweep = load(FLAGS.gin_file, FLAGS.gin_param)
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
