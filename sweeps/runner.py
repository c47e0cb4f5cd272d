"""Runs a sweep: each training in its own train.py process, at most
`parallel` at once, skipping runs already finished.

A sweep is a Table 2 grid (grid.Sweep) or a Table 3 ablation
(ablation.Ablation); the runner needs only what both have (`Sweep` and
`Run` below): the runs the sweep calls for given the results so far, and
each run's name, gin files and bindings.

A run is finished when its directory holds summary.json (train.py writes it
last, atomically). A run killed midway left checkpoints in its directory,
and the rerun of the sweep restarts it there, so it resumes. Each finished
run's summary.json and metrics.jsonl (gzipped) are copied to
<results_dir>/<sweep>/runs/<run>/ and runs.csv is rewritten, so the results
directory holds everything the table, figures and claims read.
"""

import csv
import fcntl
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Protocol

from sweeps import grid

REPO = grid.REPO
# Files collected from each run; metrics.jsonl is gzipped on the way (the
# per-layer diagnostics make it ~200 KB a run, ~20 KB compressed).
COPIED = {"run.json": "run.json", "summary.json": "summary.json",
          "metrics.jsonl": "metrics.jsonl.gz",
          "operative_config.gin": "operative_config.gin"}


class Run(Protocol):
  """One training of a sweep (grid.Run, ablation.Run)."""

  @property
  def name(self) -> str:
    """Its directory name, unique in the sweep."""

  def gin_files(self, sweep) -> List[str]:
    """train.py's --gin_file values, in order."""

  def gin_params(self, sweep) -> List[str]:
    """train.py's --gin_param values, in order."""

  def spec(self, sweep) -> Dict[str, List[str]]:
    """{'gin_files': ..., 'gin_params': ...}, recorded as run.json."""

  def learning_rate(self, sweep) -> float:
    """The run's learning rate."""

  def settings(self, sweep) -> Dict[str, object]:
    """The columns of runs.csv that describe the run's setting."""


class Sweep(Protocol):
  """What the runner asks of a sweep (grid.Sweep, ablation.Ablation).

  Attributes:
    name: runs go to <runs_dir>/<name>/, results to <results_dir>/<name>/.
    runs_dir, results_dir: absolute roots.
    parallel: runs at once.
    threads_per_run: TensorFlow threads of each run (None: cores/parallel).
    primary_auc: the final metric the progress lines show.
  """
  name: str
  runs_dir: str
  results_dir: str
  parallel: int
  threads_per_run: Optional[int]
  primary_auc: str

  def plan(self, results: Mapping[str, grid.Result]) -> List[Run]:
    """Every run called for given {run name: (primary AUC, diverged)} of
    the finished runs, in table order; a run keeps its name from call to
    call."""

  def total_runs(self) -> int:
    """How many runs the whole sweep takes."""


def run_dir(sweep: Sweep, run: Run) -> str:
  return os.path.join(sweep.runs_dir, sweep.name, run.name)


def results_dir(sweep: Sweep) -> str:
  return os.path.join(sweep.results_dir, sweep.name)


def collected_dir(sweep: Sweep, name: str) -> str:
  """Where a finished run's small files are collected."""
  return os.path.join(results_dir(sweep), "runs", name)


def read_summary(directory: str) -> Optional[Dict]:
  path = os.path.join(directory, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not JSON ({e}); move the run away or "
                       "rerun it.") from e


def load_results(sweep: Sweep, directory: str) -> Dict[str, Dict]:
  """{run name: summary} of the finished runs under `directory`, whose
  subdirectories are named by run."""
  out = {}
  if os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      summary = read_summary(os.path.join(directory, name))
      if summary is not None:
        out[name] = summary
  return out


def run_row(sweep: Sweep, run: Run, summary: Dict) -> Dict:
  """One line of runs.csv."""
  row = {
      "run": run.name, **run.settings(sweep),
      "diverged": summary["diverged"],
      "diverged_at_step": summary.get("diverged_at_step"),
      "divergence_reason": summary.get("divergence_reason") or "",
      "micro_divergences": summary.get("micro_divergences"),
      "final_step": summary["final_step"],
      "scheduled_steps": summary["scheduled_steps"],
      "wall_seconds": summary.get("wall_seconds", ""),
  }
  row.update(summary.get("final_metrics") or {})
  return row


def write_runs_csv(sweep: Sweep, summaries: Dict[str, Dict]) -> str:
  """runs.csv: one row per finished run of the plan, in plan order."""
  results = grid.results_of(sweep, summaries)
  rows = [run_row(sweep, run, summaries[run.name])
          for run in sweep.plan(results) if run.name in summaries]
  columns = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  path = os.path.join(results_dir(sweep), "runs.csv")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(path + ".tmp", path)
  return path


