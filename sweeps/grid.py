"""The Table 2 grid and the paper's selection protocol (section 5.1.3).

A sweep is declared in gin (`Sweep`, e.g. configs/table2_cpu.gin). Every
(model, method) pair goes through the same three steps:

  1. select: one run per (threshold, learning-rate multiplier) at the first
     seed, the threshold taken from the paper's search grid for GC, AGC and
     LAMB (naive and Clippy have none to search);
  2. pick the best of those by the primary binary task's next-day AUC, a run
     that diverged ranking below every run that did not (when all diverged,
     the lowest rate);
  3. seeds: the remaining seeds at the picked setting.

With `threshold_search_model`, the threshold is searched on that model only
and the value it picks is reused for the others (step 1 then has one
threshold per method on those models).

`plan(sweep, results)` returns every run that the results so far call for,
so a runner can start whatever is ready, in any order, and a rerun after a
kill finds the same runs under the same names.
"""

import dataclasses
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import gin

from ranking import gin_files as gin_files_lib

# Paper section 5.1.3: the hyperparameter searched for each baseline.
THRESHOLD_PARAMS = {
    "gc": "build_optimizer.clip_norm",
    "agc": "build_optimizer.clip_factor",
    "lamb": "build_optimizer.trust_coefficient",
}
PAPER_THRESHOLDS = {
    "gc": (1e-1, 1e-2, 1e-3),
    "agc": (1e-2, 1e-3, 1e-4),
    "lamb": (1e-1, 1e-2, 1e-3),
}
REPO = gin_files_lib.REPO
METHOD_NAMES = {"naive": "Naive", "gc": "GC", "agc": "AGC", "lamb": "LAMB",
                "clippy": "Clippy", "clippy_adam": "Clippy (Adam)",
                # Newer rules (optim/rules.py), at their published defaults.
                "adagc": "AdaGC", "zclip": "ZClip", "adam": "Adam",
                "spam": "SPAM (Adam)", "stable_adam": "StableAdamW-clip (Adam)"}


