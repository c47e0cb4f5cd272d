"""Who writes what (ranking/roles.py), for clusters written out by hand."""

import os

from ranking import roles

TWO = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
WITH_CHIEF = {"chief": ["127.0.0.1:0"], "worker": ["127.0.0.1:1",
                                                    "127.0.0.1:2"]}


def _role(task_type, task_id, jobs):
  role = roles.role_in(task_type, task_id, jobs)
  return role.chief, role.name, role.index, role.num_workers


def test_roles_of_the_tasks_of_a_cluster():
  # No cluster (a multi-worker strategy without TF_CONFIG): one process,
  # which writes everything.
  assert _role(None, None, {}) == (True, "chief", 0, 1)
  # Worker 0 is the chief of a cluster without a "chief" job.
  assert _role("worker", 0, TWO) == (True, "chief", 0, 2)
  assert _role("worker", 1, TWO) == (False, "worker 1", 1, 2)
  # With a "chief" job, the workers come after it.
  assert _role("chief", 0, WITH_CHIEF) == (True, "chief", 0, 3)
  assert _role("worker", 0, WITH_CHIEF) == (False, "worker 0", 1, 3)
  assert _role("worker", 1, WITH_CHIEF) == (False, "worker 1", 2, 3)


def test_only_other_workers_get_a_scratch_directory(tmp_path):
  real = str(tmp_path / "run" / "checkpoints")
  chief = roles.role_in("worker", 0, TWO)
  assert chief.checkpoint_dir(real) == real
  other = roles.role_in("worker", 1, TWO)
  scratch = other.checkpoint_dir(real)
  assert not scratch.startswith(str(tmp_path))
  os.makedirs(scratch)
  other.discard_scratch()
  assert not os.path.exists(os.path.dirname(scratch))
  chief.discard_scratch()  # nothing to remove
  assert not os.path.exists(real)
