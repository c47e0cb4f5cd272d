"""Training runs in the test process, for tests that drive a Trainer."""

import gin

from ranking import launch

TINY = ["configs/small_clippy.gin", "configs/tiny.gin"]


def train(model_dir, params=(), gin_files=TINY, trainer_hook=None,
          strategy=None):
  """Builds and runs a Trainer in this process; returns (summary, or the
  ValueError, RuntimeError or Preempted raised, log lines)."""
  from ranking.trainer import Preempted, Trainer  # pylint: disable=g-import-not-at-top
  lines = []
  gin.clear_config()
  try:
    launch.parse_gin(gin_files, list(params))
    launch.prepare_model_dir(model_dir)
    trainer = Trainer(model_dir, strategy=strategy, log=lines.append)
    if trainer_hook:
      trainer_hook(trainer)
    try:
      return trainer.run(), lines
    except (ValueError, RuntimeError, Preempted) as e:
      return e, lines
  finally:
    gin.clear_config()
