"""The multitask ranking model of Tang et al. 2023 (Table 1), on tfrs.Model.

  features -> FeatureInput (embeddings + dense)
           -> [CrossStack: DCN-v2 cross layers -> LayerNorm]     (Large+DCN)
           -> bottom: MLP (shared) or MMoE (one mixture per task)
           -> one head per task: [tower MLP] -> Dense(1)
           -> per-task loss (sigmoid CE / squared error), weighted sum.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import gin
import tensorflow as tf
import tensorflow_recommenders as tfrs

from data import schema as schema_lib
from ranking.features import EMBEDDING_PREFIX, FeatureInput
from ranking.layers import MLP, MMoE, CrossStack
from ranking.tasks import Task

BOTTOMS = ("mlp", "mmoe")


class MultitaskRanker(tfrs.Model):
  """Shared-bottom (or MMoE) multitask ranker with one head per task.

  Attributes:
    tasks: the Task of each head, in order.
    loss_trackers: {task: Mean of its loss}, updated by compute_loss.
    metrics_by_task: {task: AUC or RMSE}, updated by compute_loss.
  """

  def __init__(self, schema: schema_lib.Schema, tasks: Sequence[Task],
               embedding_dim: int, bottom: tf.keras.layers.Layer,
               cross: Optional[CrossStack] = None,
               tower_widths: Sequence[int] = (),
               kernel_initializer="glorot_uniform",
               embeddings_initializer="uniform", **kwargs):
    super().__init__(**kwargs)
    self.schema = schema
    self.tasks = tuple(tasks)
    self.feature_input = FeatureInput(
        schema, embedding_dim, embeddings_initializer=embeddings_initializer,
        name="features")
    self.cross = cross
    self.bottom = bottom
    self.heads = {}
    # Under a mixed policy (mixed_bfloat16) the logits are float32: the
    # losses, metrics and the stability monitor read them (Keras's
    # mixed-precision guide); otherwise the policy's own dtype.
    policy = tf.keras.mixed_precision.global_policy()
    logit_dtype = ("float32" if policy.compute_dtype != policy.variable_dtype
                   else None)
    for task in self.tasks:
      # Named per task, so each head's variables (and their diagnostics and
      # TensorBoard tags) say which task they belong to.
      layers = ([MLP(tower_widths, kernel_initializer,
                     name=f"tower_{task.name}")] if tower_widths else [])
      layers.append(tf.keras.layers.Dense(
          1, kernel_initializer=kernel_initializer, dtype=logit_dtype,
          name=f"logit_{task.name}"))
      self.heads[task.name] = tf.keras.Sequential(layers,
                                                  name=f"head_{task.name}")
    self.metrics_by_task = {t.name: t.make_metric() for t in self.tasks}
    self.loss_trackers = {t.name: tf.keras.metrics.Mean(f"{t.name}/loss")
                          for t in self.tasks}

  def call(self, features, training=False) -> Dict[str, tf.Tensor]:
    """Each task's head output: a logit (binary) or a value, shape [batch]."""
    x = self.feature_input(features)
    if self.cross is not None:
      x = self.cross(x)
    shared = self.bottom(x)
    per_task = shared if isinstance(shared, list) else [shared] * len(
        self.tasks)
    return {task.name: tf.squeeze(self.heads[task.name](h), axis=-1)
            for task, h in zip(self.tasks, per_task)}

  def predict_tasks(self, features) -> Dict[str, tf.Tensor]:
    """Probabilities for binary tasks, values for regression tasks."""
    outputs = self(features)
    return {t.name: t.prediction(outputs[t.name]) for t in self.tasks}

  def per_example_losses(self, features, outputs=None
                         ) -> Dict[str, tf.Tensor]:
    """Each task's loss per example, [batch]."""
    outputs = self(features, training=True) if outputs is None else outputs
    return {t.name: t.per_example_loss(features[t.name], outputs[t.name])
            for t in self.tasks}

  def training_loss(self, features, global_batch_size
                    ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """The loss the trainer minimises, and each task's part of it.

    A task's part is its per-example losses summed over `features` and
    divided by `global_batch_size` (tf.nn.compute_average_loss: a replica's
    share, whose sum over replicas is the mean over the global batch); the
    total is their weighted sum. The forward pass is in training mode, as
    the trainer's. Updates no metric (compute_loss does).

    Returns:
      (total, {task: its part}).
    """
    outputs = self(features, training=True)
    losses = self.per_example_losses(features, outputs)
    per_task = {t.name: tf.nn.compute_average_loss(
        losses[t.name], global_batch_size=global_batch_size)
                for t in self.tasks}
    total = tf.add_n([t.weight * per_task[t.name] for t in self.tasks])
    return total, per_task

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    """Weighted sum over tasks of each task's mean loss; updates metrics."""
    outputs = self(inputs, training=training)
    losses = self.per_example_losses(inputs, outputs)
    total = 0.0
    for task in self.tasks:
      mean = tf.reduce_mean(losses[task.name])
      self.loss_trackers[task.name].update_state(mean)
      self.metrics_by_task[task.name].update_state(
          inputs[task.name], task.prediction(outputs[task.name]))
      total += task.weight * mean
    return total

  @property
  def embedding_variables(self):
    """Embedding tables: trained with plain Adagrad (the paper clips only
    non-embedding parameters)."""
    return [v for v in self.trainable_variables
            if EMBEDDING_PREFIX in v.name]

  @property
  def dense_variables(self):
    """Every other trainable variable: trained with the clipping method."""
    return [v for v in self.trainable_variables
            if EMBEDDING_PREFIX not in v.name]

  def non_embedding_parameters(self) -> int:
    # From the shapes: no variable is read (they may sit on parameter
    # servers when the trainer writes summary.json).
    return sum(v.shape.num_elements() for v in self.dense_variables)


@gin.configurable(denylist=["schema"])
def build_model(schema: schema_lib.Schema,
                tasks: Optional[Sequence[str]] = None,
                drop_features: Sequence[str] = (),
                task_weights: Optional[Mapping[str, float]] = None,
                embedding_dim: int = 64,
                bottom: str = "mlp",
                bottom_widths: Sequence[int] = (512, 512),
                num_experts: int = 4,
                cross_layers: int = 0,
                cross_projection_dim: Optional[int] = None,
                tower_widths: Sequence[int] = (),
                width_scale: float = 1.0,
                kernel_initializer="glorot_uniform",
                embeddings_initializer="uniform",
                name: str = "ranker") -> MultitaskRanker:
  """A ranker for `schema`'s labels (presets: configs/models/*.gin).

  Args:
    schema: the dataset's schema (features, and the labels the tasks use).
    tasks: label names to train on, in head order; None: every label.
    drop_features: features of the schema the model leaves out of its input
      (no embedding table, no input columns; the batches may still hold
      them). The model's `schema` is the schema without them. For ablations
      ("fewer input features", paper Table 3).
    task_weights: {task: weight} in the total loss; others weigh 1.
    embedding_dim: width of every embedding.
    bottom: "mlp" (fully shared) or "mmoe" (experts, a gate per task).
    bottom_widths: the MLP's widths, or each expert's.
    num_experts: experts of an MMoE bottom.
    cross_layers: DCN-v2 cross layers before the bottom (0: none); followed
      by a LayerNorm.
    cross_projection_dim: low-rank cross layers of this rank; None: full.
    tower_widths: per-task hidden layers between the bottom and the logit.
    width_scale: multiplies every bottom and tower width (rounded, at least
      1): the small-machine overlay shrinks a preset but keeps its depth and
      structure.
    kernel_initializer: of every dense kernel (tests use constants).
    embeddings_initializer: of every embedding table.
    name: the model's name.

  Raises:
    ValueError: an unknown bottom or task type, a zero width, a task or
      weight naming a label the data lacks, a dropped feature the data
      lacks, or every feature dropped.
  """
  if isinstance(drop_features, str):
    raise ValueError(f"build_model.drop_features must be a list of feature "
                     f"names, not the string {drop_features!r}.")
  try:
    schema = schema.without_features(list(drop_features))
  except ValueError as e:
    raise ValueError(f"build_model.drop_features: {e}") from None
  if not schema.feature_names:
    raise ValueError(f"build_model.drop_features {list(drop_features)} "
                     "leaves the model no input feature.")
  names = list(schema.label_names if tasks is None else tasks)
  missing = [n for n in names if n not in schema.label_names]
  if missing:
    raise ValueError(f"Task(s) {missing} are not labels of the data; it has "
                     f"{list(schema.label_names)}.")
  if not names:
    raise ValueError("A model needs at least one task.")
  task_weights = dict(task_weights or {})
  stray = sorted(set(task_weights) - set(names))
  if stray:
    raise ValueError(f"task_weights name {stray}, which are not tasks "
                     f"{names}.")
  if not width_scale > 0:
    raise ValueError(f"width_scale must be > 0, got {width_scale}.")
  def scaled(widths):  # invalid widths pass through for MLP to name
    return [max(1, round(w * width_scale)) if w > 0 else w for w in widths]

  bottom_widths, tower_widths = scaled(bottom_widths), scaled(tower_widths)
  task_list = [Task(n, schema.label(n).kind, float(task_weights.get(n, 1.0)))
               for n in names]
  if bottom == "mlp":
    trunk = MLP(bottom_widths, kernel_initializer, name="bottom")
  elif bottom == "mmoe":
    trunk = MMoE(len(task_list), num_experts, bottom_widths,
                 kernel_initializer, name="bottom")
  else:
    raise ValueError(f"Unknown bottom {bottom!r}; expected one of {BOTTOMS}.")
  cross = (CrossStack(cross_layers, cross_projection_dim, kernel_initializer,
                      name="cross")
           if cross_layers else None)
  return MultitaskRanker(schema, task_list, embedding_dim, trunk, cross,
                         tower_widths, kernel_initializer,
                         embeddings_initializer, name=name)
