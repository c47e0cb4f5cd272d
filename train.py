"""Trains a multitask ranking model with the paper's sequential protocol.

  python train.py --gin_file=configs/large_dcn_clippy.gin --model_dir=/tmp/run
  python train.py --gin_file=configs/large_dcn_clippy.gin \
      --gin_file=configs/small_machine.gin --gin_param='Trainer.max_steps=100'

Writes into --model_dir: checkpoints/, train/ and eval/ TensorBoard logs
(with a custom-scalars layout), metrics.jsonl, operative_config.gin and,
once the run has ended, summary.json. With --export_dir the last
checkpoint is then exported there as a SavedModel (as export.py does; a
diverged run is not exported and the status is 1). Rerunning with the
same --model_dir resumes from the newest intact checkpoint, if the
settings that change the training are the ones the run started with (bind
Trainer.allow_config_change=True to override).
One run per model_dir at a time (model_dir/.train.lock). SIGTERM saves a
checkpoint at the current step and exits with status 0 and no summary.json;
rerun the same command to resume.
"""

import os
import signal
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ranking import collector  # pylint: disable=g-import-not-at-top
from ranking import quiet  # pylint: disable=g-import-not-at-top

collector.freeze_at_exit()
with collector.long_lived():  # TensorFlow's modules are never garbage
  quiet.import_tensorflow()
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags

  from ranking import export
  from ranking import launch
  from ranking.trainer import Preempted

flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_string("model_dir", None, "Directory of the run (created).")
flags.DEFINE_string("export_dir", None, "Export the last checkpoint there as "
                    "a SavedModel when training ends (see export.py).")
FLAGS = flags.FLAGS


STOPPED_WHILE_BUILDING = ("train.py: stopped by SIGTERM outside the training "
                          "loop (nothing to checkpoint); rerun the same "
                          "command")
_sigterm_while_building = []


def _stopped_while_building(signum, frame):  # pylint: disable=unused-argument
  _sigterm_while_building.append(signum)
  raise SystemExit(STOPPED_WHILE_BUILDING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet.quiet_python_logging(FLAGS["verbosity"])
  # Until Trainer.run() takes SIGTERM over (checkpoint, then stop): exit
  # through Python, so a model_dir this launch created is removed again.
  if FLAGS.export_dir:  # before hours of training, not after
    export.check_export_dir(FLAGS.export_dir)
  signal.signal(signal.SIGTERM, _stopped_while_building)
  try:
    with collector.long_lived():  # the trainer lives as long as the run
      trainer = launch.build_trainer(FLAGS.gin_file, FLAGS.gin_param,
                                     FLAGS.model_dir)
  except BaseException as e:  # pylint: disable=broad-except
    # The SystemExit can surface as another error when the signal lands in
    # a callback from TensorFlow's C++ (seen as a bare TypeError).
    if _sigterm_while_building and not isinstance(e, SystemExit):
      raise SystemExit(STOPPED_WHILE_BUILDING) from e
    raise
  try:
    summary = trainer.run()
  except Preempted as e:
    print(e, flush=True)
    return 0
  print(launch.final_table(summary, FLAGS.model_dir))
  print(launch.time_line(trainer.seconds), flush=True)
  if FLAGS.export_dir and trainer.role.chief:
    try:
      print(export.export_finished_run(trainer, summary, FLAGS.export_dir),
            flush=True)
    except RuntimeError as e:  # asked for, not done: say so in the status
      sys.exit(f"train.py: {e}")
  # A diverged run is a result (summary.json says so), not a failure.
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
