"""The sequential training protocol (paper section 5.1.2), on any strategy.

Days are trained in time order with moving-window batches; the held-out day
is evaluated every `eval_every_steps` steps and at the end of every training
day (or of every `eval_every_days`-th, or of none). Steps run
`steps_per_loop` at a time inside one tf.function, so TPUs are not starved
by the host. Checkpoints every `checkpoint_every_steps`; a run
restarted in the same model_dir resumes from the newest intact one at the
same data position (the stream is a function of the step), after checking
that it trains with the settings the run started with (ranking/integrity).
Everything a person needs to see instability coming is written to
TensorBoard and metrics.jsonl; the run's verdict goes to summary.json, which
exists only once the run has ended (a new or resumed run removes the old
one first). SIGTERM (a preempted VM) checkpoints the current step and
raises Preempted; rerunning resumes there. With Recovery.enabled, a blow-up
or a divergence rolls the run back and skips batches (ranking/recovery.py),
at loop boundaries: the compiled loop does not change. So does the
optional sharpness monitor (top Hessian eigenvalues beside 2/eta,
ranking/sharpness.py), which only reads the state.
"""

import collections
import contextlib
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Callable, Dict, Optional

import gin
import numpy as np
import tensorflow as tf

from data.source import Source
from data.window import MovingWindow
from optim import ScaledAdagrad, build_optimizer
from ranking import coordinated_loop, integrity
from ranking import roles
from ranking.dashboard import Dashboard
from ranking.distribution import make_strategy
from ranking.evaluation import Evaluator, headline
from ranking.model import build_model
from ranking.recovery import Recovery
from ranking.sharpness import SharpnessMonitor
from ranking.stability import (StabilityMonitor, state_is_finite,
                               step_is_finite, zero_if_nonfinite)
from ranking.summaries import ScalarWriter

# Trainer.jit_compile: no XLA, the optimizers' updates, the whole step.
JIT_MODES = (False, "updates", True)


@contextlib.contextmanager
def _dtype_policy(name):
  """Keras's global dtype policy is `name` while the model is built (its
  layers keep the policy they were built with); "float32" leaves it as it
  is. Afterwards a policy that followed floatx follows it again."""
  if name == "float32":
    yield
    return
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(
        None if previous.name == tf.keras.backend.floatx() else previous)


def _timed(phase):
  """Adds a method's wall seconds to its trainer's `seconds[phase]`."""
  def decorate(method):
    @functools.wraps(method)
    def timed(self, *args, **kwargs):
      start = time.perf_counter()
      try:
        return method(self, *args, **kwargs)
      finally:
        self.seconds[phase] += time.perf_counter() - start
    return timed
  return decorate


class Preempted(Exception):
  """Training stopped on SIGTERM after checkpointing the current step."""

  def __init__(self, step: int, checkpoint: str):
    super().__init__(f"preempted (SIGTERM) at step {step}: saved {checkpoint}"
                     "; rerun the same command to resume from it")
    self.step, self.checkpoint = step, checkpoint


