"""Which variables a ParameterServerStrategy shards: the embedding tables.

A strategy's `variable_partitioner` is called with a variable's shape and
dtype only, so it cannot tell an embedding table from a dense kernel by
name; and a size rule alone would split a large dense kernel too, whose
per-layer norms the clipping rules (Clippy, AGC, LAMB, GC) must see whole.
So the partitioner shards only while `embedding_tables()` is entered:
FeatureInput looks its tables up inside it, and Keras builds each table at
its first lookup, so exactly the tables are created there. Everything else
(dense layers, optimizer slots, the trainer's counters) stays one variable,
placed on one parameter server; a table's optimizer slots are created
beside each of its shards, as Keras does for a sharded variable.

Per-shard Adagrad on a table is exact: its update is element-wise.
"""

import contextlib
import threading

import gin
import tensorflow as tf

_building = threading.local()


@contextlib.contextmanager
def embedding_tables():
  """Variables created inside are embedding tables (rows on axis 0)."""
  depth = getattr(_building, "depth", 0)
  _building.depth = depth + 1
  try:
    yield
  finally:
    _building.depth = depth


def building_embedding_tables() -> bool:
  return getattr(_building, "depth", 0) > 0


@gin.configurable
class EmbeddingPartitioner:
  """Shards embedding tables by rows over up to `max_shards` parameter
  servers, each shard at least `min_shard_bytes` (a small table is one
  variable: splitting it costs a lookup per shard and saves nothing);
  every other variable is left whole.

  Attributes:
    max_shards: the most shards of a table (default: one per PS task).
    min_shard_bytes: the least bytes of a shard; TF's MinSizePartitioner
      default, 256 KiB, so a table of dim 16 (float32) is split from 8192
      rows on.
  """

  def __init__(self, max_shards: int, min_shard_bytes: int = 256 << 10):
    if max_shards < 1:
      raise ValueError(f"max_shards must be >= 1, got {max_shards}.")
    if min_shard_bytes < 1:
      raise ValueError(f"min_shard_bytes must be >= 1, got "
                       f"{min_shard_bytes}.")
    self.max_shards, self.min_shard_bytes = max_shards, min_shard_bytes
    self._by_size = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=max_shards)

  def __call__(self, shape, dtype, axis=0):
    if not building_embedding_tables():
      return [1] * len(shape)
    return self._by_size(shape, dtype, axis)
