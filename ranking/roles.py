"""Who writes what when several processes train one job.

Under MultiWorkerMirroredStrategy every worker runs train.py, the same
program on its slice of each global batch. The chief (task "chief", or
worker 0 of a cluster without one) is the only one that writes into
model_dir: the lock, operative_config.gin, the data fingerprint, the
TensorBoard logs, metrics.jsonl, summary.json and the checkpoints. A
checkpoint must still be written by every worker, because reading
synchronised variables (the metrics' counts) is a collective op all of them
take part in; the others write theirs into a temporary directory of their
own, removed right after each save and at the end of the run.

Everything that decides the control flow (evaluations, saves, stops) stays
the same on every worker: a collective that one worker skips would leave
the others waiting for it. Under any other strategy the one process is the
chief.
"""

import os
import shutil
import tempfile
from typing import Dict, List, Optional

import tensorflow as tf


class Role:
  """This process's part in the job.

  Attributes:
    chief: whether it writes the job's outputs.
    name: "chief", or e.g. "worker 1" (for log lines).
    index: its index among the workers (the chief's is 0).
    num_workers: processes that train (1 unless multi-worker).
  """

  def __init__(self, chief: bool = True, name: str = "chief", index: int = 0,
               num_workers: int = 1):
    self.chief, self.name, self.num_workers = chief, name, num_workers
    self.index = index
    self._scratch: Optional[str] = None

  def checkpoint_dir(self, real: str) -> str:
    """Where this process writes checkpoints: `real` for the chief, else a
    temporary directory of its own (created on first use)."""
    if self.chief:
      return real
    if self._scratch is None:
      self._scratch = tempfile.mkdtemp(
          prefix=f"ranking-{self.name.replace(' ', '')}-")
    return os.path.join(self._scratch, "checkpoints")

  def discard_scratch(self):
    """Removes what this worker wrote into its temporary directory."""
    if self._scratch is not None:
      shutil.rmtree(self._scratch, ignore_errors=True)
      self._scratch = None


def role_of(strategy: tf.distribute.Strategy) -> Role:
  """The role of this process under `strategy` (see the module doc)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return Role()
  resolver = strategy.cluster_resolver
  return role_in(resolver.task_type, resolver.task_id,
                 resolver.cluster_spec().as_dict())


def role_in(task_type: Optional[str], task_id: Optional[int],
            jobs: Dict[str, List[str]]) -> Role:
  """The role of task (task_type, task_id) of the cluster `jobs` ({job:
  [addresses]}); no cluster (a multi-worker strategy without TF_CONFIG) is
  one process, the chief."""
  if not jobs:
    return Role()
  task_id = int(task_id or 0)
  num_workers = len(jobs.get("worker", ())) + len(jobs.get("chief", ()))
  chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                   and "chief" not in jobs)
  # Workers after the chief, if the cluster has one.
  index = task_id + ("chief" in jobs and task_type == "worker")
  return Role(chief, "chief" if chief else f"{task_type} {task_id}", index,
              num_workers)
