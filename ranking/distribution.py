"""Choosing a tf.distribute strategy: TPU, mirrored, multi-worker or default.

  kind = "auto": TPUStrategy when a TPU address is given (or TPU_NAME is
  set), MultiWorkerMirroredStrategy when TF_CONFIG names a cluster,
  MirroredStrategy when there are several GPUs, else the default strategy.
"""

import json
import os
from typing import Optional

import gin
import tensorflow as tf

KINDS = ("auto", "tpu", "mirrored", "multi_worker", "default")


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
    ValueError: an unknown kind, or TF_CONFIG that is not JSON.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown strategy {kind!r}; expected one of {KINDS}.")
  tpu_address = tpu_address or os.environ.get("TPU_NAME")
  if kind == "auto":
    if tpu_address:
      kind = "tpu"
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
  if kind == "multi_worker":
    _say_who_waits()
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy(devices)
  return tf.distribute.get_strategy()


def _say_who_waits():
  """Joining blocks until every task of TF_CONFIG has started: says so,
  since a worker that was never launched would otherwise look like a hang."""
  config = json.loads(os.environ.get("TF_CONFIG") or "{}")
  task = config.get("task") or {}
  peers = sum(len(v) for v in (config.get("cluster") or {}).values())
  print(f"multi-worker: {task.get('type', '?')} {task.get('index', 0)} of "
        f"{peers} tasks in TF_CONFIG; waiting for all of them to join",
        flush=True)


def _has_cluster() -> bool:
  config = os.environ.get("TF_CONFIG")
  if not config:
    return False
  try:
    return bool(json.loads(config).get("cluster"))
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
