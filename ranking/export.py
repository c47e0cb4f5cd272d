"""Export: a SavedModel whose serving signature maps raw features to every
task's prediction (probabilities for binary tasks, values for regression).

  export_saved_model(model, "/tmp/ranker")
  serve = tf.saved_model.load("/tmp/ranker").signatures["serving_default"]
  serve(user_id=..., item_tags=..., user_dense=..., ...)  # {task: [batch]}

Raw features are what a source's batches hold: ids in [0, vocab_size)
(multi-valued ones padded with -1) and normalised dense columns.
"""

import os
import shutil

import tensorflow as tf


def serving_signature(model) -> tf.types.experimental.ConcreteFunction:
  """The model's predictions as a function of its schema's features."""
  specs = {}
  for f in model.schema.categorical:
    shape = [None, f.max_len] if f.multivalent else [None]
    specs[f.name] = tf.TensorSpec(shape, tf.int64, name=f.name)
  for f in model.schema.dense:
    specs[f.name] = tf.TensorSpec([None, f.dim], tf.float32, name=f.name)

  @tf.function(input_signature=[specs])
  def serve(features):
    return model.predict_tasks(features)

  return serve.get_concrete_function()


def export_saved_model(model, path: str) -> str:
  """Writes the SavedModel to `path` (replacing it); returns the path.

  Written to a temporary folder beside `path` and renamed, so a failed export
  leaves no half-written model.
  """
  tmp = f"{path}.tmp-export"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    tf.saved_model.save(model, tmp,
                        signatures={"serving_default": serving_signature(model)})
  except Exception:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
  return path
