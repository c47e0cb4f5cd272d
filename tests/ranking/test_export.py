"""Export: the SavedModel's two signatures, and the round trip from a
trained run (train.py --export_dir, export.py) into a fresh process whose
predictions equal the trainer's evaluation."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import SyntheticStream
from ranking import export, integrity, launch
from ranking.export import export_saved_model, serving_signature
from ranking.model import build_model
from tests.runs import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def to_example(schema, features, i) -> bytes:
  """Row i as a client would send it: a multi-valued id feature holds only
  its ids (no -1 padding), so the signature must pad it back."""
  feature = {}
  for f in schema.categorical:
    ids = np.atleast_1d(features[f.name][i])
    feature[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(x) for x in ids if x >= 0]))
  for f in schema.dense:
    feature[f.name] = tf.train.Feature(float_list=tf.train.FloatList(
        value=np.asarray(features[f.name][i]).tolist()))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def test_reloaded_model_gives_identical_predictions(tmp_path):
  stream = SyntheticStream(num_days=2, examples_per_day=64)
  batch = stream.rows(tf.range(32))
  model = build_model(stream.schema, embedding_dim=4, bottom_widths=(16, 8),
                      cross_layers=1, bottom="mmoe", num_experts=2)
  features = {k: batch[k].numpy() for k in stream.schema.feature_names}
  assert any(f.multivalent for f in stream.schema.categorical)
  before = serving_signature(model)(features)
  path = export_saved_model(model, str(tmp_path / "ranker"))
  assert not os.path.exists(path + ".tmp-export")
  loaded = tf.saved_model.load(path)
  assert set(loaded.signatures) == set(export.SIGNATURES)
  after = loaded.signatures["serving_default"](**features)
  assert set(after) == set(stream.schema.label_names)
  serialized = [to_example(stream.schema, features, i) for i in range(32)]
  from_examples = loaded.signatures["examples"](
      examples=tf.constant(serialized))
  for task in before:
    np.testing.assert_array_equal(after[task].numpy(), before[task].numpy())
    np.testing.assert_array_equal(from_examples[task].numpy(),
                                  before[task].numpy())
  # Binary tasks are probabilities, regression tasks values.
  assert np.all((after["click"].numpy() > 0) & (after["click"].numpy() < 1))
  eager = model.predict_tasks(batch)
  np.testing.assert_allclose(eager["rating"], after["rating"], rtol=1e-5,
                             atol=1e-6)
  # A tf.Example without a feature is refused, naming it.
  partial = tf.train.Example()
  partial.ParseFromString(serialized[0])
  del partial.features.feature["user_id"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="user_id"):
    loaded.signatures["examples"](
        examples=tf.constant([partial.SerializeToString()]))


def test_an_export_never_replaces_what_is_not_an_export(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "summary.json").write_text("{}")
  with pytest.raises(ValueError, match="exists and is not a SavedModel"):
    export.check_export_dir(str(run))
  assert (run / "summary.json").exists()
  (tmp_path / "empty").mkdir()
  assert export.check_export_dir(str(tmp_path / "empty")).endswith("empty")


def test_an_export_dir_that_cannot_be_made_is_refused_up_front(
    tmp_path, monkeypatch):
  # train.py --export_dir checks it before training: these used to fail
  # with TensorFlow's error after the whole run.
  (tmp_path / "afile").write_text("")
  with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
    export.check_export_dir(str(tmp_path / "afile" / "sub" / "export"))
  deep = tmp_path / "a" / "b" / "export"
  assert export.check_export_dir(str(deep)) == str(deep)
  # Root may write anywhere, so the permission is what os.access says.
  monkeypatch.setattr(export.os, "access",
                      lambda p, mode: p != str(tmp_path))
  with pytest.raises(PermissionError, match=f"{tmp_path} is not writable"):
    export.check_export_dir(str(deep))


class _Diverged:
  model_dir = "/runs/r"


def test_a_diverged_run_is_not_exported():
  with pytest.raises(RuntimeError, match="diverged at step 7.*--checkpoint"):
    export.export_finished_run(_Diverged(), {"diverged": True,
                                             "diverged_at_step": 7}, "/x")


# A fresh process: loads both exports, serves the held-out day through both
# signatures, writes the predictions.
SERVE = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
inputs = np.load(sys.argv[1], allow_pickle=False)
out = {}
for name in sys.argv[3:]:
  loaded = tf.saved_model.load(name)
  raw = loaded.signatures["serving_default"](**{
      k[len("f/"):]: tf.constant(inputs[k]) for k in inputs.files
      if k.startswith("f/")})
  serialized = list(tf.data.TFRecordDataset(sys.argv[1] + ".tfrecord"))
  ex = loaded.signatures["examples"](examples=tf.stack(serialized))
  for task in raw:
    out[f"{os.path.basename(name)}/raw/{task}"] = raw[task].numpy()
    out[f"{os.path.basename(name)}/examples/{task}"] = ex[task].numpy()
np.savez(sys.argv[2], **out)
"""


