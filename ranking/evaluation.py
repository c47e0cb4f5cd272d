"""Next-day evaluation: every task's AUC (binary) or RMSE (regression), and
loss, over the held-out day (paper protocol, section 5.1.2)."""

from typing import Dict

import tensorflow as tf


class Evaluator:
  """Evaluates a model on a dataset under a strategy; metrics built once."""

  def __init__(self, model, strategy: tf.distribute.Strategy):
    self.model = model
    self.strategy = strategy
    with strategy.scope():
      self.metrics = {t.name: t.make_metric() for t in model.tasks}
      self.losses = {t.name: tf.keras.metrics.Mean(f"{t.name}/loss")
                     for t in model.tasks}

    def replica_step(batch):
      outputs = model(batch, training=False)
      for task in model.tasks:
        self.metrics[task.name].update_state(
            batch[task.name], task.prediction(outputs[task.name]))
        self.losses[task.name].update_state(
            task.per_example_loss(batch[task.name], outputs[task.name]))

    @tf.function
    def step(batch):
      strategy.run(replica_step, args=(batch,))

    self._step = step

  def evaluate(self, dataset: tf.data.Dataset) -> Dict[str, float]:
    """{"<task>/auc" or "<task>/rmse": value, "<task>/loss": value}."""
    for metric in list(self.metrics.values()) + list(self.losses.values()):
      metric.reset_state()
    for batch in self.strategy.experimental_distribute_dataset(dataset):
      self._step(batch)
    out = {}
    for task in self.model.tasks:
      out[f"{task.name}/{task.metric_name}"] = float(
          self.metrics[task.name].result())
      out[f"{task.name}/loss"] = float(self.losses[task.name].result())
    return out


def primary_auc(model, results: Dict[str, float]):
  """The first binary task's AUC (the one divergence is judged by), if any."""
  for task in model.tasks:
    if task.kind == "binary":
      return results[f"{task.name}/auc"]
  return None
