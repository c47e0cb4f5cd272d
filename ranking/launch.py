"""What train.py and eval.py share: gin setup, checks before any work, and
the final report."""

import os
import shutil
from typing import Dict

import gin
from gin import config_parser

# Registers every configurable a gin file may bind.
import data.faults  # pylint: disable=unused-import
import data.files  # pylint: disable=unused-import
import data.kuairand  # pylint: disable=unused-import
import data.movielens  # pylint: disable=unused-import
import data.on_disk  # pylint: disable=unused-import
import data.synthetic  # pylint: disable=unused-import
import optim  # pylint: disable=unused-import
from ranking import integrity
from ranking import roles
from ranking import trainer as trainer_lib
from ranking.distribution import make_strategy
from ranking.gin_files import gin_statements
from ranking.gin_files import parse_gin  # pylint: disable=unused-import


def prepare_model_dir(model_dir: str):
  """Creates model_dir; fails before any work if it cannot be written."""
  if not model_dir:
    raise ValueError("--model_dir is required.")
  if "://" in model_dir:
    raise ValueError(f"--model_dir {model_dir}: the run's files (lock, "
                     "checkpoints, atomic renames) need a POSIX path; mount "
                     "the bucket (e.g. with gcsfuse) and give its local path.")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"Cannot create model_dir {model_dir}: {e}") from e
  if not os.access(model_dir, os.W_OK | os.X_OK):
    raise PermissionError(f"model_dir {model_dir} is not writable.")


def checkpoint_path(model_dir: str, checkpoint: str) -> str:
  """--checkpoint of eval.py and export.py as a checkpoint prefix: a step N
  is model_dir/checkpoints/ckpt-N, and so is a bare name ckpt-N that is not
  a checkpoint in the working directory; a path (or None) stays as given."""
  if not checkpoint:
    return checkpoint
  if checkpoint.isdigit():
    return os.path.join(model_dir, "checkpoints", f"ckpt-{int(checkpoint)}")
  if (not os.path.dirname(checkpoint) and not integrity.checkpoint_files(
      checkpoint)):
    return os.path.join(model_dir, "checkpoints", checkpoint)
  return checkpoint


def build_source():
  """The run's data source as the parsed gin binds Trainer.source (e.g.
  @SyntheticStream()), built without the rest of the trainer (export.py
  needs only its schema)."""
  try:
    source = gin.query_parameter("Trainer.source")
  except ValueError as e:
    raise ValueError("The gin files bind no Trainer.source (the run's data, "
                     "e.g. @SyntheticStream()).") from e
  if isinstance(source, gin.config.ConfigurableReference):
    source = source.scoped_configurable_fn()
  return source


def build_trainer(gin_files, gin_params, model_dir) -> trainer_lib.Trainer:
  """Parses gin, checks model_dir, builds the trainer (data paths, model,
  optimizers): every configuration error surfaces here, before any work.
  A model_dir this call created is removed again if the build fails.
  Nothing is written into model_dir: Trainer.run() checks it (lock,
  recorded settings, checkpoints) and only then records the operative
  config, so a refused launch leaves the old one untouched."""
  parse_gin(gin_files, gin_params)
  # First, before the gin-built source runs any op: a multi-worker
  # strategy configures the collective ops at program startup.
  strategy = make_strategy()
  existed = bool(model_dir) and os.path.isdir(model_dir)
  prepare_model_dir(model_dir)
  try:
    return trainer_lib.Trainer(model_dir, strategy=strategy)
  except BaseException:
    if not existed and roles.role_of(strategy).chief:
      shutil.rmtree(model_dir, ignore_errors=True)
    raise



def final_table(summary: Dict, model_dir: str) -> str:
  """The run's next-day metrics per task, its verdict, and where to look."""
  metrics = summary.get("final_metrics") or {}
  lines = ["", f"Next-day metrics (day {summary['eval_day']}) after step "
           f"{summary['final_step']}:", "",
           "| task | metric | value |", "|---|---|---:|"]
  nonfinite = summary.get("nonfinite") or {}
  for key, value in metrics.items():
    task, metric = key.rsplit("/", 1)
    if metric in ("auc", "rmse"):
      shown = (f"{value:.4f}" if value is not None else
               nonfinite.get(f"final_metrics/{key}", "n/a"))
      lines.append(f"| {task} | {metric.upper()} | {shown} |")
  verdict = ("DIVERGED at step "
             f"{summary['diverged_at_step']} ({summary['divergence_reason']})"
             if summary["diverged"] else "did not diverge")
  recovery = summary.get("recovery") or {}
  healed = (f"; rollbacks: {recovery['rollbacks']} "
            f"({recovery['skipped_batches']} batches skipped)"
            if recovery.get("rollbacks") else "")
  lines += ["", f"The run {verdict}; micro-divergences: "
            f"{summary['micro_divergences']}{healed}.",
            f"Summary: {os.path.join(model_dir, 'summary.json')}",
            f"TensorBoard: tensorboard --logdir {model_dir}"]
  return "\n".join(lines)


def run_config(model_dir: str, allow_imports: bool) -> str:
  """The run's operative_config.gin, refused if it would import modules or
  include files (a model_dir may come from anyone)."""
  path = os.path.join(model_dir, integrity.OPERATIVE_CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No {path}; give the run's --gin_file(s).")
  try:
    with open(path) as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"Cannot read {path}: {e}") from e
  if not allow_imports:
    unsafe = [f"line {s.location.line_num}: "
              f"{s.location.line_content.strip()}"
              for s in gin_statements(text, path)
              if isinstance(s, (config_parser.ImportStatement,
                                config_parser.IncludeStatement))]
    if unsafe:
      raise ValueError(f"{path} imports modules or includes files, which "
                       "would run code from the model_dir: "
                       + "; ".join(unsafe) +
                       ". Check them and pass --allow_gin_imports, or give "
                       "--gin_file.")
  return path


def run_gin_files(model_dir: str, gin_files, allow_imports: bool):
  """What eval.py and export.py build a run's model from: the --gin_file(s)
  given, or the run's own operative_config.gin (see run_config).

  Raises:
    FileNotFoundError: model_dir is missing (or not a directory).
  """
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"--model_dir {model_dir} " + (
        "is not a directory." if os.path.exists(model_dir)
        else "does not exist."))
  return list(gin_files) or [run_config(model_dir, allow_imports)]


# The trainer's phases (Trainer.seconds), in the order a job runs them.
PHASES = (("setup", "setup"), ("first_loop", "first loop (tracing)"),
          ("train", "training"), ("eval", "evaluation"),
          ("checkpoint", "checkpoints"), ("summaries", "summaries"))


def time_line(seconds) -> str:
  """One line: the wall seconds of each phase of the job."""
  return "Time: " + ", ".join(f"{label} {seconds.get(key, 0.0):.1f} s"
                              for key, label in PHASES)
