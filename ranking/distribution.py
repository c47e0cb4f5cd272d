"""Choosing a tf.distribute strategy: TPU, mirrored, multi-worker, parameter
servers or default.

  kind = "auto": TPUStrategy when a TPU address is given (or TPU_NAME is
  set), ParameterServerStrategy when TF_CONFIG's cluster has a "ps" job,
  MultiWorkerMirroredStrategy when TF_CONFIG names another cluster,
  MirroredStrategy when there are several GPUs, else the default strategy.

Under ParameterServerStrategy this process is the coordinator (TF_CONFIG
task "chief"); the "worker" and "ps" tasks run `python -m ranking.serve`.
Only the embedding tables are sharded over the PS tasks (ranking/sharding).
"""

import json
import os
from typing import Optional

import gin
import tensorflow as tf

from ranking.sharding import EmbeddingPartitioner

KINDS = ("auto", "tpu", "mirrored", "multi_worker", "parameter_server",
         "default")


@gin.configurable
def make_strategy(kind: str = "auto", tpu_address: Optional[str] = None,
                  devices=None) -> tf.distribute.Strategy:
  """The strategy of `kind` (see the module doc).

  Args:
    kind: one of KINDS.
    tpu_address: the TPU's name or grpc address ("local" on a TPU VM).
    devices: for "mirrored", the devices to use (default: all GPUs, or the
      CPU).

  Raises:
    ValueError: an unknown kind, TF_CONFIG that is not JSON, or (for
      "parameter_server") a TF_CONFIG without "chief", "worker" and "ps"
      jobs or whose task is not the coordinator ("chief").
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown strategy {kind!r}; expected one of {KINDS}.")
  tpu_address = tpu_address or os.environ.get("TPU_NAME")
  if kind == "auto":
    if tpu_address:
      kind = "tpu"
    elif "ps" in _cluster():
      kind = "parameter_server"
    elif _has_cluster():
      kind = "multi_worker"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
      kind = "mirrored"
    else:
      kind = "default"
  if kind == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=tpu_address or "local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if kind == "parameter_server":
    return _parameter_server_strategy()
  if kind == "multi_worker":
    _say_who_waits()
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy(devices)
  return tf.distribute.get_strategy()


def _say_who_waits():
  """Joining blocks until every task of TF_CONFIG has started: says so,
  since a worker that was never launched would otherwise look like a hang."""
  task = tf_config().get("task") or {}
  peers = sum(len(v) for v in _cluster().values())
  if not peers:
    print("multi-worker: no cluster in TF_CONFIG; training as one process",
          flush=True)
    return
  print(f"multi-worker: {task.get('type', '?')} {task.get('index', 0)} of "
        f"{peers} tasks in TF_CONFIG; waiting for all of them to join",
        flush=True)


def _parameter_server_strategy():
  """The coordinator's ParameterServerStrategy over TF_CONFIG's cluster."""
  cluster, task = _cluster(), tf_config().get("task") or {}
  missing = [job for job in ("chief", "worker", "ps")
             if not cluster.get(job)]
  if missing:
    raise ValueError(
        "make_strategy.kind='parameter_server' needs TF_CONFIG with a "
        "cluster of \"chief\" (this coordinator), \"worker\" and \"ps\" "
        f"tasks; it has no {missing} (TF_CONFIG cluster: "
        f"{sorted(cluster) or 'none'}).")
  if task.get("type") != "chief":
    raise ValueError(
        "Under ParameterServerStrategy the training program is the "
        "coordinator, TF_CONFIG task type \"chief\"; this TF_CONFIG's task "
        f"is {task or 'not set'}. Workers and parameter servers run "
        "`python -m ranking.serve` instead.")
  # TF's advice for the coordinator: calls to a failed worker fail fast,
  # and its closures are scheduled again on the others.
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  return tf.distribute.experimental.ParameterServerStrategy(
      resolver,
      variable_partitioner=EmbeddingPartitioner(max_shards=len(cluster["ps"])))


def _has_cluster() -> bool:
  return bool(_cluster())


def tf_config() -> dict:
  """TF_CONFIG, checked: {} without one; else its "cluster" maps job names
  to lists of "host:port" and its "task" has a "type" and an int "index".

  Raises:
    ValueError: TF_CONFIG is not JSON or not of that shape; names the field.
  """
  text = os.environ.get("TF_CONFIG")
  if not text:
    return {}
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
  if not isinstance(config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object, got {text[:200]}")
  cluster = config.get("cluster") or {}
  if not isinstance(cluster, dict) or not all(
      isinstance(v, list) and all(isinstance(a, str) for a in v)
      for v in cluster.values()):
    raise ValueError("TF_CONFIG's \"cluster\" must map job names to lists "
                     "of \"host:port\" addresses, e.g. {\"worker\": "
                     f"[\"host0:2222\", \"host1:2222\"]}}; got {cluster!r}")
  task = config.get("task") or {}
  if task and (not isinstance(task, dict) or "type" not in task or
               isinstance(task.get("index", 0), bool) or
               not isinstance(task.get("index", 0), int)):
    raise ValueError("TF_CONFIG's \"task\" must be {\"type\": a job name, "
                     f"\"index\": a whole number}}; got {task!r}")
  if task and task["type"] in cluster and not (
      0 <= task.get("index", 0) < len(cluster[task["type"]])):
    raise ValueError(f"TF_CONFIG's task index {task.get('index', 0)} is not "
                     f"one of the {len(cluster[task['type']])} "
                     f"{task['type']} tasks.")
  return config


def _cluster() -> dict:
  """TF_CONFIG's cluster ({job: [addresses]}), {} without one."""
  return tf_config().get("cluster") or {}
