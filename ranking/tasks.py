"""Tasks: one per label; the loss and the metric its kind calls for.

binary:     sigmoid cross-entropy on a logit; next-day metric AUC.
regression: squared error on the prediction; next-day metric RMSE.
"""

import dataclasses

import tensorflow as tf

from data import schema as schema_lib

AUC_THRESHOLDS = 2000


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  kind: str
  weight: float = 1.0

  def __post_init__(self):
    if self.kind not in schema_lib.LABEL_KINDS:
      raise ValueError(f"Task {self.name!r}: unknown task type {self.kind!r};"
                       f" expected one of {schema_lib.LABEL_KINDS}.")
    if not self.weight >= 0:
      raise ValueError(f"Task {self.name!r}: weight must be >= 0.")

  @property
  def metric_name(self) -> str:
    return "auc" if self.kind == "binary" else "rmse"

  def per_example_loss(self, labels, outputs):
    """Loss of each example: outputs are logits (binary) or values."""
    labels = tf.cast(labels, outputs.dtype)
    if self.kind == "binary":
      return tf.nn.sigmoid_cross_entropy_with_logits(labels, outputs)
    return tf.square(outputs - labels)

  def prediction(self, outputs):
    """Probability (binary) or value (regression) from the head's output."""
    return tf.sigmoid(outputs) if self.kind == "binary" else outputs

  def make_metric(self) -> tf.keras.metrics.Metric:
    """A streaming metric fed (labels, predictions)."""
    if self.kind == "binary":
      return tf.keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS,
                                  name=f"{self.name}/auc")
    return tf.keras.metrics.RootMeanSquaredError(name=f"{self.name}/rmse")
