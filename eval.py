"""Evaluates a run's checkpoints on its held-out day (next-day AUC / RMSE).

  python eval.py --model_dir=/tmp/run                    # the latest checkpoint
  python eval.py --model_dir=/tmp/run --checkpoint=200    # step 200's (or ckpt-200, or a path)
  python eval.py --model_dir=/tmp/run --watch            # a sidecar evaluator

Reads the run's operative_config.gin unless --gin_file is given; a config
read from model_dir may not import modules or include files (gin `import`
and `include` lines run code or read other files) unless
--allow_gin_imports is given. The latest checkpoint is the newest intact
one: a corrupt newer checkpoint is reported and skipped. Results go
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

from ranking import collector  # pylint: disable=g-import-not-at-top
from ranking import quiet  # pylint: disable=g-import-not-at-top

collector.freeze_at_exit()
with collector.long_lived():  # TensorFlow's modules are never garbage
  tf = quiet.import_tensorflow()
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags

  from ranking import integrity
  from ranking import export
  from ranking import launch
  from ranking.evaluation import headline

flags.DEFINE_string("model_dir", None, "Directory of the run.")
flags.DEFINE_multi_string("gin_file", [], "Gin files (default: the run's "
                          "operative_config.gin).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_string("checkpoint", None, "A step number, a checkpoint name "
                    "(ckpt-N) or a path (default: the newest intact "
                    "checkpoint).")
flags.DEFINE_bool("watch", False, "Evaluate every new checkpoint.")
flags.DEFINE_integer("timeout", 600, "With --watch: seconds to wait for a "
                     "new checkpoint before stopping.")
flags.DEFINE_bool("allow_gin_imports", False, "Let the operative_config.gin "
                  "read from --model_dir import modules / include files.")
FLAGS = flags.FLAGS
SPLIT = "eval_sidecar"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet.quiet_python_logging(FLAGS["verbosity"])
  gin_files = launch.run_gin_files(FLAGS.model_dir, FLAGS.gin_file,
                                   FLAGS.allow_gin_imports)
  trainer = launch.build_trainer(gin_files, FLAGS.gin_param, FLAGS.model_dir)
  checkpoints_dir = os.path.join(FLAGS.model_dir, "checkpoints")
  # The weights and the step only: the optimizers' slots (as large as the
  # model, twice for Adam) are not needed to evaluate.
  def restore(path):
    export.read_weights(path, trainer.model, step=trainer.global_step)

  def log(line):
    print(line, flush=True)

  if FLAGS.checkpoint:
    paths = [launch.checkpoint_path(FLAGS.model_dir, FLAGS.checkpoint)]
  elif FLAGS.watch:
    paths = tf.train.checkpoints_iterator(checkpoints_dir,
                                          timeout=FLAGS.timeout)
  else:
    latest = integrity.restore_newest_intact(restore, checkpoints_dir, log,
                                             repair=False)
    if latest is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoints_dir}.")
    paths = [latest]
  for path in paths:
    try:
      restore(path)
    except Exception as e:  # pylint: disable=broad-except
      message = integrity.unrestorable(path, e)
      if not FLAGS.watch:
        raise ValueError(message) from e
      log(f"skipping {message}")
      continue
    step = int(trainer.global_step.numpy())
    results = trainer.evaluator.evaluate(trainer.eval_dataset)
    trainer.writer.write(SPLIT, step, results)
    trainer.writer.flush()
    log(f"{os.path.basename(path)} (step {step}): {headline(results)}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