def test_export_round_trip_in_a_fresh_process(tmp_path):
  run = str(tmp_path / "run")
  at_end, at_40 = str(tmp_path / "at_end"), str(tmp_path / "at_40")
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  trained = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={run}",
       f"--export_dir={at_end}", "--gin_param=Trainer.max_steps=40"] +
      [f"--gin_file={f}" for f in TINY],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert f"exported {run}/checkpoints/ckpt-40 to {at_end}" in trained.stdout
  exported = subprocess.run(
      [sys.executable, os.path.join(ROOT, "export.py"), f"--model_dir={run}",
       "--checkpoint=40", f"--export_dir={at_40}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert "signatures: serving_default, examples" in exported.stdout

  # The trainer's evaluation of the same checkpoint, as eval.py builds it.
  with open(os.path.join(run, "summary.json")) as f:
    summary = json.load(f)
  gin.clear_config()
  try:
    trainer = launch.build_trainer(
        [launch.run_config(run, allow_imports=False)], [], run)
    export.read_weights(os.path.join(run, "checkpoints", "ckpt-40"),
                        trainer.model)
    results = trainer.evaluator.evaluate(trainer.eval_dataset)
    assert results == summary["final_metrics"]  # the final weights
    schema = trainer.model.schema
    features, labels, predicted = {}, {}, {}
    for batch in trainer.eval_dataset:
      outputs = trainer.model(batch, training=False)
      for name in schema.feature_names:
        features.setdefault(name, []).append(batch[name].numpy())
      for task in trainer.model.tasks:
        labels.setdefault(task.name, []).append(batch[task.name].numpy())
        predicted.setdefault(task.name, []).append(
            task.prediction(outputs[task.name]).numpy())
    tasks = trainer.model.tasks
  finally:
    gin.clear_config()
  features = {k: np.concatenate(v) for k, v in features.items()}
  serialized = [to_example(schema, features, i)
                for i in range(len(features["user_id"]))]
  inputs = str(tmp_path / "inputs.npz")
  np.savez(inputs, **{f"f/{k}": v for k, v in features.items()})
  with tf.io.TFRecordWriter(inputs + ".tfrecord") as writer:
    for record in serialized:
      writer.write(record)
  outputs = str(tmp_path / "outputs.npz")
  served = subprocess.run(
      [sys.executable, "-c", SERVE, inputs, outputs, at_end, at_40],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert served.returncode == 0, served.stderr[-3000:]
  served = np.load(outputs)
  for task in tasks:
    expected = np.concatenate(predicted[task.name])
    for export_name in ("at_end", "at_40"):
      for signature in ("raw", "examples"):
        got = served[f"{export_name}/{signature}/{task.name}"]
        # The same weights and graph; the served batch's shape differs from
        # the evaluation's, so oneDNN may block the matmuls differently:
        # a few float32 ulps (seen: 2 ulps of 17.5 on an AVX2 CPU).
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # And the trainer's metric over the served predictions is its result.
    metric = task.make_metric()
    metric.update_state(np.concatenate(labels[task.name]),
                        served[f"at_end/examples/{task.name}"])
    key = f"{task.name}/{task.metric_name}"
    assert abs(float(metric.result()) - summary["final_metrics"][key]) <= 1e-6


def test_checkpoint_flag_takes_a_step_a_name_or_a_path(tmp_path,
                                                       monkeypatch):
  # eval.py's and export.py's --checkpoint: '120' and 'ckpt-120' are the
  # run's own ckpt-120 (eval.py crashed on a bare name, listing '').
  checkpoints = tmp_path / "run" / "checkpoints"
  checkpoints.mkdir(parents=True)
  for suffix in ("index", "data-00000-of-00001"):
    (checkpoints / f"ckpt-120.{suffix}").write_text("")
  run, expected = str(tmp_path / "run"), str(checkpoints / "ckpt-120")
  monkeypatch.chdir(tmp_path)
  assert launch.checkpoint_path(run, "120") == expected
  assert launch.checkpoint_path(run, "ckpt-120") == expected
  assert launch.checkpoint_path(run, expected) == expected
  assert launch.checkpoint_path(run, None) is None
  # A checkpoint of that name in the working directory is that one.
  (tmp_path / "ckpt-120.index").write_text("")
  assert integrity.checkpoint_files("ckpt-120") == ["ckpt-120.index"]
  assert launch.checkpoint_path(run, "ckpt-120") == "ckpt-120"
