"""What train.py and eval.py share: gin setup, checks before any work, and
the final report."""

import os
from typing import Dict

import gin

# Registers every configurable a gin file may bind.
import data.files  # pylint: disable=unused-import
import data.kuairand  # pylint: disable=unused-import
import data.movielens  # pylint: disable=unused-import
import data.synthetic  # pylint: disable=unused-import
import optim  # pylint: disable=unused-import
from ranking import trainer as trainer_lib
from ranking.gin_files import parse_gin  # pylint: disable=unused-import

def prepare_model_dir(model_dir: str):
  """Creates model_dir; fails before any work if it cannot be written."""
  if not model_dir:
    raise ValueError("--model_dir is required.")
  try:
    os.makedirs(model_dir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"Cannot create model_dir {model_dir}: {e}") from e
  if not os.access(model_dir, os.W_OK | os.X_OK):
    raise PermissionError(f"model_dir {model_dir} is not writable.")


def write_operative_config(model_dir: str):
  path = os.path.join(model_dir, "operative_config.gin")
  with open(path + ".tmp", "w") as f:
    f.write(gin.operative_config_str())
  os.replace(path + ".tmp", path)


def build_trainer(gin_files, gin_params, model_dir) -> trainer_lib.Trainer:
  """Parses gin, checks model_dir, builds the trainer (data paths, model,
  optimizers): every configuration error surfaces here, before any work."""
  parse_gin(gin_files, gin_params)
  prepare_model_dir(model_dir)
  return trainer_lib.Trainer(model_dir)


def configure(gin_files, gin_params, model_dir) -> trainer_lib.Trainer:
  """build_trainer, then records the operative config in model_dir (every
  configurable has been called by then, so it is complete before training,
  and eval.py can read it even if the run is killed)."""
  trainer = build_trainer(gin_files, gin_params, model_dir)
  write_operative_config(model_dir)
  return trainer


def final_table(summary: Dict, model_dir: str) -> str:
  """The run's next-day metrics per task, its verdict, and where to look."""
  metrics = summary.get("final_metrics") or {}
  lines = ["", f"Next-day metrics (day {summary['eval_day']}) after step "
           f"{summary['final_step']}:", "",
           "| task | metric | value |", "|---|---|---:|"]
  for key, value in metrics.items():
    task, metric = key.rsplit("/", 1)
    if metric in ("auc", "rmse"):
      lines.append(f"| {task} | {metric.upper()} | {value:.4f} |")
  verdict = ("DIVERGED at step "
             f"{summary['diverged_at_step']} ({summary['divergence_reason']})"
             if summary["diverged"] else "did not diverge")
  lines += ["", f"The run {verdict}; micro-divergences: "
            f"{summary['micro_divergences']}.",
            f"Summary: {os.path.join(model_dir, 'summary.json')}",
            f"TensorBoard: tensorboard --logdir {model_dir}"]
  return "\n".join(lines)
