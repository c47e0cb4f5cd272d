"""The newer rules (AdaGC, ZClip, SPAM, StableAdamW's update clipping) in
the Table 2 protocol: configs/table2_newer_mini.gin through the real runner
and report."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
METHODS = {"naive": "Naive", "adagc": "AdaGC", "zclip": "ZClip",
           "adam": "Adam", "spam": "SPAM (Adam)",
           "stable_adam": "StableAdamW-clip (Adam)"}
ADAM_RATE = 0.01  # Sweep.learning_rates of the config


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("newer"))
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.pop("PYTHONPATH", None)
  out = subprocess.run(
      [sys.executable, "-m", "sweeps",
       "--gin_file=configs/table2_newer_mini.gin",
       f"--gin_param=Sweep.runs_dir='{tmp}/runs'",
       f"--gin_param=Sweep.results_dir='{tmp}/results'"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return {"runs": os.path.join(tmp, "runs", "table2_newer_mini"),
          "results": os.path.join(tmp, "results", "table2_newer_mini"),
          "out": out.stdout}


def test_every_method_ran_at_both_rates_and_is_in_the_table(sweep):
  with open(os.path.join(sweep["results"], "runs.csv")) as f:
    rows = {r["run"]: r for r in csv.DictReader(f)}
  assert sorted(rows) == sorted(f"small-{m}-lr{k}x-s0" for m in METHODS
                                for k in (1, 2))
  with open(os.path.join(sweep["results"], "table2.md")) as f:
    table = f.read()
  for label in METHODS.values():
    assert f"| {label} |" in table
  assert "Methods with their own 1x dense rate: Adam 0.01" in table
  # An Adam method's dense rate is its own; embeddings keep Adagrad's.
  for k in (1, 2):
    row = rows[f"small-spam-lr{k}x-s0"]
    assert float(row["learning_rate"]) == ADAM_RATE * k
    with open(os.path.join(sweep["runs"], f"small-spam-lr{k}x-s0",
                           "operative_config.gin")) as f:
      config = f.read()
    assert f"build_optimizer.learning_rate = {ADAM_RATE * k!r}" in config
    assert f"LEARNING_RATE = {float(k)!r}" in config
    assert "build_optimizer.method = 'spam'" in config
    assert "build_optimizer.spike_threshold = 5000.0" in config
    assert "SPIKE_WARMUP_STEPS = 10" in config


def test_adagc_state_is_in_the_checkpoint(sweep):
  # AdaGC keeps [gamma, steps] per dense variable in an optimizer slot: the
  # run's last checkpoint holds one per variable, each at step 40 with a
  # positive EMA of clipped norms.
  run = os.path.join(sweep["runs"], "small-adagc-lr1x-s0")
  with open(os.path.join(run, "summary.json")) as f:
    assert '"diverged": false' in f.read()
  prefix = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
  assert prefix.endswith("ckpt-40")
  reader = tf.train.load_checkpoint(prefix)
  names = [n for n, shape in tf.train.list_variables(prefix)
           if n.startswith("dense_optimizer/_variables/") and shape == [2]]
  kernels = [n for n, shape in tf.train.list_variables(prefix)
             if n.startswith("dense_optimizer/_scaled_variables/")]
  assert len(names) == len(kernels) > 0
  states = np.array([reader.get_tensor(n) for n in names])
  np.testing.assert_array_equal(states[:, 1], 40.0)
  assert (states[:, 0] > 0).all()