@gin.configurable
class Trainer:
  """Builds the run from gin and trains it; see the module doc."""

  def __init__(self,
               model_dir: str,
               source: Source = gin.REQUIRED,
               embedding_learning_rate: float = gin.REQUIRED,
               steps_per_loop: int = 10,
               eval_every_steps: int = 500,
               eval_every_days: int = 1,
               min_eval_gap_steps: Optional[int] = None,
               checkpoint_every_steps: int = 500,
               summary_every_steps: int = 50,
               max_steps: Optional[int] = None,
               eval_batch_size: int = 4096,
               stop_on_divergence: bool = True,
               crash_at_step: Optional[int] = None,
               crash_signal: str = "SIGKILL",
               crash_worker: Optional[int] = None,
               strategy: Optional[tf.distribute.Strategy] = None,
               seed: int = 0,
               jit_compile="updates",
               precision: str = "float32",
               allow_config_change: bool = False,
               log: Callable[[str], None] = print):
    """Builds data, model, optimizers and checkpointing.

    Args:
      model_dir: where checkpoints, summaries and summary.json go.
      source: the dataset (e.g. @SyntheticStream()).
      embedding_learning_rate: plain Adagrad's rate for embeddings.
      steps_per_loop: steps per host call.
      eval_every_steps: evaluate the held-out day this often (and at day
        ends: eval_every_days).
      eval_every_days: also evaluate at the end of every this many training
        days (1: every day; 0: never: only every eval_every_steps steps and
        at the end of the run, for logs of many small days).
      min_eval_gap_steps: skip a scheduled evaluation that comes fewer than
        this many steps after the previous one (a day end just past an
        eval_every_steps evaluation); None: eval_every_steps // 4; 0: never
        skip. The run's final evaluation always runs.
      checkpoint_every_steps: checkpoint this often (and at the end).
      summary_every_steps: train scalars, diagnostics and console progress.
      max_steps: stop after this many steps (None: the whole schedule).
      eval_batch_size: batch of the evaluation.
      stop_on_divergence: stop once the run has fully diverged.
      crash_at_step: fault injection for tests: send `crash_signal` to
        this process right after this step.
      crash_signal: "SIGKILL" (a crash) or "SIGTERM" (a preemption).
      crash_worker: with several workers, only the one of this index is
        signalled (None: every process).
      strategy: a tf.distribute strategy (default: make_strategy()). A
        multi-worker strategy must exist before the source runs any op:
        launch.build_trainer makes it first and passes it here.
      seed: of the model's initial weights (the data has its own seeds).
      precision: the Keras dtype policy of the model: "float32", or
        "mixed_bfloat16" (TPUs: bfloat16 matmuls and activations; weights,
        optimizer state, clipping rules, losses and the monitor stay in
        float32).
      jit_compile: where XLA compiles (bench/job.py measures each):
        "updates" (default): each optimizer's update of a step, all its
          dense variables in one computation (the rules' elementwise passes
          fused). The embeddings' sparse updates stay uncompiled, and the
          model's matmuls stay with TensorFlow's kernels (oneDNN on a CPU,
          which beat XLA's there). Variables with one copy only: with
          several replicas, or parameter servers, the updates run
          uncompiled.
        True: the whole replica step (one replica), or the gradients (several
          replicas): XLA's matmuls too, after a compile of seconds. Not with
          a parameter-server strategy.
        False: no XLA. TPUStrategy compiles everything with XLA anyway.
      allow_config_change: resume a model_dir whose recorded operative
        config differs in a binding that changes the training (the
        differences are logged); by default that is refused.
      log: where progress lines go.
    """
    # Wall seconds per phase of the job (bench/job.py reads them): setup,
    # first_loop (tracing and compiling, with its steps), train, eval,
    # checkpoint, summaries.
    self.seconds = collections.Counter()
    setup_start = time.perf_counter()
    for name, value in (("steps_per_loop", steps_per_loop),
                        ("eval_every_steps", eval_every_steps),
                        ("checkpoint_every_steps", checkpoint_every_steps),
                        ("summary_every_steps", summary_every_steps),
                        ("eval_batch_size", eval_batch_size)):
      if value < 1:
        raise ValueError(f"Trainer.{name} must be >= 1, got {value}.")
    if min_eval_gap_steps is None:
      min_eval_gap_steps = eval_every_steps // 4
    if min_eval_gap_steps < 0:
      raise ValueError("Trainer.min_eval_gap_steps must be >= 0 (0: every "
                       f"scheduled evaluation runs), got {min_eval_gap_steps}.")
    if eval_every_days < 0:
      raise ValueError("Trainer.eval_every_days must be >= 0 (0: no day-end "
                       f"evaluations), got {eval_every_days}.")
    if max_steps is not None and max_steps < 1:
      raise ValueError("Trainer.max_steps must be >= 1 (or None: the whole "
                       f"schedule), got {max_steps}.")
    if isinstance(embedding_learning_rate, (int, float)) and not (
        embedding_learning_rate > 0):
      raise ValueError("Trainer.embedding_learning_rate must be > 0, got "
                       f"{embedding_learning_rate}.")
    self.allow_config_change = allow_config_change
    self._stop_signal = None
    self.model_dir = model_dir
    self.steps_per_loop = steps_per_loop
    self.eval_every = eval_every_steps
    self.eval_every_days = eval_every_days
    self.min_eval_gap = min_eval_gap_steps
    self.checkpoint_every = checkpoint_every_steps
    self.summary_every = summary_every_steps
    self.stop_on_divergence = stop_on_divergence
    self.crash_at_step = crash_at_step
    if crash_signal not in ("SIGKILL", "SIGTERM"):
      raise ValueError("Trainer.crash_signal must be 'SIGKILL' or 'SIGTERM', "
                       f"got {crash_signal!r}.")
    self.crash_signal = getattr(signal, crash_signal)
    self.crash_worker = crash_worker
    self.log = log
    self.strategy = strategy or make_strategy()
    self.role = roles.role_of(self.strategy)
    if not (isinstance(jit_compile, bool) or jit_compile == "updates"):
      raise ValueError("Trainer.jit_compile must be one of "
                       f"{JIT_MODES}, got {jit_compile!r}.")
    if jit_compile is True and coordinated_loop.is_parameter_server(
        self.strategy):
      raise ValueError("Trainer.jit_compile=True is not supported with a "
                       "parameter-server strategy (its steps run as closures "
                       "on the workers); set it False or 'updates'.")
    self.jit_compile = jit_compile
    self.window = MovingWindow(source)
    self.total_steps = min(self.window.total_steps,
                           max_steps or self.window.total_steps)
    # Built once: making a dataset traces the source's row function.
    self.eval_dataset = self.window.eval_dataset(eval_batch_size)
    self.writer = ScalarWriter(model_dir, enabled=self.role.chief)
    tf.keras.utils.set_random_seed(seed)
    # Host-side bookkeeping, read and written between loops only: outside
    # the strategy (a string variable cannot be broadcast to workers).
    self.recovery = Recovery()
    if precision not in ("float32", "mixed_bfloat16"):
      raise ValueError("Trainer.precision must be 'float32' or "
                       f"'mixed_bfloat16', got {precision!r}.")
    self.precision = precision
    with self.strategy.scope(), _dtype_policy(precision):
      self.model = build_model(source.schema)
      self.model(source.rows(tf.range(2)))
      self.dense_optimizer = build_optimizer(
          **self._diagnostics_cadence(summary_every_steps))
      self.embedding_optimizer = ScaledAdagrad(
          embedding_learning_rate, clipping="naive", record_diagnostics=False,
          name="embedding_adagrad")
      # Each optimizer compiles its updates where its variables allow it.
      for optimizer in (self.dense_optimizer, self.embedding_optimizer):
        optimizer.fused_update = jit_compile == "updates"
      self.dense_optimizer.build(self.model.dense_variables)
      self.embedding_optimizer.build(self.model.embedding_variables)
      self.monitor = StabilityMonitor(tasks=self.model.tasks)
      self.global_step = tf.Variable(
          0, dtype=tf.int64, trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # Its norms are refreshed on the run's summary steps (a rollback's
      # skipped batches move the step ahead of the optimizer's iterations).
      self.dense_optimizer.diagnostics_clock = self.global_step
      self._loss_sums = {name: tf.Variable(
          0.0, trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                         for name in ("total", "finite_steps") + tuple(
                             t.name for t in self.model.tasks)}
    # The configured learning rates (variables); a rollback may scale them.
    self._rates = [(o, float(o.learning_rate.numpy()))
                   for o in (self.dense_optimizer, self.embedding_optimizer)
                   if isinstance(o.learning_rate, tf.Variable)]
    if self.recovery.lr_factor != 1.0 and len(self._rates) < 2:
      raise ValueError("Recovery.lr_factor needs learning rates held in "
                       "variables; a learning-rate schedule cannot be scaled.")
    if self.recovery.enabled and self.role.num_workers > 1:
      raise ValueError("Recovery.enabled is not supported with several "
                       "workers yet: its restore points and rollbacks are "
                       "written by one process. Train without it, or on one "
                       "machine.")
    self.evaluator = Evaluator(self.model, self.strategy)
    self.dashboard = Dashboard()
    # The dense layers as the diagnostics, the layout and the histograms
    # name them (the optimizer's names, without ":0").
    self._layers = {name.replace(":0", ""): var for name, var in
                    self.dense_optimizer.diagnosed_variables().items()}
    self.sharpness = SharpnessMonitor(self.model, self.dense_optimizer,
                                      self.window)
    counts = self.window.check_eval_day([t.name for t in self.model.tasks],
                                        log, self.eval_dataset)
    for line in self.monitor.set_eval_counts(counts):
      log(line)
    # What a rollback restores, and what a checkpoint holds: that and the
    # recovery's own record, which a rollback must not forget.
    state = dict(model=self.model, dense_optimizer=self.dense_optimizer,
                 embedding_optimizer=self.embedding_optimizer,
                 stability=self.monitor, step=self.global_step)
    self.state = tf.train.Checkpoint(**state)
    self.checkpoint = tf.train.Checkpoint(**state, recovery=self.recovery)
    self.checkpoint_dir = os.path.join(model_dir, "checkpoints")
    self.recovery.attach(self.state, self.global_step, self.checkpoint_dir,
                         self.checkpoint_every, log, writes=self.role.chief)
    self._train_loop = self._make_train_loop()
    self.seconds["setup"] += time.perf_counter() - setup_start

  # -- the compiled loop ------------------------------------------------

  def _gradients(self, batch):
    """One replica's loss, per-task losses, gradients (zero when any is
    non-finite) and whether they were finite."""
    model = self.model
    with tf.GradientTape() as tape:
      total, per_task = model.training_loss(batch, self.window.batch_size)
    grads = tape.gradient(total, model.embedding_variables +
                          model.dense_variables)
    finite = step_is_finite(total, grads)
    return total, per_task, zero_if_nonfinite(finite, grads), finite

  def replica_step(self, batch):
    """One replica's training step: gradients, then both optimizers'
    updates. Returns (loss, per-task losses, 1.0 if the step was skipped
    for non-finite values). With jit_compile=True, XLA compiles all of it
    on a single replica; with several, the gradients only (the updates'
    cross-replica sums run outside)."""
    gradients = self._compiled_gradients or self._gradients
    total, per_task, grads, finite = gradients(batch)
    n_emb = len(self.model.embedding_variables)
    self.embedding_optimizer.apply_gradients(
        zip(grads[:n_emb], self.model.embedding_variables))
    self.dense_optimizer.apply_gradients(
        zip(grads[n_emb:], self.model.dense_variables))
    return total, per_task, tf.cast(~finite, tf.float32)

  def _make_train_loop(self):
    model, strategy = self.model, self.strategy
    tasks = model.tasks
    replica_step = self.replica_step
    self._compiled_gradients = None  # replica_step's gradients, if compiled
    if self.jit_compile is True:
      if strategy.num_replicas_in_sync == 1:
        replica_step = tf.function(replica_step, jit_compile=True)
      else:
        self._compiled_gradients = tf.function(self._gradients,
                                               jit_compile=True)

    def train_step(batch):
      total, per_task, bad = strategy.run(replica_step, args=(batch,))
      total = strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None)
      finite = strategy.reduce(tf.distribute.ReduceOp.SUM, bad, None) == 0
      per_task = [strategy.reduce(tf.distribute.ReduceOp.SUM,
                                  per_task[t.name], None) for t in tasks]
      self.global_step.assign_add(1)
      self.monitor.observe(tf.stack(per_task), self.global_step, finite)
      self._loss_sums["total"].assign_add(tf.where(finite, total, 0.0))
      self._loss_sums["finite_steps"].assign_add(tf.cast(finite, tf.float32))
      for task, value in zip(tasks, per_task):
        self._loss_sums[task.name].assign_add(tf.where(finite, value, 0.0))

    if coordinated_loop.is_parameter_server(strategy):
      return coordinated_loop.CoordinatedLoop(
          strategy, train_step, self.window.train_batch, self._state_finite,
          self.global_step, self.log)

    # No AutoGraph: the loop is written as a tf.while_loop, and what it
    # calls (model, optimizers, monitor) is plain TensorFlow; converting all
    # of that code cost about a second of the first loop's tracing.
    @tf.function(autograph=False)
    def train_loop(iterator, steps):
      def body(i):
        train_step(next(iterator))
        return (i + 1,)
      tf.while_loop(lambda i: i < steps, body,
                    (tf.constant(0, steps.dtype),))
      # The update's result: weights and optimizer slots, once per call.
      return self._state_finite()

    return train_loop

  def _state_variables(self):
    """Weights and both optimizers' variables (slots, diagnostics)."""
    return (list(self.model.variables) +
            list(self.dense_optimizer.variables) +
            list(self.embedding_optimizer.variables))

  @tf.function(autograph=False)
  def _state_finite(self):
    """Whether the whole state (weights, slots) is finite: one compiled
    call for the loop, each save and each restore."""
    return state_is_finite(self._state_variables())

  # -- the run ------------------------------------------------------------

  def run(self) -> Dict:
    """Trains to the end of the schedule (or divergence); returns the
    summary also written to summary.json.

    Raises:
      RuntimeError: another run holds model_dir's lock.
      ValueError: model_dir holds a run with other settings, or
        checkpoints none of which can be restored.
      Preempted: SIGTERM arrived; the current step was checkpointed.
    """
    lock = (integrity.RunLock(self.model_dir, self.log).acquire()
            if self.role.chief else None)
    try:
      with self._stop_on_sigterm():
        return self._run()
    finally:
      self.recovery.close()
      self.role.discard_scratch()
      if lock is not None:
        lock.release()

  def _start(self) -> Optional[str]:
    """Checks the run directory and resumes; returns the checkpoint
    restored. Nothing in model_dir changes before the checks pass."""
    if os.path.exists(self.checkpoint_dir) and not os.path.isdir(
        self.checkpoint_dir):
      raise NotADirectoryError(f"{self.checkpoint_dir} is not a directory; "
                               "the run keeps its checkpoints there.")
    superseded = integrity.check_resume_config(
        self.model_dir, gin.operative_config_str(), self.allow_config_change,
        self.log)
    integrity.check_resume_data(self.model_dir, self.window,
                                self.allow_config_change, self.log)
    chief = self.role.chief
    if chief:
      # The files a run appends to must be writable before anything changes.
      open(os.path.join(self.model_dir, "metrics.jsonl"), "a").close()
      integrity.clean_temporaries(self.model_dir, self.log)
    # Every worker restores the chief's checkpoint (a collective restore);
    # only the chief repairs.
    if self.role.num_workers > 1:
      self._check_same_checkpoints()
    restored = integrity.restore_newest_intact(
        self._restore, self.checkpoint_dir, self.log, repair=chief)
    # The learning rates are optimizer variables, saved in checkpoints: the
    # configured ones win over the restored ones (they differ only when
    # allow_config_change let a new rate through), times the factor of a
    # rollback still in force.
    self._apply_rates()
    if not chief:
      return restored
    if superseded is not None and restored:
      integrity.keep_superseded_config(
          self.model_dir, int(self.global_step.numpy()), superseded, self.log)
    integrity.write_text_atomically(
        os.path.join(self.model_dir, integrity.OPERATIVE_CONFIG),
        gin.operative_config_str())
    # TensorBoard's custom-scalars tab, laid out like the paper's figures.
    self.writer.write_layout("train", int(self.global_step.numpy()),
                             self.dashboard.layout(list(self._layers),
                                                   self.model.tasks))
    integrity.write_json_atomically(
        os.path.join(self.model_dir, integrity.DATA_FINGERPRINT),
        integrity.data_fingerprint(self.window))
    summary = os.path.join(self.model_dir, "summary.json")
    if os.path.exists(summary):
      os.remove(summary)  # stale until this run writes its own
    return restored

  def _apply_rates(self):
    scale = float(self.recovery.lr_scale.numpy())
    for optimizer, rate in self._rates:
      optimizer.learning_rate.assign(rate * scale)

  def _iterator(self, start):
    if coordinated_loop.is_parameter_server(self.strategy):
      return coordinated_loop.StreamPosition(start)
    return iter(self.strategy.distribute_datasets_from_function(
        # A run resumed past a smaller max_steps trains nothing more.
        lambda ctx: self.window.train_dataset(
            start, ctx, max(start, self.total_steps))))

  def _restore(self, prefix: str):
    # Every object of the run must come back: a checkpoint without, say,
    # the optimizer's slots or the monitor's state is not intact.
    self.checkpoint.read(prefix).assert_existing_objects_matched()
    if not bool(self._state_finite()):
      raise ValueError("it holds non-finite values")

  def _run(self) -> Dict:
    restored = self._start()
    start = int(self.global_step.numpy())
    if restored:
      self.log(f"resumed from {restored} at step {start}")
    self.recovery.load(start if restored else None)
    iterator = self._iterator(start)
    # The ends of the training days that are evaluated (every k-th day).
    k = self.eval_every_days
    day_ends = set(int(s) for s in np.cumsum(self.window.steps_per_day)
                   [k - 1::k]) if k else set()
    step, last_eval, results = start, None, None
    last_saved = start if restored else None
    train_seconds, interval_steps = 0.0, 0
    if self.stop_on_divergence and self.monitor.diverged:
      verdict = self.monitor.verdict()
      self.log(f"not training on: the run diverged at step "
               f"{verdict['diverged_at_step']} "
               f"({verdict['divergence_reason']})")
    if start == 0:
      self._measure_sharpness(-1, 0)  # the initial weights
    while step < self.total_steps and not (
        self.stop_on_divergence and self.monitor.diverged):
      if self.recovery.before_loop(step):  # a learning-rate factor ended
        self._apply_rates()
        self.writer.write("recovery", step, {"lr_scale": 1.0})
      n = self._steps_until_boundary(step, day_ends)
      loop_start = time.perf_counter()
      state_finite = bool(self._train_loop(iterator,
                                           tf.constant(n, tf.int64)))
      elapsed = time.perf_counter() - loop_start
      train_seconds += elapsed
      self.seconds["train" if "first_loop" in self.seconds
                   else "first_loop"] += elapsed
      step += n
      interval_steps += n
      if self._crash_due(step - n, step):
        os.kill(os.getpid(), self.crash_signal)
      rolled = self._roll_back_if_needed(state_finite, step, interval_steps,
                                         train_seconds)
      if rolled is None and not state_finite:
        step, last_saved = self._recover_finite_state(step)
        interval_steps = 0
        break
      if rolled is None and self._stop_requested():
        self._write_train(step, interval_steps, train_seconds)
        prefix = self._save(step)
        if step % self.checkpoint_every and self.role.chief:
          self.recovery.persist(step)
        self.writer.flush()
        raise Preempted(step, prefix)
      if rolled is None:
        self._measure_sharpness(step - n, step)
      if rolled is None and (step % self.summary_every == 0 or
                             step == self.total_steps):
        self._write_train(step, interval_steps, train_seconds)
        train_seconds, interval_steps = 0.0, 0
      if rolled is None and (step == self.total_steps or (
          (step % self.eval_every == 0 or step in day_ends) and (
              last_eval is None or step - last_eval >= self.min_eval_gap))):
        results = self._evaluate(step)
        last_eval = step
        rolled = self._roll_back_if_needed(True, step, 0, 0.0)
      if rolled is not None:
        step = last_saved = rolled
        iterator = self._iterator(step)
        last_eval, train_seconds, interval_steps = None, 0.0, 0
        continue
      if step % self.checkpoint_every == 0 or step == self.total_steps:
        self._save(step)
        last_saved = step
      if self.stop_on_divergence and self.monitor.diverged:
        self.log(f"stopping at step {step}: the run has diverged "
                 f"({self.monitor.verdict()['divergence_reason']})")
    if interval_steps:  # the last, partial summary interval
      self._write_train(step, interval_steps, train_seconds)
    if last_eval != step:
      results = self._evaluate(step)
    if last_saved != step:
      self._save(step)
    self.writer.flush()
    return self._write_summary(step, results)

  @staticmethod
  def _diagnostics_cadence(summary_every):
    """The optimizer's norms are computed on the summary steps only (they
    cost passes over every weight), unless gin sets their cadence."""
    try:
      gin.query_parameter("build_optimizer.diagnostics_every")
      return {}
    except ValueError:
      return {"diagnostics_every": summary_every}

  def _measure_sharpness(self, before, step):
    if self.role.chief and self.sharpness.due(before, step):
      self.writer.write("sharpness", step,
                        self.sharpness.measure(step, self.log))

  def _roll_back_if_needed(self, state_finite, step, interval_steps,
                           train_seconds) -> Optional[int]:
    """Asks the recovery policy; on a rollback, records it, saves the
    rolled-back state and returns the step training resumes at."""
    trigger = self.recovery.trigger(self.monitor, state_finite, step)
    if trigger is None:
      return None
    if self.recovery.target_for(trigger[0]) is not None and interval_steps:
      self._write_train(step, interval_steps, train_seconds)  # the spike
    tallies = self.monitor.tallies()  # what happened stays counted
    event = self.recovery.roll_back(*trigger, step, self.total_steps)
    if event is None:
      return None
    self.monitor.restore_tallies(tallies)
    resume = event["resumed_at_step"]
    self._apply_rates()
    for v in self._loss_sums.values():
      v.assign(0.0)
    self.writer.write("recovery", step, {
        "rollbacks": event["rollback"], "spike_step": event["spike_step"],
        "restored_step": event["restored_step"],
        "skipped_batches": self.recovery.skipped_batches(),
        "resumed_at_step": resume,
        "lr_scale": float(self.recovery.lr_scale.numpy())})
    self._save(resume)
    return resume

  def _recover_finite_state(self, step):
    """The update made weights or optimizer state non-finite by `step`:
    back to the newest checkpoint (finite by construction), marked
    diverged. Returns (the step now, the step saved)."""
    self.log(f"non-finite weights or optimizer state after step {step}; "
             "restoring the newest checkpoint")
    restored = integrity.restore_newest_intact(
        self._restore, self.checkpoint_dir, self.log, repair=self.role.chief)
    self.monitor.mark_nonfinite_state(step)
    if restored is None:
      self.log("no checkpoint to restore: the run ends without a finite "
               "state, and none is saved")
      return step, step
    now = int(self.global_step.numpy())
    self.log(f"restored {restored} (step {now})")
    return now, None

  def _crash_due(self, before: int, after: int) -> bool:
    """Whether the fault injection fires in the loop (before, after]."""
    return (self.crash_at_step is not None and
            before < self.crash_at_step <= after and
            self.crash_worker in (None, self.role.index))

  def _stop_requested(self) -> bool:
    """Whether SIGTERM reached this process or, with several workers, any
    of them: they agree at every loop boundary (a one-number all-reduce),
    so all of them checkpoint the same step and stop together."""
    if self.role.num_workers == 1:
      return self._stop_signal is not None
    return float(self._sum_over_replicas(tf.constant(
        [self._stop_signal is not None], tf.float64))[0]) > 0

  def _check_same_checkpoints(self):
    """Every worker must resume from the same checkpoint, or they would
    all-reduce the gradients of different batches (and restoring is itself
    collective): not so when model_dir is not one shared directory. Checked
    on the newest checkpoint each of them sees, before any restore."""
    found = integrity.checkpoint_candidates(self.checkpoint_dir)
    step = found[0][0] if found else -1
    n = self.strategy.num_replicas_in_sync
    total, squares = (float(v) for v in self._sum_over_replicas(
        tf.constant([step, step * step], tf.float64)))
    if n * squares != total * total:
      newest = f"ckpt-{step}" if found else "no checkpoint"
      raise RuntimeError(
          f"the workers see different checkpoints (this one: {newest} in "
          f"{self.checkpoint_dir}): is --model_dir {self.model_dir} one "
          "directory shared by every worker?")

  @tf.function(autograph=False)
  def _sum_over_replicas(self, values):
    per_replica = self.strategy.run(tf.identity, args=(values,))
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                axis=None)

  @contextlib.contextmanager
  def _stop_on_sigterm(self):
    """SIGTERM asks the loop to checkpoint and stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
      yield
      return

    def handler(signum, frame):  # pylint: disable=unused-argument
      self.log("SIGTERM: checkpointing at the end of the current loop")
      self._stop_signal = signum

    previous = signal.signal(signal.SIGTERM, handler)
    try:
      yield
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _steps_until_boundary(self, step, day_ends):
    n = min(self.steps_per_loop, self.total_steps - step)
    for every in (self.summary_every, self.eval_every, self.checkpoint_every):
      n = min(n, every - step % every)
    later = [d - step for d in day_ends if d > step]
    if later:
      n = min(n, min(later))
    if self.crash_at_step is not None and self.crash_at_step > step:
      n = min(n, self.crash_at_step - step)
    if self.recovery.enabled:
      n = min(n, self.recovery.steps_to_boundary(step))
    return max(n, 1)

  @_timed("summaries")
  def _write_train(self, step, steps, elapsed):
    sums = {k: float(v.numpy()) for k, v in self._loss_sums.items()}
    for v in self._loss_sums.values():
      v.assign(0.0)
    # Means over the interval's applied steps (skipped, non-finite steps
    # are counted apart); NaN when every step was skipped.
    finite = sums["finite_steps"]
    scalars = {"loss/total": sums["total"] / finite if finite else math.nan,
               "skipped_steps": steps - finite}
    scalars.update({f"{t.name}/loss": (sums[t.name] / finite if finite
                                       else math.nan)
                    for t in self.model.tasks})
    examples_per_s = steps * self.window.batch_size / max(elapsed, 1e-9)
    scalars["examples_per_second"] = examples_per_s
    scalars["learning_rate"] = float(
        tf.convert_to_tensor(self.dense_optimizer.learning_rate))
    micro, blowups = self.monitor.micro.numpy(), self.monitor.blowups.numpy()
    scalars["micro_divergences"] = int(micro.sum())
    scalars["blowups"] = int(blowups.sum())
    for i, task in enumerate(self.model.tasks):
      scalars[f"{task.name}/micro_divergences"] = int(micro[i])
      scalars[f"{task.name}/blowups"] = int(blowups[i])
    diagnostics = {layer: {k: float(v) for k, v in d.items()}
                   for layer, d in zip(
                       self._layers,
                       self.dense_optimizer.diagnostics().values())}
    # The norms are the last step's on the optimizer's cadence only (the
    # summary steps); at another summary (the run's end, a spike, a
    # preemption) they are an earlier step's, and only sigma is written.
    fresh = self.dense_optimizer.norms_fresh_after(step)
    if not fresh:
      diagnostics = {layer: {"sigma": d["sigma"]}
                     for layer, d in diagnostics.items()}
    min_sigma = min((d["sigma"] for d in diagnostics.values()), default=1.0)
    scalars["clipping/min_sigma"] = min_sigma
    for var, values in diagnostics.items():
      for key, value in values.items():
        scalars[f"diagnostics/{var}/{key}"] = value
    self.writer.write("train", step, scalars)
    if self.writer.enabled:
      # Figure 4b's what-if factors and the histograms: TensorBoard only
      # (the factors follow from the diagnostics in metrics.jsonl).
      if fresh:
        self.writer.write("train", step, self.dashboard.factors(
            diagnostics, scalars["learning_rate"]), to_jsonl=False)
      self.writer.histograms("train", step, self.dashboard.histograms(
          self._layers, [d["sigma"] for d in diagnostics.values()]))
    day = self.window.day_of_step(min(step, self.window.total_steps) - 1)
    per_task = " ".join(f"{t.name} {scalars[f'{t.name}/loss']:.4f}"
                        for t in self.model.tasks)
    self.log(f"day {day} step {step}/{self.total_steps} | "
             f"{examples_per_s:,.0f} ex/s | loss {scalars['loss/total']:.4f} "
             f"({per_task}) | min sigma {min_sigma:.3g}")

  @_timed("eval")
  def _evaluate(self, step):
    results = self.evaluator.evaluate(self.eval_dataset)
    self.monitor.observe_eval(results, step, final=step >= self.total_steps)
    self.writer.write("eval", step, results)
    self.log(f"eval day {self.window.eval_day} at step {step}: "
             f"{headline(results)}")
    return results

  @_timed("checkpoint")
  def _save(self, step) -> Optional[str]:
    if not bool(self._state_finite()):
      self.log(f"not checkpointing step {step}: non-finite weights or "
               "optimizer state")
      return None
    if not self.role.chief:  # its part of the collective save; discarded
      self.checkpoint.write(os.path.join(
          self.role.checkpoint_dir(self.checkpoint_dir), f"ckpt-{step}"))
      self.role.discard_scratch()
      prefix = os.path.join(self.checkpoint_dir, f"ckpt-{step}")
    else:
      prefix = integrity.save_checkpoint(
          self.checkpoint, self.checkpoint_dir, step, keep=3,
          every=self.checkpoint_every)
    if step % self.checkpoint_every == 0:
      self.recovery.clear()  # the disk now holds what a resume knows
    return prefix

  def _write_summary(self, step, results) -> Dict:
    summary = {
        "final_step": step,
        "scheduled_steps": self.total_steps,
        "eval_day": self.window.eval_day,
        # The model's size, for tables that compare models (sweeps/).
        "non_embedding_parameters": self.model.non_embedding_parameters(),
        "final_metrics": results,
        **self.monitor.verdict(),
        "recovery": self.recovery.summary(),
    }
    if not self.role.chief:
      return json.loads(integrity.dumps_strict(summary))
    return integrity.write_json_atomically(
        os.path.join(self.model_dir, "summary.json"), summary)
