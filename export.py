"""Exports a run's checkpoint as a SavedModel for serving.

  python export.py --model_dir=/tmp/run --export_dir=/tmp/ranker
  python export.py --model_dir=/tmp/run --checkpoint=200 --export_dir=/tmp/r200

Rebuilds the run's model from its operative_config.gin (or --gin_file),
restores the weights of the newest intact checkpoint (or --checkpoint: a
step number, a name ckpt-N or a checkpoint path) and writes a SavedModel with two
signatures: "serving_default" (one tensor per feature) and "examples"
(serialized tf.Example protos); see ranking/export.py. The export is
written beside --export_dir and renamed into place; an existing directory
there is replaced only if it is an older export. Nothing in --model_dir
changes. `train.py --export_dir=DIR` does the same at the end of training.
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
  quiet.import_tensorflow()
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags

  from ranking import export
  from ranking import integrity
  from ranking import launch

flags.DEFINE_string("model_dir", None, "Directory of the run.")
flags.DEFINE_string("export_dir", None, "Where the SavedModel goes.")
flags.DEFINE_string("checkpoint", None, "A step number, a checkpoint name "
                    "(ckpt-N) or a path (default: the newest intact "
                    "checkpoint).")
flags.DEFINE_multi_string("gin_file", [], "Gin files (default: the run's "
                          "operative_config.gin).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_bool("allow_gin_imports", False, "Let the operative_config.gin "
                  "read from --model_dir import modules / include files.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet.quiet_python_logging(FLAGS["verbosity"])
  gin_files = launch.run_gin_files(FLAGS.model_dir, FLAGS.gin_file,
                                   FLAGS.allow_gin_imports)
  launch.parse_gin(gin_files, FLAGS.gin_param)
  # The run's data source gives the schema the model was built for.
  model = export.fresh_model(launch.build_source())
  checkpoints_dir = os.path.join(FLAGS.model_dir, "checkpoints")
  path = launch.checkpoint_path(FLAGS.model_dir, FLAGS.checkpoint)
  if path:
    try:
      export.read_weights(path, model)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(integrity.unrestorable(path, e)) from e
  else:
    path = integrity.restore_newest_intact(
        lambda p: export.read_weights(p, model), checkpoints_dir,
        lambda line: print(line, flush=True), repair=False)
    if path is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoints_dir}.")
  written = export.export_saved_model(model, FLAGS.export_dir)
  print(f"exported {path} to {written} (signatures: "
        f"{', '.join(export.SIGNATURES)})", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_dir", "export_dir"])
  app.run(main)
