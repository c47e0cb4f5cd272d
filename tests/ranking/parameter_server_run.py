"""Trains a config under ParameterServerStrategy on an in-process cluster.

  python tests/ranking/parameter_server_run.py MODEL_DIR NUM_WORKERS NUM_PS \
      [gin_param ...]

Starts NUM_WORKERS worker and NUM_PS parameter-server tf.distribute.Servers
in this process on free 127.0.0.1 ports, sets TF_CONFIG with this process
as the coordinator ("chief"), and trains tests/runs.TINY through the
trainer's own strategy choice (make_strategy, kind "auto"). Prints, as the
last line, JSON of what the test checks: the summary, the step, and where
every trainable variable lives. A separate process: servers cannot be shut
down within a process.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tests import cluster as tests_cluster  # pylint: disable=g-import-not-at-top
from tests import runs  # pylint: disable=g-import-not-at-top


def start_cluster(num_workers, num_ps):
  """In-process worker and PS servers; returns (servers, TF_CONFIG dict)."""
  cluster = tests_cluster.cluster(chief=1, worker=num_workers, ps=num_ps)
  # Servers in one process share its cores: with the default thread pool
  # (one thread per core, 2 here) the workers' steps deadlock (as TF's
  # tutorial warns for in-process clusters).
  config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=
                                    num_workers + num_ps + 1)
  servers = [tf.distribute.Server(tf.train.ClusterSpec(cluster),
                                  job_name=job, task_index=i,
                                  protocol="grpc", config=config, start=True)
             for job in ("worker", "ps") for i in range(len(cluster[job]))]
  return servers, {"cluster": cluster, "task": {"type": "chief", "index": 0}}


def _placement(variable):
  shards = getattr(variable, "variables", None)
  parts = list(shards) if shards is not None else [variable]
  return {"name": variable.name, "type": type(variable).__name__,
          "shape": variable.shape.as_list(),
          "devices": [p.device for p in parts]}


def main(model_dir, num_workers, num_ps, *params):
  servers, tf_config = start_cluster(int(num_workers), int(num_ps))
  os.environ["TF_CONFIG"] = json.dumps(tf_config)
  trainers = []
  summary, lines = runs.train(model_dir, params,
                              trainer_hook=trainers.append)
  if not isinstance(summary, dict):
    raise summary
  trainer = trainers[0]
  tables = trainer.model.feature_input.embeddings.values()
  report = {
      "strategy": type(trainer.strategy).__name__,
      "summary": summary,
      "global_step": int(trainer.global_step.numpy()),
      "tables": [_placement(t.embeddings) for t in tables],
      "dense": [_placement(v) for v in trainer.model.dense_variables],
      "table_slots": [_placement(v)
                      for v in trainer.embedding_optimizer.variables
                      if v.shape.rank == 2],
      # Updates compiled by the optimizers (none: variables on the PS).
      "fused_updates": sum(len(o._fused.steps)  # pylint: disable=protected-access
                           for o in (trainer.dense_optimizer,
                                     trainer.embedding_optimizer)),
      "log": lines,
  }
  del servers
  print(json.dumps(report), flush=True)
  # The servers' threads would keep the process alive.
  os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
  main(*sys.argv[1:])