def collect_dir(source: str, target: str,
                wall_seconds: Optional[float]) -> Dict:
  """Copies a finished run's small files into the results directory,
  summary.json last: a copy with summary.json is a whole copy. Returns
  the summary as collected."""
  os.makedirs(target, exist_ok=True)
  for name, copy in COPIED.items():
    if name != "summary.json" and os.path.exists(os.path.join(source, name)):
      temporary = os.path.join(target, copy + ".tmp")
      with open(os.path.join(source, name), "rb") as f, (
          gzip.GzipFile(temporary, "wb", mtime=0) if copy.endswith(".gz")
          else open(temporary, "wb")) as out:
        shutil.copyfileobj(f, out)
      os.replace(temporary, os.path.join(target, copy))
  summary = read_summary(source)
  if wall_seconds is not None:
    summary["wall_seconds"] = round(wall_seconds, 1)
  with open(os.path.join(target, "summary.json.tmp"), "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(os.path.join(target, "summary.json.tmp"),
             os.path.join(target, "summary.json"))
  return summary


def collected_whole(source: str, target: str) -> bool:
  """Whether target holds every file of the finished run in source."""
  return read_summary(target) is not None and all(
      os.path.exists(os.path.join(target, copy))
      for name, copy in COPIED.items()
      if os.path.exists(os.path.join(source, name)))


def _die_with_parent():
  """In the child: SIGTERM when the runner dies, even by SIGKILL, so a
  killed sweep leaves no training behind to race its rerun (Linux)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
  except OSError:
    pass


def command(sweep: Sweep, run: Run) -> List[str]:
  args = [sys.executable, os.path.join(REPO, "train.py"),
          f"--model_dir={run_dir(sweep, run)}"]
  args += [f"--gin_file={f}" for f in run.gin_files(sweep)]
  args += [f"--gin_param={p}" for p in run.gin_params(sweep)]
  return args


def child_env(sweep: Sweep) -> Dict[str, str]:
  env = dict(os.environ)
  env["TF_USE_LEGACY_KERAS"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  threads = sweep.threads_per_run or max(
      1, (os.cpu_count() or 1) // sweep.parallel)
  env["TF_NUM_INTRAOP_THREADS"] = str(threads)
  env["TF_NUM_INTEROP_THREADS"] = str(threads)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


class _Running:
  def __init__(self, run, process, log_file, started):
    self.run, self.process, self.log_file = run, process, log_file
    self.started = started


def _stale(sweep: Sweep, run: Run, directory: str) -> Optional[str]:
  """How the run.json in `directory` differs from the run's settings now,
  or None (same, or none recorded)."""
  path = os.path.join(directory, "run.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    recorded = json.load(f)
  if recorded == run.spec(sweep):
    return None
  return f"{run.name}: recorded {recorded}, now {run.spec(sweep)}"


def _refuse(sweep: Sweep, stale: List[str]):
  raise ValueError(
      f"{type(sweep).__name__} {sweep.name!r}: {len(stale)} runs were "
      f"started with other settings; give the sweep another "
      f"{type(sweep).__name__}.name or delete "
      f"{results_dir(sweep)} and {os.path.join(sweep.runs_dir, sweep.name)}"
      ":\n" + "\n".join(stale))


def check_specs(sweep: Sweep, summaries: Dict[str, Dict]):
  """Refuses finished runs that trained with other settings than the
  sweep's (e.g. after its learning rate was changed): they would be
  reported as this sweep's."""
  results = grid.results_of(sweep, summaries)
  stale = [_stale(sweep, run, collected_dir(sweep, run.name))
           for run in sweep.plan(results) if run.name in summaries]
  if any(stale):
    _refuse(sweep, [s for s in stale if s])


def refuse_other_settings(sweep: Sweep, run: Run, directory: str):
  """Refuses to resume a half-finished run that started with other
  settings (its checkpoints would mix the two)."""
  stale = _stale(sweep, run, directory)
  if stale:
    _refuse(sweep, [stale])


def _count_done(sweep: Sweep, summaries: Dict[str, Dict]) -> int:
  results = grid.results_of(sweep, summaries)
  return len({r.name for r in sweep.plan(results)} & set(summaries))


