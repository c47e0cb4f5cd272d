"""Export: a SavedModel that maps features to every task's prediction
(probabilities for binary tasks, values for regression tasks).

Two signatures, for TF Serving's usual clients:

  serving_default   one tensor per feature (Predict with raw tensors):
                    serve(user_id=[...], item_tags=[[...]], user_dense=...)
  examples          serialized tf.Example protos (Predict with
                    "examples", as estimator-era clients send them):
                    serve(examples=tf.constant([example.SerializeToString()]))

Both return {task: [batch]}. Raw features are what a source's batches hold:
ids in [0, vocab_size) (multi-valued ones padded with -1) and normalised
dense columns. In a tf.Example an id feature is an int64_list (a
multi-valued one of any length: cut or padded with -1 to max_len) and a
dense feature a float_list of its dim values; a missing feature is an error
that names it.

  python export.py --model_dir=RUN --export_dir=DIR [--checkpoint=N]
"""

import os
import shutil

import tensorflow as tf

from ranking.model import build_model
from ranking.stability import state_is_finite

SIGNATURES = ("serving_default", "examples")


def _feature_specs(schema):
  specs = {}
  for f in schema.categorical:
    shape = [None, f.max_len] if f.multivalent else [None]
    specs[f.name] = tf.TensorSpec(shape, tf.int64, name=f.name)
  for f in schema.dense:
    specs[f.name] = tf.TensorSpec([None, f.dim], tf.float32, name=f.name)
  return specs


def serving_signature(model) -> tf.types.experimental.ConcreteFunction:
  """The model's predictions as a function of its schema's features."""

  @tf.function(input_signature=[_feature_specs(model.schema)])
  def serve(features):
    return model.predict_tasks(features)

  return serve.get_concrete_function()


def parse_examples(schema, serialized: tf.Tensor) -> dict:
  """Serialized tf.Examples -> the features a source's batch holds."""
  spec = {}
  for f in schema.categorical:
    spec[f.name] = (tf.io.VarLenFeature(tf.int64) if f.multivalent
                    else tf.io.FixedLenFeature([], tf.int64))
  for f in schema.dense:
    spec[f.name] = tf.io.FixedLenFeature([f.dim], tf.float32)
  parsed = tf.io.parse_example(serialized, spec)
  for f in schema.categorical:
    if f.multivalent:
      ids = tf.sparse.to_dense(parsed[f.name], default_value=-1)[:, :f.max_len]
      pad = f.max_len - tf.shape(ids)[1]
      parsed[f.name] = tf.pad(ids, [[0, 0], [0, pad]], constant_values=-1)
  return parsed


def example_signature(model) -> tf.types.experimental.ConcreteFunction:
  """The model's predictions as a function of serialized tf.Examples."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name="examples")])
  def serve(examples):
    return model.predict_tasks(parse_examples(model.schema, examples))

  return serve.get_concrete_function()


def check_export_dir(path: str) -> str:
  """`path`, absolute, if an export may be written there: it does not
  exist, is empty, or holds an older export.

  Raises:
    ValueError: it exists and is something else (a run directory, say),
      which an export would replace; or a folder on its way is a file.
    PermissionError: the folder it would be made in is not writable.
  """
  path = os.path.abspath(path)
  # The nearest folder that exists: the export (and its temporary folder
  # beside it) is made there, so a run with --export_dir learns of a bad
  # path before it trains, not after.
  folder = os.path.dirname(path)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"export_dir {path}: {folder} is a file, not a "
                     "folder.")
  if not os.access(folder, os.W_OK | os.X_OK):
    raise PermissionError(f"export_dir {path}: {folder} is not writable.")
  if os.path.exists(path) and not (
      os.path.isfile(os.path.join(path, "saved_model.pb")) or
      (os.path.isdir(path) and not os.listdir(path))):
    raise ValueError(f"export_dir {path} exists and is not a SavedModel; "
                     "not replacing it (give a new or an older export's "
                     "directory).")
  return path


def export_saved_model(model, path: str) -> str:
  """Writes the SavedModel to `path` (replacing an older export); returns
  the path.

  Written to a temporary folder beside `path` and renamed, so a failed export
  leaves no half-written model.

  Raises:
    ValueError: `path` exists and is not a SavedModel (a run directory, say):
      it is not replaced.
  """
  path = check_export_dir(path)
  tmp = f"{path}.tmp-export"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    tf.saved_model.save(model, tmp, signatures={
        "serving_default": serving_signature(model),
        "examples": example_signature(model)})
  except Exception:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
  return path


def read_weights(path: str, model, **extra):
  """Restores `model`'s weights (and `extra` trackables, e.g. the step)
  from a training checkpoint, skipping the optimizers' slots.

  Raises:
    AssertionError / tf.errors: a weight of the model is not in it (a head
      the run never trained would be random).
    ValueError: it holds non-finite weights.
  """
  tf.train.Checkpoint(model=model, **extra).read(
      path).expect_partial().assert_existing_objects_matched()
  if not bool(state_is_finite(model.variables)):
    raise ValueError("it holds non-finite weights")


def fresh_model(source):
  """The gin-configured model of `source`'s schema, built as the trainer
  builds it but outside any distribution strategy (a SavedModel holds plain
  variables)."""
  model = build_model(source.schema)
  model(source.rows(tf.range(2)))
  return model


def export_checkpoint(source, checkpoint: str, export_dir: str) -> str:
  """Exports the weights of a training checkpoint as a SavedModel.

  Args:
    source: the run's data source (the model drops the features gin tells
      it to).
    checkpoint: a checkpoint prefix (…/checkpoints/ckpt-N).
    export_dir: where the SavedModel goes.
  """
  model = fresh_model(source)
  read_weights(checkpoint, model)
  return export_saved_model(model, export_dir)


def export_finished_run(trainer, summary, export_dir: str) -> str:
  """train.py --export_dir: exports the run's last checkpoint; returns what
  was done.

  Raises:
    RuntimeError: the run diverged (its weights are not worth serving).
  """
  if summary.get("diverged"):
    raise RuntimeError(
        f"not exported: the run diverged at step "
        f"{summary.get('diverged_at_step')}; export an earlier checkpoint "
        f"with python export.py --model_dir={trainer.model_dir} "
        f"--checkpoint=STEP --export_dir={export_dir}")
  checkpoint = tf.train.latest_checkpoint(trainer.checkpoint_dir)
  written = export_checkpoint(trainer.window.source, checkpoint, export_dir)
  return f"exported {checkpoint} to {written}"
