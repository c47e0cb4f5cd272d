"""The input layer: a schema's features as one input vector per example.

Each categorical feature is embedded (tf.keras Embedding, one table per
feature); a multi-valued feature is the mean of its ids' embeddings (PAD_ID
slots left out); dense features enter as they are (sources normalise them).
The pieces are concatenated in schema order.
"""

import tensorflow as tf

from data import schema as schema_lib
from ranking import sharding

EMBEDDING_PREFIX = "embedding_"


def input_width(schema: schema_lib.Schema, embedding_dim: int) -> int:
  """Width of the input vector: embeddings plus dense columns."""
  return (len(schema.categorical) * embedding_dim +
          sum(f.dim for f in schema.dense))


class FeatureInput(tf.keras.layers.Layer):
  """Schema features -> [batch, input_width(schema, embedding_dim)].

  Embedding tables are named `embedding_<feature>`, which is how the model
  tells embedding variables (plain Adagrad) from dense ones (clipped).
  They are looked up (and so, at the first call, built) inside
  sharding.embedding_tables(): a ParameterServerStrategy shards them, and
  only them, over its parameter servers.
  """

  def __init__(self, schema: schema_lib.Schema, embedding_dim: int = 64,
               embeddings_initializer="uniform", **kwargs):
    super().__init__(**kwargs)
    if embedding_dim < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
    self.schema = schema
    self.embedding_dim = embedding_dim
    self.embeddings = {
        f.name: tf.keras.layers.Embedding(
            f.vocab_size, embedding_dim,
            embeddings_initializer=embeddings_initializer,
            name=EMBEDDING_PREFIX + f.name)
        for f in schema.categorical}

  @property
  def width(self) -> int:
    return input_width(self.schema, self.embedding_dim)

  def call(self, features):
    with sharding.embedding_tables():
      parts = self._embedded(features)
    for f in self.schema.dense:
      parts.append(tf.reshape(tf.cast(features[f.name], self.compute_dtype),
                              [-1, f.dim]))
    return tf.concat(parts, axis=1)

  def _embedded(self, features):
    parts = []
    for f in self.schema.categorical:
      ids = tf.cast(features[f.name], tf.int64)
      table = self.embeddings[f.name]
      if f.multivalent:
        mask = tf.cast(ids != schema_lib.PAD_ID, self.compute_dtype)
        vectors = table(tf.maximum(ids, 0)) * mask[..., None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        parts.append(tf.reduce_sum(vectors, axis=1) / count)
      else:
        parts.append(table(ids))
    return parts
