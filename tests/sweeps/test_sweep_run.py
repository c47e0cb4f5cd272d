"""The 2x2 miniature grid (configs/table2_mini.gin) through the real runner,
table, figures and claims: killed midway, then rerun to completion."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUNS = ["small-naive-lr1x-s0", "small-naive-lr2x-s0", "small-clippy-lr1x-s0",
        "small-clippy-lr2x-s0"]


def sweep_command(tmp, parallel):
  return [sys.executable, "-m", "sweeps",
          "--gin_file=configs/table2_mini.gin",
          f"--gin_param=Sweep.runs_dir='{tmp}/runs'",
          f"--gin_param=Sweep.results_dir='{tmp}/results'",
          f"--gin_param=Sweep.parallel={parallel}",
          # An evaluation every 2 steps makes steps 20-40 last long enough
          # (~1 s) for the kill to land between them: at 40 tiny steps in
          # well under the 0.2 s poll a quiet machine finished the run first.
          "--gin_param=Sweep.run_gin_params=['Trainer.max_steps = 40', "
          "'Trainer.checkpoint_every_steps = 20', "
          "'Trainer.summary_every_steps = 5', "
          "'Trainer.eval_every_steps = 2']"]


def wait_for(predicate, process, what, timeout=300):
  deadline = time.monotonic() + timeout
  while not predicate():
    if process.poll() is not None:
      raise AssertionError(f"the sweep exited ({process.returncode}) before "
                           f"{what}:\n{process.stdout.read()}")
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("sweep"))
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.pop("PYTHONPATH", None)
  runs = os.path.join(tmp, "runs", "table2_mini")
  results = os.path.join(tmp, "results", "table2_mini")
  # One run at a time; kill the sweep (SIGKILL: no clean-up) once the first
  # run has finished and the second has checkpointed step 20 of 40.
  first = subprocess.Popen(sweep_command(tmp, 1), cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  wait_for(lambda: os.path.exists(
      os.path.join(results, "runs", RUNS[0], "summary.json")), first,
      "the first run finished")
  wait_for(lambda: os.path.exists(os.path.join(
      runs, RUNS[1], "checkpoints", "ckpt-20.index")), first,
      "the second run checkpointed")
  first.send_signal(signal.SIGKILL)
  first.wait()
  # The killed sweep's training dies with it (it would race the rerun).
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:
    alive = subprocess.run(["pgrep", "-f", f"{runs}/{RUNS[1]}"],
                           capture_output=True, text=True).stdout.split()
    if not alive:
      break
    time.sleep(0.2)
  assert not alive, "the killed sweep left its training running"
  assert not os.path.exists(os.path.join(runs, RUNS[1], "summary.json"))
  # Its training got SIGTERM (PDEATHSIG) and checkpointed where it was.
  stopped_at = max(int(name[len("ckpt-"):-len(".index")]) for name in
                   os.listdir(os.path.join(runs, RUNS[1], "checkpoints"))
                   if name.startswith("ckpt-") and name.endswith(".index"))
  assert 20 <= stopped_at < 40
  rerun = subprocess.run(sweep_command(tmp, 2), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  return {"runs": runs, "results": results, "out": rerun.stdout,
          "stopped_at": stopped_at}


def test_rerun_finishes_only_the_missing_runs(sweep):
  out = sweep["out"]
  assert "4 runs in all, 1 already finished" in out
  started = [line.split()[1] for line in out.splitlines()
             if line.strip().startswith("start")]
  assert sorted(started) == sorted(RUNS[1:])
  assert f"start  {RUNS[1]} (resuming)" in out
  with open(os.path.join(sweep["runs"], RUNS[0], "train.log")) as f:
    assert f.read().count("Next-day metrics") == 1  # trained once
  with open(os.path.join(sweep["runs"], RUNS[1], "train.log")) as f:
    log = f.read()
  assert f"preempted (SIGTERM) at step {sweep['stopped_at']}" in log
  assert "resumed from" in log and f"at step {sweep['stopped_at']}" in log


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_runs_csv_and_table_agree(sweep):
  rows = {r["run"]: r for r in read_csv(
      os.path.join(sweep["results"], "runs.csv"))}
  assert sorted(rows) == sorted(RUNS)
  assert all(r["final_step"] in ("40",) or r["diverged"] == "True"
             for r in rows.values())
  with open(os.path.join(sweep["results"], "table2.md")) as f:
    table = f.read()
  for method, label in (("naive", "Naive"), ("clippy", "Clippy")):
    one, two = rows[f"small-{method}-lr1x-s0"], rows[f"small-{method}-lr2x-s0"]
    # The picked rate: higher AUC, a diverged run ranking last.
    key = lambda r: (r["diverged"] == "False", float(r["click/auc"]))
    best = max((one, two), key=key)
    line = [l for l in table.splitlines() if l.startswith(f"| {label} |")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == f"{best['lr_multiplier'].rstrip('0').rstrip('.')}x"
    if best["diverged"] == "True":
      assert cells[2] == "diverged"
    else:
      assert cells[2] == f"{100 * float(best['click/auc']):.2f} (1 seed)"
      assert cells[3] == f"{float(best['watch_time/rmse']):.4f} (1 seed)"


def test_figures_and_claims_are_written(sweep):
  rows = read_csv(os.path.join(sweep["results"], "runs.csv"))
  expected = ["fig5_auc_curves.png", "fig6_clippy_sigma.png"]
  if any(r["method"] == "naive" and r["diverged"] == "True" for r in rows):
    expected.append("fig4b_naive_diverging.png")
  for name in expected:
    with open(os.path.join(sweep["results"], name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(sweep["results"], "claims.md")) as f:
    lines = [l for l in f.read().splitlines() if l[:2] in
             ("1.", "2.", "3.", "4.", "5.")]
  assert len(lines) == 5
  assert all(("HOLDS" in l) or ("FAILS" in l) or ("UNDECIDED" in l)
             for l in lines)
  # Claim 4 needs GC, which the miniature grid does not run.
  assert "UNDECIDED" in lines[3]
  collected = os.listdir(os.path.join(sweep["results"], "runs"))
  assert sorted(collected) == sorted(RUNS)
