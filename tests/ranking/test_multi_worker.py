"""train.py as two worker processes of one job (MultiWorkerMirroredStrategy
over TF_CONFIG on 127.0.0.1): the same weights as one process of the same
global batch, one copy of every output, and a job that resumes after a
preemption (SIGTERM) and after a worker is killed (SIGKILL); workers that
do not share model_dir are refused."""

import collections
import json
import os
import re
import signal

import numpy as np

from tests import cluster
from tests.runs import TINY, train

STEPS = ["Trainer.max_steps=80"]


def _records(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [(r["split"], r["step"]) for r in map(json.loads, f)]


def _event_file_pids(model_dir):
  pids = set()
  for split in ("train", "eval"):
    for name in os.listdir(os.path.join(model_dir, split)):
      # events.out.tfevents.<time>.<host>.<pid>.<n>.v2
      pids.add(int(re.match(r".*\.(\d+)\.\d+\.v2$", name).group(1)))
  return pids


def _outputs(model_dir):
  """Every file of a run but the TensorBoard logs (named by process)."""
  return sorted(os.path.relpath(os.path.join(d, n), model_dir)
                for d, _, names in os.walk(model_dir) for n in names
                if not n.startswith("events.out.tfevents"))


def test_two_workers_train_one_job_that_resumes(tmp_path):
  reference = str(tmp_path / "one_process")
  summary, _ = train(reference, STEPS)
  assert summary["final_step"] == 80

  job, scratch = str(tmp_path / "two_workers"), str(tmp_path / "scratch")
  os.makedirs(scratch)
  chiefs = []

  def launch(params):
    workers = cluster.train_workers(job, TINY, STEPS + params, 2, scratch)
    chiefs.append(workers[0].pid)
    return workers

  # 1. Worker 1 is preempted after step 60: both workers checkpoint step 60
  #    and stop (exit 0, no summary).
  preempted = launch(["Trainer.crash_at_step=60",
                      "Trainer.crash_signal='SIGTERM'",
                      "Trainer.crash_worker=1"])
  for worker in preempted:
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "preempted (SIGTERM) at step 60" in worker.stdout
  assert os.path.exists(os.path.join(job, "checkpoints", "ckpt-60.index"))
  assert not os.path.exists(os.path.join(job, "summary.json"))

  # 2. Worker 1 is killed after step 70: the chief sees its peer die and
  #    fails instead of waiting for it forever.
  killed = launch(["Trainer.crash_at_step=70", "Trainer.crash_worker=1"])
  assert killed[1].returncode == -signal.SIGKILL
  assert killed[0].returncode not in (0, None)
  assert "unhealthy" in killed[0].stderr or "Unavailable" in killed[0].stderr

  # 3. The same command again resumes both at the preemption's checkpoint.
  resumed = launch([])
  for worker in resumed:
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "ckpt-60 at step 60" in worker.stdout

  # The weights of one process of the same global batch, within 1e-5.
  one = cluster.checkpoint_weights(reference, 80)
  two = cluster.checkpoint_weights(job, 80)
  assert one.keys() == two.keys() and len(one) > 20
  for key in one:
    np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-5,
                               err_msg=key)
  with open(os.path.join(job, "summary.json")) as f:
    final = json.load(f)
  assert final["final_step"] == 80
  for key, value in summary["final_metrics"].items():
    assert abs(final["final_metrics"][key] - value) < 1e-4, key

  # One copy of every output: the files of one process's run; each metrics
  # record once; TensorBoard logs only from the chiefs; nothing left in the
  # other worker's temporary directory.
  assert _outputs(job) == _outputs(reference)
  counts = collections.Counter(_records(job))
  assert counts == collections.Counter(_records(reference))
  assert set(counts.values()) == {1}
  assert _event_file_pids(job) and _event_file_pids(job) <= set(chiefs)
  assert not [n for n in os.listdir(scratch) if n.startswith("ranking-")]

  # Workers that do not share model_dir would resume from different
  # checkpoints: refused by all of them, before any restore.
  apart = cluster.train_workers(job, TINY, STEPS, 2, scratch, model_dirs=[
      job, str(tmp_path / "elsewhere")])
  for worker in apart:
    assert worker.returncode not in (0, None)
    assert "workers see different checkpoints" in worker.stderr, (
        worker.stderr[-3000:])
  assert os.path.exists(os.path.join(job, "summary.json"))  # untouched