@gin.configurable
class Sweep:
  """A Table 2 sweep: models x methods x learning rates x seeds.

  Attributes:
    name: the sweep's name; runs go to <runs_dir>/<name>/, results to
      <results_dir>/<name>/.
    models: {label: model gin file}, in table order (e.g. {'Small':
      'configs/models/small.gin'}).
    methods: optimizer names; each uses configs/optimizers/<method>.gin.
    learning_rate: the 1x learning rate (dense and embedding Adagrad).
    learning_rates: {method: its own 1x rate of the dense optimizer}, for
      methods whose base optimizer is not Adagrad (Adam's rate is not
      Adagrad's); embeddings keep `learning_rate`.
    lr_multipliers: the learning rates tried, as multiples of 1x.
    seeds: the first selects; all are run at the picked setting. Each sets
      Trainer.seed (initial weights) and MovingWindow.seed (batch order).
    thresholds: {method: values searched}; methods absent have none.
    threshold_search_model: search thresholds on this model only and reuse
      the pick on the others; None searches on every model.
    base_gin_files: included before the model and optimizer files.
    run_gin_files: included after them (scale overlays).
    run_gin_params: bindings applied to every run, last.
    primary_auc, primary_rmse: the metrics the table reports; primary_auc
      also picks the learning rate and threshold.
    parallel: runs at once, each in its own process.
    threads_per_run: TensorFlow threads of each run (None: cores/parallel).
    runs_dir, results_dir: roots of run directories and of results
      (relative paths are from the repository root).
  """

  def __init__(self,
               name: str = gin.REQUIRED,
               models: Mapping[str, str] = gin.REQUIRED,
               methods: Sequence[str] = ("naive", "gc", "agc", "lamb",
                                         "clippy"),
               learning_rate: float = gin.REQUIRED,
               learning_rates: Optional[Mapping[str, float]] = None,
               lr_multipliers: Sequence[float] = (1.0, 2.0),
               seeds: Sequence[int] = (0, 1, 2),
               thresholds: Optional[Mapping[str, Sequence[float]]] = None,
               threshold_search_model: Optional[str] = None,
               base_gin_files: Sequence[str] = ("configs/base.gin",),
               run_gin_files: Sequence[str] = (),
               run_gin_params: Sequence[str] = (),
               primary_auc: str = "click/auc",
               primary_rmse: str = "watch_time/rmse",
               parallel: int = 2,
               threads_per_run: Optional[int] = None,
               runs_dir: str = "runs",
               results_dir: str = "results"):
    self.name = name
    self.models = dict(models)
    self.methods = tuple(methods)
    self.learning_rate = float(learning_rate)
    self.learning_rates = {m: float(v)
                           for m, v in (learning_rates or {}).items()}
    self.lr_multipliers = tuple(float(m) for m in lr_multipliers)
    self.seeds = tuple(int(s) for s in seeds)
    self.thresholds = {m: tuple(float(v) for v in values) for m, values in
                       (PAPER_THRESHOLDS if thresholds is None
                        else thresholds).items()}
    self.threshold_search_model = threshold_search_model
    self.base_gin_files = tuple(base_gin_files)
    self.run_gin_files = tuple(run_gin_files)
    self.run_gin_params = tuple(run_gin_params)
    self.primary_auc = primary_auc
    self.primary_rmse = primary_rmse
    self.parallel = int(parallel)
    self.threads_per_run = threads_per_run
    # Relative to the repository, like the gin files.
    self.runs_dir = os.path.join(REPO, runs_dir)
    self.results_dir = os.path.join(REPO, results_dir)
    self._validate()

  def _validate(self):
    def fail(message):
      raise ValueError(f"Sweep {self.name!r}: {message}")
    if not self.models:
      fail("models is empty.")
    unknown = [m for m in self.methods if m not in METHOD_NAMES]
    if unknown:
      fail(f"unknown methods {unknown}; known: {sorted(METHOD_NAMES)}.")
    for method in self.thresholds:
      if method not in THRESHOLD_PARAMS:
        fail(f"method {method!r} has no threshold to search; thresholds "
             f"apply to {sorted(THRESHOLD_PARAMS)}.")
      if not self.thresholds[method]:
        fail(f"thresholds[{method!r}] is empty.")
    if (self.threshold_search_model is not None and
        self.threshold_search_model not in self.models):
      fail(f"threshold_search_model {self.threshold_search_model!r} is not "
           f"one of the models {list(self.models)}.")
    if not self.lr_multipliers or not self.seeds:
      fail("lr_multipliers and seeds need at least one value each.")
    if self.learning_rate <= 0:
      fail(f"learning_rate must be > 0, got {self.learning_rate}.")
    for method, rate in self.learning_rates.items():
      if method not in self.methods:
        fail(f"learning_rates names {method!r}, which is not one of the "
             f"methods {list(self.methods)}.")
      if not rate > 0:
        fail(f"learning_rates[{method!r}] must be > 0, got {rate}.")
    if self.parallel < 1:
      fail(f"parallel must be >= 1, got {self.parallel}.")
    if len(set(map(slug, self.models))) != len(self.models):
      fail(f"model labels {list(self.models)} collide as directory names.")
    for what, values in [("lr_multipliers", self.lr_multipliers),
                         ("seeds", self.seeds)] + [
                             (f"thresholds[{m!r}]", [f"{v:.0e}" for v in vs])
                             for m, vs in self.thresholds.items()]:
      if len(set(values)) != len(values):
        fail(f"{what} has values that coincide (run names give thresholds "
             f"one significant digit): {list(values)}.")

  def plan(self, results: Mapping[str, "Result"]) -> List["Run"]:
    """Every run the protocol calls for given the results so far (the
    module's plan(); what sweeps/runner.py asks of any sweep)."""
    return plan(self, results)

  def search_thresholds(self, model: str, method: str) -> bool:
    return method in self.thresholds and (
        self.threshold_search_model in (None, model))

  def total_runs(self) -> int:
    """How many runs the whole protocol takes."""
    total = 0
    for model in self.models:
      for method in self.methods:
        n = len(self.thresholds[method]) if self.search_thresholds(
            model, method) else 1
        total += n * len(self.lr_multipliers) + len(self.seeds) - 1
    return total


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the grid."""
  model: str
  method: str
  threshold: Optional[float]
  lr_multiplier: float
  seed: int
  stage: str  # 'select' or 'seed'

  @property
  def name(self) -> str:
    parts = [slug(self.model), self.method]
    if self.threshold is not None:
      parts.append(f"{self.threshold:.0e}")
    parts += [f"lr{self.lr_multiplier:g}x", f"s{self.seed}"]
    return "-".join(parts)

  def learning_rate(self, sweep: Sweep) -> float:
    """The dense optimizer's rate (the method's own 1x, if it has one)."""
    return sweep.learning_rates.get(
        self.method, sweep.learning_rate) * self.lr_multiplier

  def gin_files(self, sweep: Sweep) -> List[str]:
    return (list(sweep.base_gin_files) + [sweep.models[self.model],
            f"configs/optimizers/{self.method}.gin"] +
            list(sweep.run_gin_files))

  def spec(self, sweep: Sweep) -> Dict[str, List[str]]:
    """What the run trains with; recorded as run.json beside its results."""
    return {"gin_files": self.gin_files(sweep),
            "gin_params": self.gin_params(sweep)}

  def settings(self, sweep: Sweep) -> Dict[str, object]:
    """The run's setting, as runs.csv lists it after the run's name."""
    return {
        "model": self.model, "method": self.method,
        "threshold_param": THRESHOLD_PARAMS.get(self.method, "")
                           if self.threshold is not None else "",
        "threshold": "" if self.threshold is None else self.threshold,
        "lr_multiplier": self.lr_multiplier,
        "learning_rate": self.learning_rate(sweep), "seed": self.seed,
        "stage": self.stage,
    }

  def gin_params(self, sweep: Sweep) -> List[str]:
    params = [f"LEARNING_RATE = {sweep.learning_rate * self.lr_multiplier!r}",
              f"Trainer.seed = {self.seed}",
              f"MovingWindow.seed = {self.seed}"]
    if self.method in sweep.learning_rates:
      params.append(f"build_optimizer.learning_rate = "
                    f"{self.learning_rate(sweep)!r}")
    if self.threshold is not None:
      params.append(f"{THRESHOLD_PARAMS[self.method]} = {self.threshold!r}")
    return list(sweep.run_gin_params) + params


def slug(label: str) -> str:
  """'Large+DCN' -> 'large_dcn': a model label as a directory name."""
  out = "".join(c.lower() if c.isalnum() else "_" for c in label)
  return "_".join(p for p in out.split("_") if p)


# A run's result as the protocol needs it: (primary AUC, diverged).
Result = Tuple[float, bool]


def result_of(sweep: Sweep, summary: Mapping, name: str = "a run") -> Result:
  """(primary AUC, diverged) of a finished run's summary.json; a
  non-finite AUC (null in strict JSON, the string 'nan' in older runs) is
  NaN."""
  metrics = summary.get("final_metrics") or {}
  if sweep.primary_auc not in metrics:
    raise KeyError(f"{name}: {type(sweep).__name__}.primary_auc "
                   f"{sweep.primary_auc!r} is not among the run's final "
                   f"metrics {sorted(metrics)}.")
  value = metrics[sweep.primary_auc]
  try:
    auc = math.nan if value is None else float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name}: {sweep.primary_auc} is "
                     f"{metrics[sweep.primary_auc]!r}, not a number.") from e
  return auc, bool(summary["diverged"])


def results_of(sweep: Sweep, summaries: Mapping[str, Mapping]
               ) -> Dict[str, Result]:
  return {name: result_of(sweep, s, name) for name, s in summaries.items()}


def rank_key(run: "Run", result: Result) -> Tuple[int, float]:
  """Higher is better: any run that did not diverge beats any that did, by
  AUC. Among runs that diverged the AUC at the collapse is noise; the
  lowest rate is picked, the fair one to give the other seeds."""
  auc, diverged = result
  if diverged:
    return (0, -run.lr_multiplier)
  return (1, auc if auc == auc else float("-inf"))


def selection_runs(sweep: Sweep, model: str, method: str,
                   thresholds: Sequence[Optional[float]]) -> List[Run]:
  return [Run(model, method, t, m, sweep.seeds[0], "select")
          for t in thresholds for m in sweep.lr_multipliers]


def best_of(runs: Sequence[Run],
            results: Mapping[str, Result]) -> Optional[Run]:
  """The best run of `runs` by rank_key; None until all have results."""
  if any(r.name not in results for r in runs):
    return None
  return max(runs, key=lambda r: rank_key(r, results[r.name]))


def picked(sweep: Sweep, model: str, method: str,
           results: Mapping[str, Result]) -> Tuple[List[Run], Optional[Run]]:
  """(the selection runs known so far, the picked one or None)."""
  if sweep.search_thresholds(model, method):
    candidates = list(sweep.thresholds[method])
  elif method in sweep.thresholds:
    # Reuse the threshold picked on the search model, once it is known.
    _, searched = picked(sweep, sweep.threshold_search_model, method, results)
    if searched is None:
      return [], None
    candidates = [searched.threshold]
  else:
    candidates = [None]
  runs = selection_runs(sweep, model, method, candidates)
  return runs, best_of(runs, results)


def plan(sweep: Sweep, results: Mapping[str, Result]) -> List[Run]:
  """Every run the protocol calls for given the results so far (finished
  or not), in table order."""
  out = []
  for model in sweep.models:
    for method in sweep.methods:
      runs, best = picked(sweep, model, method, results)
      out.extend(runs)
      if best is not None:
        out.extend(seed_runs(sweep, best)[1:])
  return out


def seed_runs(sweep: Sweep, best: Run) -> List[Run]:
  """The picked selection run and its runs at the other seeds."""
  return [best] + [dataclasses.replace(best, seed=s, stage="seed")
                   for s in sweep.seeds[1:]]


def table_runs(sweep: Sweep, model: str, method: str,
               results: Mapping[str, Result]) -> Tuple[Optional[Run],
                                                       List[Run]]:
  """(the picked selection run, all its seeds' runs) of one table cell."""
  _, best = picked(sweep, model, method, results)
  return (None, []) if best is None else (best, seed_runs(sweep, best))


def load_sweep(gin_files: Sequence[str], gin_params: Sequence[str]) -> Sweep:
  """Parses sweep gin files (paths relative to the repository root work
  from anywhere) and checks that every gin file a run needs exists."""
  gin_files_lib.parse_gin(gin_files, gin_params)
  sweep = Sweep()
  needed = [(f"model {m!r}", p) for m, p in sweep.models.items()]
  needed += [("Sweep.base_gin_files", p) for p in sweep.base_gin_files]
  needed += [("Sweep.run_gin_files", p) for p in sweep.run_gin_files]
  needed += [(f"method {m!r}", f"configs/optimizers/{m}.gin")
             for m in sweep.methods]
  for what, path in needed:
    if not os.path.isfile(os.path.join(REPO, path)):
      raise FileNotFoundError(f"Sweep {sweep.name!r}: {what}: gin file not "
                              f"found: {path}")
  return sweep
