"""The training loop under ParameterServerStrategy: a coordinator schedules
steps on the workers (TF "Parameter server training", ClusterCoordinator).

The trainer's loop call trains the next `steps` steps of the stream and
returns whether the state is finite; here each step is one closure,
`coordinator.schedule(step_fn, args=(k,))`, run by whichever worker is free,
and the call returns after `coordinator.join()`, so the trainer's loop
boundaries (summaries, evaluation, checkpoints, rollbacks) see no step in
flight. Steps are asynchronous: a worker reads the weights from the
parameter servers, computes its batch's gradients and applies them there,
while the other workers do the same with weights that may be a step or two
older.

What each worker reads: closure k computes batch k of the stream in the
graph, on its worker (MovingWindow.train_batch(k): the rows drawn for step
k, the whole global batch), so every batch of the uninterrupted stream is
trained once, by one worker (again on another if a worker fails after
applying it: the loop then logs the extra update), and a resume, a rollback
or a skip moves the stream exactly as in one process. The per-worker datasets of
`coordinator.create_per_worker_dataset` cannot do that: the input context
of each worker's dataset is the same (pipeline 0 of 1), so every worker
would read the same batches, and which closure takes which worker's next
batch is not fixed.

The step's bookkeeping (global step, StabilityMonitor.observe, loss sums)
runs in the closure on variables held by the parameter servers; with
several workers those read-modify-write updates run concurrently without
a lock, so one can occasionally be lost.
"""

import tensorflow as tf


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy,
                    tf.distribute.experimental.ParameterServerStrategy)


class StreamPosition:
  """The next step of the stream to schedule: what an iterator is to the
  loop of the other strategies."""

  def __init__(self, step: int):
    self.step = int(step)


class CoordinatedLoop:
  """Called as the trainer's loop: (StreamPosition, steps) -> whether the
  state is finite after the steps."""

  def __init__(self, strategy, train_step, train_batch, state_finite,
               global_step, log):
    """Builds the coordinator and the scheduled function.

    Args:
      strategy: a ParameterServerStrategy.
      train_step: batch -> None, one step on a worker (strategy.run of the
        replica step, then the bookkeeping).
      train_batch: step -> the step's global batch, in the graph.
      state_finite: () -> whether weights and optimizer state are finite.
      global_step: the step variable train_step counts up.
      log: where a step trained twice is reported.

    Raises:
      ValueError: workers with several devices each (each step is one
        worker's whole batch).
    """
    if strategy.num_replicas_in_sync != 1:
      raise ValueError(
          "The parameter-server loop trains each step's whole batch on one "
          "worker device; the workers have "
          f"{strategy.num_replicas_in_sync} devices each.")
    self.coordinator = (
        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy))
    self._state_finite = state_finite
    self._global_step, self._log = global_step, log

    @tf.function
    def scheduled_step(step):
      train_step(train_batch(step))

    self._step = scheduled_step

  def __call__(self, position: StreamPosition, steps) -> tf.Tensor:
    first = position.step
    for k in range(first, first + int(steps)):
      self.coordinator.schedule(self._step,
                                args=(tf.constant(k, tf.int64),))
    self.coordinator.join()
    position.step = first + int(steps)
    counted = int(self._global_step.numpy())
    if counted != position.step:
      # A worker that failed after applying its step had the step
      # rescheduled on another: that batch was trained twice. The step
      # stays the stream's position, so a resume does not skip a batch.
      self._log(f"steps {first}..{position.step - 1}: {counted - first} "
                f"updates for {int(steps)} steps (a worker failed after "
                "applying one and it ran again); the step count stays "
                f"{position.step}")
      self._global_step.assign(position.step)
    return self._state_finite()