def _format_minutes(seconds: float) -> str:
  return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_sweep(sweep: Sweep, log: Callable[[str], None] = print,
              max_new_runs: Optional[int] = None) -> Dict[str, Dict]:
  """Runs every missing run of the plan; returns {run name: summary}.

  Args:
    sweep: a grid.Sweep or an ablation.Ablation.
    log: where progress lines go.
    max_new_runs: stop starting runs after this many (None: all).

  Raises:
    RuntimeError: some runs failed (their logs are named); the finished
      ones are kept.
  """
  os.makedirs(os.path.join(sweep.runs_dir, sweep.name), exist_ok=True)
  lock = open(os.path.join(sweep.runs_dir, sweep.name, ".lock"), "w")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError as e:
    raise RuntimeError(f"Another process is running sweep {sweep.name!r} "
                       f"({lock.name} is locked).") from e
  # Finished: collected into the results directory, or finished in the
  # runs directory while no runner was watching (then collected now).
  for name in load_results(sweep, os.path.join(sweep.runs_dir, sweep.name)):
    source = os.path.join(sweep.runs_dir, sweep.name, name)
    target = collected_dir(sweep, name)
    if not collected_whole(source, target):
      previous = read_summary(target) or {}
      collect_dir(source, target, previous.get("wall_seconds"))
  summaries = load_results(sweep, os.path.join(results_dir(sweep), "runs"))
  check_specs(sweep, summaries)
  total = sweep.total_runs()
  done_before = _count_done(sweep, summaries)
  log(f"sweep {sweep.name}: {total} runs in all, {done_before} already "
      f"finished; {sweep.parallel} at a time; runs in "
      f"{os.path.join(sweep.runs_dir, sweep.name)}, results in "
      f"{results_dir(sweep)}")
  env = child_env(sweep)
  running: List[_Running] = []
  failed: Dict[str, str] = {}
  started_new = 0
  sweep_start = time.time()
  durations: List[float] = []

  def stop_children(signum, frame):  # pylint: disable=unused-argument
    for r in running:
      r.process.terminate()
    for r in running:
      r.process.wait()
    raise KeyboardInterrupt(f"sweep stopped by signal {signum}; rerun to "
                            "finish the missing runs")

  previous = signal.signal(signal.SIGTERM, stop_children)
  try:
    while True:
      results = grid.results_of(sweep, summaries)
      busy = {r.run.name for r in running}
      ready = [r for r in sweep.plan(results)
               if r.name not in summaries and r.name not in busy and
               r.name not in failed]
      while ready and len(running) < sweep.parallel and (
          max_new_runs is None or started_new < max_new_runs):
        run = ready.pop(0)
        directory = run_dir(sweep, run)
        os.makedirs(directory, exist_ok=True)
        resumed = os.path.isdir(os.path.join(directory, "checkpoints"))
        refuse_other_settings(sweep, run, directory)
        with open(os.path.join(directory, "run.json"), "w") as f:
          json.dump(run.spec(sweep), f, indent=1)
        log_file = open(os.path.join(directory, "train.log"), "a")
        process = subprocess.Popen(command(sweep, run), cwd=REPO, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   preexec_fn=_die_with_parent)
        running.append(_Running(run, process, log_file, time.time()))
        started_new += 1
        log(f"  start  {run.name}" + (" (resuming)" if resumed else ""))
      if not running:
        break
      time.sleep(0.5)
      for r in list(running):
        code = r.process.poll()
        if code is None:
          continue
        running.remove(r)
        r.log_file.close()
        elapsed = time.time() - r.started
        if code != 0 or read_summary(run_dir(sweep, r.run)) is None:
          failed[r.run.name] = os.path.join(run_dir(sweep, r.run),
                                            "train.log")
          log(f"  FAILED {r.run.name} (exit {code}); see "
              f"{failed[r.run.name]}")
          continue
        summaries[r.run.name] = collect_dir(
            run_dir(sweep, r.run), collected_dir(sweep, r.run.name), elapsed)
        write_runs_csv(sweep, summaries)
        durations.append(elapsed)
        auc, diverged = grid.result_of(sweep, summaries[r.run.name],
                                       r.run.name)
        done = _count_done(sweep, summaries)
        left = total - done
        eta = (sum(durations) / len(durations)) * left / sweep.parallel
        log(f"  done   {r.run.name}: {sweep.primary_auc} {auc:.4f}"
            f"{' DIVERGED' if diverged else ''} ({elapsed:.0f} s) "
            f"[{done}/{total}, elapsed "
            f"{_format_minutes(time.time() - sweep_start)}, "
            f"~{_format_minutes(eta)} left]")
  finally:
    signal.signal(signal.SIGTERM, previous)
    for r in running:  # only on an exception: stop what we started
      r.process.terminate()
      r.process.wait()
      r.log_file.close()
    lock.close()
  if summaries:
    write_runs_csv(sweep, summaries)
  if failed:
    raise RuntimeError(f"{len(failed)} runs failed: " + ", ".join(
        f"{n} (log: {p})" for n, p in failed.items()))
  return summaries
