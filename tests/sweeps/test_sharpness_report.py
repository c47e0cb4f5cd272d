"""sharpness.md and fig_sharpness.png from hand-made metrics files: the
crossings of 2/eta and the verdicts by hand, and both files byte-for-byte
the same when written again."""

import gzip
import json
import os
import subprocess
import sys

import matplotlib.image
import pytest

from sweeps import sharpness

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _record(step, hessian, preconditioned=None, two_over_eta=100.0):
  record = {"step": step, "split": "sharpness", "sharpness/hessian": hessian,
            "sharpness/hessian_iterations": 7.0,
            "sharpness/two_over_eta": two_over_eta}
  if preconditioned is not None:
    record["sharpness/preconditioned"] = preconditioned
  return record


def _run(root, name, records, summary=None, gz=False):
  directory = root / name
  directory.mkdir()
  # Other splits around the sharpness records, as the trainer writes them.
  lines = [{"step": 25, "split": "train", "loss/total": 1.0}] + records + [
      {"step": 100, "split": "eval", "click/auc": 0.7}]
  text = "".join(json.dumps(r) + "\n" for r in lines)
  if gz:
    with gzip.open(directory / "metrics.jsonl.gz", "wt") as f:
      f.write(text)
  else:
    (directory / "metrics.jsonl").write_text(text)
  if summary is not None:
    (directory / "summary.json").write_text(json.dumps(summary))
  return str(directory)


def _diverged(step):
  return {"diverged": True, "diverged_at_step": step, "final_step": step}


STABLE = {"diverged": False, "diverged_at_step": None, "final_step": 100}


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / "runs"
  root.mkdir()
  return [
      # Preconditioned 40, 90, 130 > 100 at step 75; H crosses at 100;
      # diverged at 90: 15 steps after the crossing. Peak 400 / 100.
      _run(root, "naive", [_record(25, 30, 40), _record(50, 60, 90),
                           _record(75, 80, 130), _record(100, 120, 400)],
           _diverged(90), gz=True),
      # H = -120 at step 25: larger than 2/eta in magnitude, but curving
      # down, so no crossing; never above 2/eta otherwise.
      _run(root, "clippy", [_record(25, -120, 50), _record(50, 40, 80),
                            _record(75, 50, 95)], STABLE),
      # A rollback halved eta at step 50 (2/eta 100 -> 200): 150 is under
      # the new edge; 250 at step 75 crosses; diverged at 60, before it.
      _run(root, "rolled", [_record(25, 20, 50), _record(50, 30, 150, 200.0),
                            _record(75, 40, 250, 200.0)], _diverged(60)),
      # Adam: no preconditioned eigenvalue; a non-finite H is null.
      _run(root, "adam", [
          _record(25, 150), dict(_record(50, None),
                                 nonfinite={"sharpness/hessian": "nan"})],
           _diverged(50)),
      # Still running: no summary.json.
      _run(root, "running", [_record(25, 10, 20)]),
  ]


def test_crossings_and_verdicts_by_hand(runs, tmp_path):
  out = str(tmp_path / "report")
  paths = sharpness.write(runs, out)
  assert paths == [os.path.join(out, "fig_sharpness.png"),
                   os.path.join(out, "sharpness.md")]
  with open(paths[1]) as f:
    rows = [l for l in f.read().splitlines() if l.startswith("| ")][1:]
  assert rows == [
      "| naive | 4 | 75 | 4 | 100 | 1.2 | 90 | yes: 15 steps after the "
      "crossing |",
      "| clippy | 3 | never | 0.95 | never | 0.5 | none | did not diverge |",
      "| rolled | 3 | 75 | 1.25 | never | 0.2 | 60 | no: diverged 15 steps "
      "before the crossing |",
      "| adam | 2 | n/a | n/a | 25 | 1.5 | 50 | n/a: no preconditioned "
      "eigenvalue (not Adagrad) |",
      "| running | 1 | never | 0.2 | never | 0.1 | unknown | unknown: no "
      "summary.json (the run has not ended) |",
  ]
  with open(paths[1]) as f:
    assert "negative ones (curvature downwards winning) measured: clippy " \
        "(1)." in f.read()
  # Three panels a row, two rows; 110 dpi.
  assert matplotlib.image.imread(paths[0]).shape[:2] == (
      round(2 * 3.6 * 110), 3 * 5 * 110)


def test_first_crossing_and_the_same_step():
  assert sharpness.first_crossing([1, 2, 3], [1.0, float("nan"), 3.0],
                                  [2.0, 2.0, 2.0]) == 3
  assert sharpness.first_crossing([1], None, [2.0]) is None
  run = sharpness.RunSharpness("r", [25], [1.0], [300.0], [100.0], True, 25)
  assert sharpness.verdict(run) == "no: diverged at the step of the crossing"
  run.preconditioned = [50.0]
  assert sharpness.verdict(run) == "no: diverged without a measured crossing"


def test_both_files_are_rebuilt_byte_for_byte(runs, tmp_path):
  first = [open(p, "rb").read() for p in sharpness.write(
      runs, str(tmp_path / "a"))]
  second = [open(p, "rb").read() for p in sharpness.write(
      runs, str(tmp_path / "b"))]
  assert first == second
  assert b"Software" not in first[0] and b"matplotlib" not in first[0]


def test_the_entry_point(runs, tmp_path):
  out = str(tmp_path / "cli")
  done = subprocess.run(
      [sys.executable, "-m", "sweeps.sharpness", f"--output_dir={out}"] +
      [f"--run_dir={r}" for r in runs[:2]],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "| naive | 4 | 75 |" in done.stdout
  assert sorted(os.listdir(out)) == ["fig_sharpness.png", "sharpness.md"]
  usage = subprocess.run([sys.executable, "-m", "sweeps.sharpness"],
                         cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert usage.returncode != 0 and "Give --run_dir" in usage.stderr


def test_a_missing_run_directory_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    sharpness.write([str(tmp_path / "nowhere")], str(tmp_path / "out"))
