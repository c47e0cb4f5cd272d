"""The Table 3 ablation: how often a model diverges, and what changes that.

Paper Table 3 (Tang et al. 2023, section 5.2) trains Large+DCN without any
treatment (naive Adagrad) at a learning rate where it often diverges, over
several seeds, and then changes the model one way at a time (smaller, no
DCN, fewer input features, fewer tasks) to see how the divergence rate
falls. An `Ablation` is declared in gin (e.g. configs/table3_cpu.gin):

  one model gin file, one method, one learning rate;
  variants: {label: [gin bindings]}, the first the reference ('clean');
  seeds: every variant runs at every seed.

Every run is known from the start, so plan() ignores the results: the
runner (sweeps/runner.py) starts them all, resumes killed ones and skips
finished ones exactly as for a Table 2 grid (grid.Sweep); sweeps/table3.py
writes the table.
"""

import collections.abc
import dataclasses
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import gin
from gin import config_parser

from ranking import gin_files as gin_files_lib
from sweeps import grid

REPO = gin_files_lib.REPO


@gin.configurable
class Ablation:
  """A Table 3 ablation: variants of one model x seeds, one method and rate.

  Attributes:
    name: the ablation's name; runs go to <runs_dir>/<name>/, results to
      <results_dir>/<name>/.
    model: the model's gin file (e.g. 'configs/models/large_dcn.gin').
    model_label: how the table names the model; None: the file's name
      ('large_dcn').
    method: the optimizer (configs/optimizers/<method>.gin); 'naive' is
      Adagrad without treatment, as in the paper.
    learning_rate: every run's (dense and embedding Adagrad).
    variants: {label: [gin bindings]} in table order, e.g. {'clean': [],
      'no DCN': ['build_model.cross_layers = 0']}; the first is the
      reference. A variant's bindings are applied last.
    seeds: every variant runs at each; a seed sets Trainer.seed (initial
      weights) and MovingWindow.seed (batch order).
    base_gin_files: included before the model and optimizer files.
    run_gin_files: included after them (scale overlays).
    run_gin_params: bindings applied to every run, before the run's own.
    primary_auc: the final metric the table averages over the runs that
      did not diverge.
    parallel: runs at once, each in its own process.
    threads_per_run: TensorFlow threads of each run (None: cores/parallel).
    runs_dir, results_dir: roots of run directories and of results
      (relative paths are from the repository root).
  """

  def __init__(self,
               name: str = gin.REQUIRED,
               model: str = gin.REQUIRED,
               variants: Mapping[str, Sequence[str]] = gin.REQUIRED,
               learning_rate: float = gin.REQUIRED,
               model_label: Optional[str] = None,
               method: str = "naive",
               seeds: Sequence[int] = (0, 1, 2),
               base_gin_files: Sequence[str] = ("configs/base.gin",),
               run_gin_files: Sequence[str] = (),
               run_gin_params: Sequence[str] = (),
               primary_auc: str = "click/auc",
               parallel: int = 2,
               threads_per_run: Optional[int] = None,
               runs_dir: str = "runs",
               results_dir: str = "results"):
    self.name = name
    self.model = model
    self.model_label = (model_label if model_label is not None else
                        os.path.splitext(os.path.basename(str(model)))[0])
    self.method = method
    self.learning_rate = float(learning_rate)
    if not isinstance(variants, collections.abc.Mapping):
      raise ValueError(f"Ablation {name!r}: variants must be a {{label: "
                       f"[gin bindings]}} mapping, got {variants!r}.")
    self.variants = {label: tuple(bindings)
                     if isinstance(bindings, (list, tuple)) else bindings
                     for label, bindings in variants.items()}
    self.seeds = tuple(seeds)
    self.base_gin_files = tuple(base_gin_files)
    self.run_gin_files = tuple(run_gin_files)
    self.run_gin_params = tuple(run_gin_params)
    self.primary_auc = primary_auc
    self.parallel = int(parallel)
    self.threads_per_run = threads_per_run
    # Relative to the repository, like the gin files.
    self.runs_dir = os.path.join(REPO, runs_dir)
    self.results_dir = os.path.join(REPO, results_dir)
    self._validate()

  def _validate(self):
    def fail(message):
      raise ValueError(f"Ablation {self.name!r}: {message}")
    if not isinstance(self.name, str) or not self.name or "/" in self.name:
      fail("name must be a non-empty directory name.")
    if not isinstance(self.model, str) or not self.model:
      fail(f"model must be a model gin file, got {self.model!r}.")
    if self.method not in grid.METHOD_NAMES:
      fail(f"unknown method {self.method!r}; known: "
           f"{sorted(grid.METHOD_NAMES)}.")
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      fail(f"learning_rate must be > 0, got {self.learning_rate}.")
    if not self.variants:
      fail("variants is empty; give at least the reference, e.g. "
           "{'clean': []}.")
    for label, bindings in self.variants.items():
      if not isinstance(label, str) or not grid.slug(label):
        fail(f"variant label {label!r} makes no directory name.")
      if not isinstance(bindings, tuple):
        fail(f"variants[{label!r}] must be a list of gin bindings, not "
             + (f"the string {bindings!r}." if isinstance(bindings, str)
                else f"{bindings!r}."))
      for binding in bindings:
        _check_binding(binding, f"Ablation {self.name!r}: variants"
                       f"[{label!r}]")
    slugs = [grid.slug(label) for label in self.variants]
    if len(set(slugs)) != len(slugs):
      fail(f"variant labels {list(self.variants)} collide as directory "
           "names.")
    seen = {}
    for label, bindings in self.variants.items():
      if bindings in seen:
        fail(f"variants {seen[bindings]!r} and {label!r} have the same "
             f"bindings {list(bindings)}: they would train the same runs.")
      seen[bindings] = label
    if not self.seeds:
      fail("seeds needs at least one value.")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
      fail(f"seeds must be whole numbers, got {list(self.seeds)}.")
    if len(set(self.seeds)) != len(self.seeds):
      fail(f"seeds has values that coincide: {list(self.seeds)}.")
    if self.parallel < 1:
      fail(f"parallel must be >= 1, got {self.parallel}.")
    if self.threads_per_run is not None and self.threads_per_run < 1:
      fail(f"threads_per_run must be >= 1 or None, got "
           f"{self.threads_per_run}.")

  @property
  def reference(self) -> str:
    """The first variant's label: the model as it is."""
    return next(iter(self.variants))

  def runs(self, variant: str) -> List["Run"]:
    """The runs of one variant, by seed."""
    return [Run(variant, seed) for seed in self.seeds]

  def plan(self, results: Mapping[str, grid.Result]) -> List["Run"]:
    """Every run: each seed over all the variants, seed after seed (so a
    sweep stopped early has every variant at the first seeds). Results do
    not change it."""
    del results  # every run is known from the start
    return [Run(variant, seed) for seed in self.seeds
            for variant in self.variants]

  def total_runs(self) -> int:
    return len(self.variants) * len(self.seeds)


