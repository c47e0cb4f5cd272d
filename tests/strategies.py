"""Strategies for tests that run several in one process."""

import tensorflow as tf


def two_cpu_replicas() -> tf.distribute.MirroredStrategy:
  """MirroredStrategy over the two logical CPUs (tests/conftest.py).

  Reduces through one device rather than with collective ops: every test
  makes its own strategy, and collective instance keys, which start afresh
  per strategy, clash in one process's collective executor ("Collective
  instance 100 expected type 0 ... got type 2"). The reduction is the same
  sum over replicas.
  """
  return tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"],
      cross_device_ops=tf.distribute.ReductionToOneDevice())
