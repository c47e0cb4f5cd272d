"""The trainer's speed switches change how it computes, not what: XLA,
mixed_bfloat16, diagnostics on the summary steps, and the phase clock."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from optim import ScaledAdagrad
from tests import strategies
from tests.runs import train

SHORT = ["Trainer.max_steps=30", "Trainer.summary_every_steps=20"]


def _weights(trainer):
  return [v.numpy() for v in trainer.model.variables]


def _records(model_dir, split):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _with_and_without_xla(tmp_path, make_strategy=None):
  """{jit_compile: the trainer} of the SHORT run in every mode (each run
  with a strategy of its own from make_strategy, or the default)."""
  runs = {}
  for jit in (False, "updates", True):
    kept = {}
    summary, _ = train(str(tmp_path / f"jit{jit}"), SHORT + [
        f"Trainer.jit_compile={jit!r}"],
                       trainer_hook=lambda t, kept=kept: kept.update(t=t),
                       strategy=make_strategy and make_strategy())
    assert summary["final_step"] == 30, summary
    runs[jit] = kept["t"]
  return runs


def _optimizers(trainer):
  return trainer.dense_optimizer, trainer.embedding_optimizer


def test_xla_trains_the_same_steps(tmp_path):
  runs = _with_and_without_xla(tmp_path)
  # "updates": the dense optimizer compiled one computation for all its
  # variables; the embeddings' sparse gradients are updated uncompiled.
  dense, embedding = _optimizers(runs["updates"])
  assert dense.fused_update and embedding.fused_update
  assert list(dense._fused.steps) == [tuple(  # pylint: disable=protected-access
      dense._var_key(v) for v in runs["updates"].model.dense_variables)]  # pylint: disable=protected-access
  assert not embedding._fused.steps  # pylint: disable=protected-access
  for jit in (False, True):
    assert not any(o.fused_update or o._fused.steps  # pylint: disable=protected-access
                   for o in _optimizers(runs[jit]))
  # XLA fuses and reorders float32 arithmetic: the same run to rounding.
  plain = _records(str(tmp_path / "jitFalse"), "train")
  for jit in ("updates", True):
    for want, got in zip(_weights(runs[False]), _weights(runs[jit])):
      np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
    xla = _records(str(tmp_path / f"jit{jit}"), "train")
    np.testing.assert_allclose([r["loss/total"] for r in xla],
                               [r["loss/total"] for r in plain], rtol=1e-4)


def test_xla_on_two_replicas_compiles_the_gradients_only(tmp_path):
  # The updates' cross-replica sums cannot be inside an XLA cluster: the
  # gradients are compiled, and the run equals the uncompiled one.
  runs = _with_and_without_xla(tmp_path, strategies.two_cpu_replicas)
  # Mirrored variables have a copy per replica: "updates" leaves them to
  # tf-keras's per-variable updates.
  assert runs[True]._compiled_gradients is not None  # pylint: disable=protected-access
  for jit in (False, "updates"):
    assert runs[jit]._compiled_gradients is None  # pylint: disable=protected-access
  assert not any(o._fused.steps for o in _optimizers(runs["updates"]))  # pylint: disable=protected-access
  for jit in ("updates", True):
    for plain, xla in zip(_weights(runs[False]), _weights(runs[jit])):
      np.testing.assert_allclose(xla, plain, rtol=2e-3, atol=2e-4)


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_state(
    tmp_path):
  kept = {}
  summary, _ = train(str(tmp_path / "run"), SHORT + [
      "Trainer.precision='mixed_bfloat16'"],
                     trainer_hook=lambda t: kept.update(t=t))
  trainer = kept["t"]
  assert summary["final_step"] == 30 and not summary["diverged"], summary
  assert all(np.isfinite(v) for v in summary["final_metrics"].values())
  dense = [l for l in trainer.model.submodules
           if isinstance(l, tf.keras.layers.Dense)]
  hidden = [l for l in dense if not l.name.startswith("logit_")]
  assert hidden and all(l.compute_dtype == "bfloat16" for l in hidden)
  assert all(l.compute_dtype == "float32" for l in dense
             if l.name.startswith("logit_"))
  # Weights, optimizer slots and diagnostics stay float32.
  assert {v.dtype for v in trainer.model.variables} == {tf.float32}
  assert {v.dtype for v in trainer.dense_optimizer.variables
          if v.dtype.is_floating} == {tf.float32}
  # The global policy is left as it was: following floatx.
  tf.keras.backend.set_floatx("float64")
  try:
    assert tf.keras.mixed_precision.global_policy().name == "float64"
  finally:
    tf.keras.backend.set_floatx("float32")


def test_norms_on_summary_steps_and_sigma_alone_off_them(tmp_path):
  summary, _ = train(str(tmp_path / "run"), SHORT)
  assert summary["final_step"] == 30
  records = {r["step"]: r for r in _records(str(tmp_path / "run"), "train")}
  assert sorted(records) == [20, 30]
  norms = [k for k in records[20] if k.endswith("/grad_norm")]
  assert norms and all(records[20][k] > 0 for k in norms)
  # Step 30 ends the run off the cadence: its norms would be step 20's.
  assert not [k for k in records[30] if k.endswith("/grad_norm")]
  assert len([k for k in records[30] if k.endswith("/sigma")]) == len(norms)


def test_a_set_clock_decides_when_norms_are_refreshed():
  # The trainer's global step (moved ahead by a rollback's skipped
  # batches) and not the optimizer's iterations decides.
  var = tf.Variable([3.0, -4.0])
  clock = tf.Variable(0, dtype=tf.int64)
  optimizer = ScaledAdagrad(0.1, diagnostics_every=5)
  optimizer.diagnostics_clock = clock
  got = []
  for step, before in enumerate((3, 4, 8, 9)):  # refreshes at 4 and 9
    clock.assign(before)
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]) * (step + 1), var)])
    got.append(float(optimizer.diagnostics()["Variable:0"]["grad_norm"]))
  np.testing.assert_allclose(got, [0.0, 2 * 2**0.5, 2 * 2**0.5, 4 * 2**0.5],
                             rtol=1e-6)


def test_the_phase_clock_covers_the_run(tmp_path):
  kept = {}
  train(str(tmp_path / "run"), SHORT, trainer_hook=lambda t: kept.update(t=t))
  seconds = kept["t"].seconds
  assert set(seconds) == {"setup", "first_loop", "train", "eval",
                          "checkpoint", "summaries"}
  assert all(v > 0 for v in seconds.values()), seconds


@pytest.mark.parametrize("value", ["1", "'update'", "None"])
def test_an_unknown_xla_mode_is_named(tmp_path, value):
  # 1 == True in Python, but a 1 is not a mode: nothing is compiled for it.
  with pytest.raises(ValueError, match="Trainer.jit_compile must be one of"):
    train(str(tmp_path / "run"), [f"Trainer.jit_compile={value}"])