def _check_binding(binding, where: str):
  """A variant binding is one gin binding ('Configurable.param = value' or
  a macro); whether the configurable exists is train.py's to say."""
  if not isinstance(binding, str):
    raise ValueError(f"{where}: {binding!r} is not a gin binding string.")
  statements = gin_files_lib.gin_statements(binding, f"{where} {binding!r}")
  if len(statements) != 1 or not isinstance(statements[0],
                                            config_parser.BindingStatement):
    raise ValueError(f"{where}: {binding!r} is not one gin binding "
                     "'Configurable.parameter = value'.")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of an ablation: a variant at a seed."""
  variant: str
  seed: int

  @property
  def name(self) -> str:
    return f"{grid.slug(self.variant)}-s{self.seed}"

  def learning_rate(self, ablation: Ablation) -> float:
    return ablation.learning_rate

  def gin_files(self, ablation: Ablation) -> List[str]:
    return (list(ablation.base_gin_files) +
            [ablation.model, f"configs/optimizers/{ablation.method}.gin"] +
            list(ablation.run_gin_files))

  def gin_params(self, ablation: Ablation) -> List[str]:
    return (list(ablation.run_gin_params) +
            [f"LEARNING_RATE = {ablation.learning_rate!r}",
             f"Trainer.seed = {self.seed}",
             f"MovingWindow.seed = {self.seed}"] +
            list(ablation.variants[self.variant]))

  def spec(self, ablation: Ablation) -> Dict[str, List[str]]:
    """What the run trains with; recorded as run.json beside its results."""
    return {"gin_files": self.gin_files(ablation),
            "gin_params": self.gin_params(ablation)}

  def settings(self, ablation: Ablation) -> Dict[str, object]:
    """The run's setting, as runs.csv lists it after the run's name."""
    return {"variant": self.variant, "model": ablation.model_label,
            "method": ablation.method,
            "learning_rate": ablation.learning_rate, "seed": self.seed}


def load_ablation(gin_files: Sequence[str],
                  gin_params: Sequence[str]) -> Ablation:
  """Parses ablation gin files (paths relative to the repository root work
  from anywhere) and checks that every gin file a run needs exists."""
  gin_files_lib.parse_gin(gin_files, gin_params)
  ablation = Ablation()
  needed = [("Ablation.model", ablation.model)]
  needed += [("Ablation.base_gin_files", p) for p in ablation.base_gin_files]
  needed += [("Ablation.run_gin_files", p) for p in ablation.run_gin_files]
  needed += [(f"method {ablation.method!r}",
              f"configs/optimizers/{ablation.method}.gin")]
  for what, path in needed:
    if not os.path.isfile(os.path.join(REPO, path)):
      raise FileNotFoundError(f"Ablation {ablation.name!r}: {what}: gin file "
                              f"not found: {path}")
  return ablation
