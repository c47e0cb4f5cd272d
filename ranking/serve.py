"""A worker or parameter server of a ParameterServerStrategy cluster.

  TF_CONFIG='{"cluster": {"chief": [...], "worker": [...], "ps": [...]},
              "task": {"type": "worker", "index": 0}}' python -m ranking.serve

Runs the tf.distribute.Server of TF_CONFIG's task and serves until it is
killed. The task holds no program of its own: the coordinator (train.py
with the same cluster and task "chief") places the variables on the "ps"
tasks and schedules the training steps on the "worker" tasks. Start the
servers in any order; the coordinator waits for them.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from ranking.distribution import tf_config

TASKS = ("worker", "ps")


def server_from_tf_config() -> tf.distribute.Server:
  """The started server of TF_CONFIG's task.

  Raises:
    ValueError: TF_CONFIG is missing or not JSON, its cluster has no "ps"
      or "worker" job, or its task is not one of them.
  """
  config = tf_config()
  if not config:
    raise ValueError("ranking.serve needs TF_CONFIG naming the cluster and "
                     "this task (see the README, \"Parameter servers\").")
  cluster, task = config.get("cluster") or {}, config.get("task") or {}
  missing = [job for job in TASKS if not cluster.get(job)]
  if missing:
    raise ValueError(f"TF_CONFIG's cluster has no {missing} tasks; "
                     "ranking.serve serves a ParameterServerStrategy "
                     f"cluster (it has {sorted(cluster) or 'none'}).")
  kind, index = task.get("type"), task.get("index", 0)
  if kind not in TASKS:
    raise ValueError(
        f"ranking.serve runs a {' or '.join(TASKS)} task; TF_CONFIG's task "
        f"is {task or 'not set'} (the coordinator, \"chief\", runs train.py).")
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  return tf.distribute.Server(resolver.cluster_spec(), job_name=kind,
                              task_index=index,
                              protocol=resolver.rpc_layer or "grpc",
                              start=True)


def main():
  server = server_from_tf_config()
  task = tf_config()["task"]
  print(f"serving {task['type']} {task.get('index', 0)} at {server.target}",
        flush=True)
  server.join()


if __name__ == "__main__":
  try:
    main()
  except ValueError as e:
    sys.exit(f"ranking.serve: {e}")
