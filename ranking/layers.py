"""The model's trunk: DCN-v2 cross stack, shared-bottom MLP, and MMoE.

Tang et al. 2023, Table 1: Small is an MLP 512x2, Large an MLP 4096x4, and
Large+DCN puts DCN-v2 cross layers (Wang et al. 2021) and a LayerNorm in
front of Large. MMoE (Ma et al. 2018) is the softly shared alternative to a
fully shared bottom.
"""

from typing import List, Optional, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs


def _check_widths(widths: Sequence[int], what: str):
  if not widths or any(int(w) < 1 for w in widths):
    raise ValueError(f"{what} widths must be a non-empty list of positive "
                     f"integers, got {list(widths)}.")


class MLP(tf.keras.layers.Layer):
  """Dense layers with ReLU: x -> relu(W_k ... relu(W_1 x + b_1) ... + b_k)."""

  def __init__(self, widths: Sequence[int], kernel_initializer="glorot_uniform",
               **kwargs):
    super().__init__(**kwargs)
    _check_widths(widths, "MLP")
    self.widths = [int(w) for w in widths]
    self.dense_layers = [
        tf.keras.layers.Dense(w, activation="relu",
                              kernel_initializer=kernel_initializer,
                              name=f"dense_{i}")
        for i, w in enumerate(self.widths)]

  def call(self, x):
    for layer in self.dense_layers:
      x = layer(x)
    return x


class CrossStack(tf.keras.layers.Layer):
  """DCN-v2 cross layers, then LayerNorm (the paper's Large+DCN).

  x_{l+1} = x_0 * (W_l x_l + b_l) + x_l (tfrs.layers.dcn.Cross; W_l full
  rank, or U_l V_l of rank projection_dim), followed by LayerNorm.
  """

  def __init__(self, num_layers: int, projection_dim: Optional[int] = None,
               kernel_initializer="truncated_normal", **kwargs):
    super().__init__(**kwargs)
    if num_layers < 1:
      raise ValueError(f"cross layers must be >= 1, got {num_layers}.")
    if projection_dim is not None and projection_dim < 1:
      raise ValueError(f"projection_dim must be >= 1, got {projection_dim}.")
    self.cross_layers = [
        tfrs.layers.dcn.Cross(projection_dim=projection_dim,
                              kernel_initializer=kernel_initializer,
                              name=f"cross_{i}")
        for i in range(num_layers)]
    self.norm = tf.keras.layers.LayerNormalization(name="layer_norm")

  def call(self, x0):
    x = x0
    for layer in self.cross_layers:
      x = layer(x0, x)
    return self.norm(x)


class MMoE(tf.keras.layers.Layer):
  """Multi-gate mixture of experts: one softmax gate per task over experts.

  out_t = sum_e softmax(G_t x)_e * expert_e(x), each expert an MLP.
  """

  def __init__(self, num_tasks: int, num_experts: int,
               expert_widths: Sequence[int],
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {num_experts}.")
    self.experts = [MLP(expert_widths, kernel_initializer,
                        name=f"expert_{e}") for e in range(num_experts)]
    self.gates = [tf.keras.layers.Dense(num_experts, activation="softmax",
                                        kernel_initializer=kernel_initializer,
                                        name=f"gate_{t}")
                  for t in range(num_tasks)]

  def call(self, x) -> List[tf.Tensor]:
    experts = tf.stack([expert(x) for expert in self.experts], axis=1)
    return [tf.einsum("be,bew->bw", gate(x), experts) for gate in self.gates]
