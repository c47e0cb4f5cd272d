"""Jobs of several local processes for the distribution tests: free ports on
127.0.0.1, one TF_CONFIG per task."""

import json
import os
import socket
import subprocess
import sys
from typing import Dict, List, Sequence

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n: int) -> List[int]:
  """n ports on 127.0.0.1 that nothing listens on now."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def cluster(**jobs: int) -> Dict[str, List[str]]:
  """{"worker": ["127.0.0.1:port", ...], ...} with `jobs` tasks per job."""
  ports = iter(free_ports(sum(jobs.values())))
  return {job: [f"127.0.0.1:{next(ports)}" for _ in range(n)]
          for job, n in jobs.items()}


def tf_config(spec: Dict[str, List[str]], job: str, index: int) -> str:
  return json.dumps({"cluster": spec, "task": {"type": job, "index": index}})


def train_workers(model_dir: str, gin_files: Sequence[str],
                  params: Sequence[str], num_workers: int, scratch: str,
                  timeout: int = 600, model_dirs: Sequence[str] = ()
                  ) -> List[subprocess.CompletedProcess]:
  """Runs train.py as `num_workers` workers of one job (multi-worker
  mirrored); returns each worker's completed process (with its `pid`), in
  task order. Each worker's temporary directory is `scratch`; worker i's
  --model_dir is model_dirs[i] if given (a directory that is not shared).
  """
  spec = cluster(worker=num_workers)
  args = [sys.executable, os.path.join(ROOT, "train.py")]
  args += [f"--gin_file={f}" for f in gin_files]
  args += [f"--gin_param={p}" for p in
           ["make_strategy.kind = 'multi_worker'"] + list(params)]
  workers = []
  for i in range(num_workers):
    env = dict(os.environ, TF_CONFIG=tf_config(spec, "worker", i),
               TMPDIR=scratch)
    directory = model_dirs[i] if model_dirs else model_dir
    workers.append(subprocess.Popen(
        args + [f"--model_dir={directory}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  done = []
  for worker in workers:
    out, err = worker.communicate(timeout=timeout)
    done.append(subprocess.CompletedProcess(worker.args, worker.returncode,
                                            out, err))
    done[-1].pid = worker.pid
  return done


def checkpoint_weights(model_dir: str, step: int) -> Dict[str, object]:
  """The trained weights in checkpoint ckpt-`step` of a run: the variables
  the two optimizers update, by their checkpoint keys."""
  reader = tf.train.load_checkpoint(
      os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if "_scaled_variables/" in k}
