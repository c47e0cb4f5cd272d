"""Next-day evaluation: every task's AUC (binary) or RMSE (regression), and
loss, over the held-out day (paper protocol, section 5.1.2)."""

import math
from typing import Dict

import tensorflow as tf

from ranking.coordinated_loop import is_parameter_server


class Evaluator:
  """Evaluates a model on a dataset under a strategy; metrics built once."""

  def __init__(self, model, strategy: tf.distribute.Strategy):
    self.model = model
    if is_parameter_server(strategy):
      # The coordinator evaluates by itself, with the default strategy
      # (the trainer builds this outside the PS scope): the strategy's
      # datasets are placed on the workers for scheduled closures, and its
      # run() outside one runs here anyway. The model reads its weights
      # from the parameter servers.
      strategy = tf.distribute.get_strategy()
    self.strategy = strategy
    with strategy.scope():
      self.metrics = {t.name: t.make_metric() for t in model.tasks}
      self.losses = {t.name: tf.keras.metrics.Mean(f"{t.name}/loss")
                     for t in model.tasks}
      # Mean of p and of p^2: the spread of each task's predictions, which
      # is 0 when a collapsed model predicts a constant.
      self.moments = {t.name: (tf.keras.metrics.Mean(f"{t.name}/p"),
                               tf.keras.metrics.Mean(f"{t.name}/p2"))
                      for t in model.tasks}
      # Non-finite predictions: a metric over them (an AUC of NaN scores
      # reads 0.0) is undefined, and reported as NaN.
      self.nonfinite = {t.name: tf.keras.metrics.Sum(f"{t.name}/nonfinite")
                        for t in model.tasks}

    def replica_step(batch):
      outputs = model(batch, training=False)
      for task in model.tasks:
        prediction = task.prediction(outputs[task.name])
        self.nonfinite[task.name].update_state(tf.reduce_sum(tf.cast(
            ~tf.math.is_finite(prediction), tf.float32)))
        self.metrics[task.name].update_state(batch[task.name], prediction)
        first, second = self.moments[task.name]
        first.update_state(prediction)
        second.update_state(tf.square(prediction))
        self.losses[task.name].update_state(
            task.per_example_loss(batch[task.name], outputs[task.name]))

    @tf.function(autograph=False)  # plain TensorFlow: nothing to convert
    def step(batch):
      strategy.run(replica_step, args=(batch,))

    self._step = step

  def evaluate(self, dataset: tf.data.Dataset) -> Dict[str, float]:
    """{"<task>/auc" or "<task>/rmse", "<task>/loss",
    "<task>/prediction_mean", "<task>/prediction_std": value}."""
    for metric in (list(self.metrics.values()) + list(self.losses.values())
                   + list(self.nonfinite.values())
                   + [m for pair in self.moments.values() for m in pair]):
      metric.reset_state()
    for batch in self.strategy.experimental_distribute_dataset(dataset):
      self._step(batch)
    out = {}
    for task in self.model.tasks:
      finite = float(self.nonfinite[task.name].result()) == 0
      out[f"{task.name}/{task.metric_name}"] = float(
          self.metrics[task.name].result()) if finite else math.nan
      out[f"{task.name}/loss"] = float(self.losses[task.name].result())
      first, second = (float(m.result()) for m in self.moments[task.name])
      out[f"{task.name}/prediction_mean"] = first
      out[f"{task.name}/prediction_std"] = max(second - first**2, 0.0)**0.5
    return out


def headline(results: Dict[str, float]) -> str:
  """The AUCs and RMSEs of an evaluation, as one progress line shows them."""
  return " ".join(f"{k} {v:.4f}" for k, v in results.items()
                  if k.endswith(("/auc", "/rmse")))
