"""The miniature Table 3 (configs/table3_mini.gin) through the real runner
and table, rerun (nothing left to train), then rebuilt with --report_only."""

import csv
import os
import statistics
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Plan order: every variant at seed 0, then at seed 1.
RUNS = ["clean-s0", "no_dcn-s0", "clean-s1", "no_dcn-s1"]
VARIANTS = {"clean-s0": "clean", "clean-s1": "clean", "no_dcn-s0": "no DCN",
            "no_dcn-s1": "no DCN"}
# configs/tiny.gin on Large+DCN: embeddings 16, widths x1/16 (256x4); the
# synthetic input is 25 embeddings x 16 + 3 x 24 dense columns = 472 wide.
# Four full-rank cross layers 4 x (472^2 + 472) = 893,024, LayerNorm 944,
# bottom 472 x 256 + 256 + 3 x (256^2 + 256) = 318,464, six logits 6 x 257.
PARAMETERS = {"clean": 893_024 + 944 + 318_464 + 6 * 257,
              "no DCN": 318_464 + 6 * 257}


def sweep_command(tmp, *flags):
  return [sys.executable, "-m", "sweeps",
          "--gin_file=configs/table3_mini.gin",
          f"--gin_param=Ablation.runs_dir='{tmp}/runs'",
          f"--gin_param=Ablation.results_dir='{tmp}/results'", *flags]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  # The resume of a killed sweep is the runner's, whatever the sweep:
  # tests/sweeps/test_sweep_run.py kills and reruns the Table 2 miniature.
  tmp = str(tmp_path_factory.mktemp("ablation"))
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.pop("PYTHONPATH", None)
  runs = os.path.join(tmp, "runs", "table3_mini")
  results = os.path.join(tmp, "results", "table3_mini")

  def run(*flags):
    out = subprocess.run(sweep_command(tmp, *flags), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout

  first = run()
  with open(os.path.join(results, "table3.md"), "rb") as f:
    table = f.read()
  with open(os.path.join(results, "runs.csv"), "rb") as f:
    runs_csv = f.read()
  again = run()  # everything finished: nothing to start
  os.remove(os.path.join(results, "table3.md"))
  os.remove(os.path.join(results, "runs.csv"))
  report = run("--report_only")
  return {"runs": runs, "results": results, "out": first, "again": again,
          "table": table, "runs_csv": runs_csv, "report": report}


def started(out):
  return [line.split()[1] for line in out.splitlines()
          if line.strip().startswith("start ")]


def test_every_run_trains_once(sweep):
  assert sorted(started(sweep["out"])) == sorted(RUNS)
  assert "4 runs in all, 0 already finished" in sweep["out"]
  assert "4 runs in all, 4 already finished" in sweep["again"]
  assert started(sweep["again"]) == []
  for name in RUNS:
    with open(os.path.join(sweep["runs"], name, "train.log")) as f:
      assert f.read().count("Next-day metrics") == 1


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_runs_csv_and_table3_agree(sweep):
  rows = read_csv(os.path.join(sweep["results"], "runs.csv"))
  assert [r["run"] for r in rows] == RUNS
  for r in rows:
    assert r["variant"] == VARIANTS[r["run"]]
    assert r["seed"] == r["run"][-1] and r["learning_rate"] == "0.05"
    assert r["method"] == "naive" and r["model"] == "Large+DCN"
    assert r["final_step"] == "40" or r["diverged"] == "True"
  # 0.05 is past naive Adagrad's edge on Large+DCN here.
  assert any(r["diverged"] == "True" for r in rows)
  with open(os.path.join(sweep["results"], "table3.md")) as f:
    lines = f.read().splitlines()
  assert "Large+DCN" in lines[0] and "learning rate 0.05" in lines[0]
  assert "seeds {0, 1}" in lines[0]
  for variant in ("clean", "no DCN"):
    mine = [r for r in rows if r["variant"] == variant]
    diverged = [r for r in mine if r["diverged"] == "True"]
    aucs = [float(r["click/auc"]) for r in mine if r["diverged"] == "False"]
    if len(aucs) == 2:
      auc = (f"{100 * statistics.mean(aucs):.2f} ± "
             f"{100 * statistics.stdev(aucs):.2f}")
    else:
      auc = f"{100 * aucs[0]:.2f} (1 run)" if aucs else "all diverged"
    steps = ", ".join(f"s{r['seed']}: {r['diverged_at_step']}"
                      for r in diverged) or "-"
    line = [l for l in lines if l.startswith(f"| {variant} |")][0]
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert cells == [variant, "2/2", f"{len(diverged)}/2",
                     f"{50 * len(diverged)}%", steps, auc,
                     f"{PARAMETERS[variant]:,d}"]


def test_report_only_rebuilds_the_same_bytes(sweep):
  with open(os.path.join(sweep["results"], "table3.md"), "rb") as f:
    assert f.read() == sweep["table"]
  with open(os.path.join(sweep["results"], "runs.csv"), "rb") as f:
    assert f.read() == sweep["runs_csv"]
  assert started(sweep["report"]) == [] and "runs in all" not in (
      sweep["report"])


def test_every_run_is_collected(sweep):
  collected = os.path.join(sweep["results"], "runs")
  assert sorted(os.listdir(collected)) == sorted(RUNS)
  for name in RUNS:
    assert sorted(os.listdir(os.path.join(collected, name))) == [
        "metrics.jsonl.gz", "operative_config.gin", "run.json",
        "summary.json"]
  with open(os.path.join(collected, "no_dcn-s1",
                         "operative_config.gin")) as f:
    config = f.read()
  assert "build_model.cross_layers = 0\n" in config
  assert "Trainer.seed = 1\n" in config
