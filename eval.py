"""Evaluates a run's checkpoints on its held-out day (next-day AUC / RMSE).

  python eval.py --model_dir=/tmp/run                    # the latest checkpoint
  python eval.py --model_dir=/tmp/run --checkpoint=/tmp/run/checkpoints/ckpt-200
  python eval.py --model_dir=/tmp/run --watch            # a sidecar evaluator

Reads the run's operative_config.gin unless --gin_file is given. Results go
to TensorBoard under eval_sidecar/ and to metrics.jsonl (split
"eval_sidecar"). --watch evaluates each new checkpoint as training writes it
and stops after --timeout seconds without one; it only sees checkpoints that
training has finished writing (tf.train.checkpoints_iterator reads the
checkpoint state file, which is updated after the files are complete).
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

from ranking import launch
from ranking.evaluation import headline

flags.DEFINE_string("model_dir", None, "Directory of the run.")
flags.DEFINE_multi_string("gin_file", [], "Gin files (default: the run's "
                          "operative_config.gin).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_string("checkpoint", None, "A checkpoint path (default: the "
                    "latest).")
flags.DEFINE_bool("watch", False, "Evaluate every new checkpoint.")
flags.DEFINE_integer("timeout", 600, "With --watch: seconds to wait for a "
                     "new checkpoint before stopping.")
FLAGS = flags.FLAGS
SPLIT = "eval_sidecar"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  gin_files = FLAGS.gin_file or [
      os.path.join(FLAGS.model_dir, "operative_config.gin")]
  trainer = launch.build_trainer(gin_files, FLAGS.gin_param, FLAGS.model_dir)
  checkpoints_dir = os.path.join(FLAGS.model_dir, "checkpoints")
  if FLAGS.checkpoint:
    paths = [FLAGS.checkpoint]
  elif FLAGS.watch:
    paths = tf.train.checkpoints_iterator(checkpoints_dir,
                                          timeout=FLAGS.timeout)
  else:
    latest = tf.train.latest_checkpoint(checkpoints_dir)
    if latest is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoints_dir}.")
    paths = [latest]
  # The weights and the step only: the optimizers' slots (as large as the
  # model, twice for Adam) are not needed to evaluate.
  weights = tf.train.Checkpoint(model=trainer.model, step=trainer.global_step)
  for path in paths:
    weights.restore(path).expect_partial()
    step = int(trainer.global_step.numpy())
    results = trainer.evaluator.evaluate(trainer.eval_dataset)
    trainer.writer.write(SPLIT, step, results)
    trainer.writer.flush()
    print(f"{os.path.basename(path)} (step {step}): {headline(results)}",
          flush=True)


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
