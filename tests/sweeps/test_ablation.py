"""The Table 3 ablation: its plan, its validation, table3.md from hand-made
results, the entry point's dispatch, and the presets."""

import csv
import json
import os
import subprocess
import sys

import gin
import pytest
import tensorflow as tf

from data.synthetic import SyntheticStream
from ranking import launch
from ranking.model import build_model
from sweeps import kinds as entry
from sweeps import ablation
from sweeps import grid
from sweeps import runner
from sweeps import table3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
VARIANTS = {"clean": [],
            "no DCN": ["build_model.cross_layers = 0"],
            "fewer tasks": ["build_model.tasks = ['click', 'like']",
                            "build_model.width_scale = 0.5"]}


def make_ablation(tmp_path=None, **overrides):
  args = dict(name="hand", model="configs/models/large_dcn.gin",
              model_label="Large+DCN", variants=VARIANTS, learning_rate=0.16,
              seeds=(0, 1))
  if tmp_path is not None:
    args.update(runs_dir=str(tmp_path / "runs"),
                results_dir=str(tmp_path / "results"))
  args.update(overrides)
  with gin.unlock_config():
    return ablation.Ablation(**args)


def names(runs):
  return [r.name for r in runs]


# -- the plan -------------------------------------------------------------------


def test_the_plan_is_every_variant_at_every_seed_seed_by_seed():
  study = make_ablation()
  expected = ["clean-s0", "no_dcn-s0", "fewer_tasks-s0",
              "clean-s1", "no_dcn-s1", "fewer_tasks-s1"]
  assert names(study.plan({})) == expected
  # Results do not change it (every run is known from the start).
  assert names(study.plan({"clean-s0": (0.5, True)})) == expected
  assert study.total_runs() == 6
  assert names(study.runs("no DCN")) == ["no_dcn-s0", "no_dcn-s1"]
  assert study.reference == "clean"


def test_run_files_and_bindings():
  study = make_ablation(run_gin_files=("configs/tiny.gin",),
                        run_gin_params=("Trainer.max_steps = 5",))
  run = ablation.Run("fewer tasks", 1)
  assert run.gin_files(study) == [
      "configs/base.gin", "configs/models/large_dcn.gin",
      "configs/optimizers/naive.gin", "configs/tiny.gin"]
  # The ablation's bindings, the run's rate and seed, the variant's last.
  assert run.gin_params(study) == [
      "Trainer.max_steps = 5", "LEARNING_RATE = 0.16", "Trainer.seed = 1",
      "MovingWindow.seed = 1", "build_model.tasks = ['click', 'like']",
      "build_model.width_scale = 0.5"]
  assert ablation.Run("clean", 0).gin_params(study) == [
      "Trainer.max_steps = 5", "LEARNING_RATE = 0.16", "Trainer.seed = 0",
      "MovingWindow.seed = 0"]
  assert run.spec(study) == {"gin_files": run.gin_files(study),
                             "gin_params": run.gin_params(study)}
  assert run.learning_rate(study) == 0.16
  assert run.settings(study) == {"variant": "fewer tasks",
                                 "model": "Large+DCN", "method": "naive",
                                 "learning_rate": 0.16, "seed": 1}
  gc = make_ablation(method="gc")
  assert run.gin_files(gc)[2] == "configs/optimizers/gc.gin"
  assert make_ablation(model_label=None).model_label == "large_dcn"


@pytest.mark.parametrize("overrides, message", [
    (dict(variants={}), "variants is empty"),
    (dict(variants=["clean"]), "variants must be a {label: "),
    (dict(variants={"clean": None}),
     r"variants\['clean'\] must be a list of gin bindings, not None"),
    (dict(variants={"clean": "build_model.cross_layers = 0"}),
     r"variants\['clean'\] must be a list of gin bindings, not the string"),
    (dict(variants={"clean": [], "odd": ["build_model.cross_layers 0"]}),
     r"variants\['odd'\] 'build_model.cross_layers 0' is not a readable"),
    (dict(variants={"clean": [], "odd": ["include 'configs/tiny.gin'"]}),
     "is not one gin binding"),
    (dict(variants={"clean": [], "odd": [3]}), "is not a gin binding string"),
    (dict(variants={"no DCN": [], "no-dcn": ["a.b = 1"]}), "collide"),
    (dict(variants={"+": []}), "makes no directory name"),
    (dict(variants={"clean": [], "again": []}),
     "'clean' and 'again' have the same bindings"),
    (dict(method="sgd"), "unknown method 'sgd'"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(learning_rate=float("inf")), "learning_rate must be > 0"),
    (dict(seeds=()), "seeds needs at least one value"),
    (dict(seeds=(0, 0)), "seeds has values that coincide"),
    (dict(seeds=(0, 1.5)), "seeds must be whole numbers"),
    (dict(parallel=0), "parallel must be >= 1"),
    (dict(threads_per_run=0), "threads_per_run must be >= 1"),
    (dict(name=""), "name must be a non-empty directory name"),
    (dict(model=""), "model must be a model gin file"),
])
def test_bad_ablations_are_named(overrides, message):
  with pytest.raises(ValueError, match=message) as raised:
    make_ablation(**overrides)
  assert str(raised.value).startswith("Ablation ")


def test_missing_gin_files_are_named(tmp_path):
  path = tmp_path / "a.gin"
  path.write_text("Ablation.name = 'a'\n"
                  "Ablation.model = 'configs/models/huge.gin'\n"
                  "Ablation.variants = {'clean': []}\n"
                  "Ablation.learning_rate = 0.1\n")
  gin.clear_config()
  try:
    with pytest.raises(FileNotFoundError,
                       match="Ablation.model: gin file not found: "
                             "configs/models/huge.gin"):
      ablation.load_ablation([str(path)], [])
  finally:
    gin.clear_config()


# -- table3.md from hand-made results --------------------------------------------


def summary(auc, diverged=False, step=None, parameters=1_213_974):
  return {"diverged": diverged, "diverged_at_step": step,
          "divergence_reason": "loss blew up" if diverged else None,
          "micro_divergences": 0, "final_step": step or 40,
          "scheduled_steps": 40, "non_embedding_parameters": parameters,
          "final_metrics": {"click/auc": auc, "watch_time/rmse": 1.0}}


FOUR = dict(variants={"clean": [], "no DCN": ["build_model.cross_layers = 0"],
                      "smaller": ["build_model.width_scale = 0.5"],
                      "fewer tasks": ["build_model.tasks = ['click']"]},
            seeds=(0, 1, 2, 3))
HAND = {
    # clean: s1 and s3 diverged; the others 0.70, 0.74.
    "clean-s0": summary(0.70),
    "clean-s1": summary(0.50, True, 49),
    "clean-s2": summary(0.74),
    "clean-s3": summary(0.51, True, 300),
    # no DCN: none diverged.
    "no_dcn-s0": summary(0.75, parameters=320_006),
    "no_dcn-s1": summary(0.76, parameters=320_006),
    "no_dcn-s2": summary(0.77, parameters=320_006),
    "no_dcn-s3": summary(0.80, parameters=320_006),
    # smaller: s2 diverged, s3 ended with a non-finite AUC (null).
    "smaller-s0": summary(0.70, parameters=None),
    "smaller-s1": summary(0.80, parameters=None),
    "smaller-s2": summary(0.5, True, 120, parameters=None),
    "smaller-s3": summary(None, parameters=None),
    # fewer tasks: 3 of 4 finished, all diverged.
    "fewer_tasks-s0": summary(0.5, True, 10),
    "fewer_tasks-s1": summary(0.5, True, 20),
    "fewer_tasks-s2": summary(0.5, True, None),
}


def table_rows(md):
  return {line.split(" | ")[0].strip("| "):
          [c.strip() for c in line.strip().strip("|").split("|")]
          for line in md.splitlines() if line.startswith("| ")}


def test_table3_numbers():
  study = make_ablation(**FOUR)
  md = table3.markdown(study, HAND)
  rows = table_rows(md)
  assert rows["Variant"] == [
      "Variant", "Runs finished", "Diverged", "Divergence rate",
      "Diverged at step", "click AUC (%)", "Dense parameters"]
  # clean: 2 of 4 diverged = 50%; AUC (0.70, 0.74): mean 72.00, sample std
  # sqrt((0.02^2 + 0.02^2) / 1) = 0.02828 -> 2.83 points.
  assert rows["clean"][1:] == ["4/4", "2/4", "50%", "s1: 49, s3: 300",
                               "72.00 ± 2.83", "1,213,974"]
  # no DCN: (0.75, 0.76, 0.77, 0.80): mean 0.77, deviations -2, -1, 0, 3
  # points, sample std sqrt(14 / 3) = 2.16 points.
  assert rows["no DCN"][1:] == ["4/4", "0/4", "0%", "-", "77.00 ± 2.16",
                                "320,006"]
  # smaller: 1 of 4 = 25%; (0.70, 0.80): 75.00 ± 7.07; one non-finite.
  assert rows["smaller"][1:] == ["4/4", "1/4", "25%", "s2: 120",
                                 "75.00 ± 7.07 (1 non-finite)", "?"]
  # fewer tasks: 3 of 4 finished, 3 of 3 diverged = 100%.
  assert rows["fewer tasks"][1:] == ["3/4", "3/3", "100%",
                                     "s0: 10, s1: 20, s2: ?", "all diverged",
                                     "1,213,974"]
  header = md.splitlines()[0]
  assert header.startswith("Table 3 (hand): divergence rate of Large+DCN "
                           "(configs/models/large_dcn.gin) trained with Naive")
  assert "learning rate 0.16, seeds {0, 1, 2, 3}" in header
  assert "the trainer's stability monitor" in header
  assert "summary.json's \"diverged\"" in header
  assert "- fewer tasks: `build_model.tasks = ['click']`" in md
  assert "- clean: none" in md


def test_one_of_three_and_single_runs():
  study = make_ablation(variants={"clean": []}, seeds=(0, 1, 2))
  results = {"clean-s0": summary(0.70), "clean-s1": summary(0.5, True, 7),
             "clean-s2": summary(0.5, True, 8)}
  row = table_rows(table3.markdown(study, results))["clean"]
  # 2/3 = 66.7% -> 67%; one run left: no std.
  assert row[1:6] == ["3/3", "2/3", "67%", "s1: 7, s2: 8", "70.00 (1 run)"]
  row = table_rows(table3.markdown(study, {}))["clean"]
  assert row[1:6] == ["0/3", "0/0", "n/a", "-", "missing"]


def write_collected(study, results):
  for name, s in results.items():
    run = next(r for r in study.plan({}) if r.name == name)
    directory = runner.collected_dir(study, name)
    os.makedirs(directory)
    with open(os.path.join(directory, "summary.json"), "w") as f:
      json.dump(s, f)
    with open(os.path.join(directory, "run.json"), "w") as f:
      json.dump(run.spec(study), f)


def test_report_is_rebuilt_byte_for_byte(tmp_path):
  study = make_ablation(tmp_path, **FOUR)
  write_collected(study, HAND)
  paths = table3.report(study, log=lambda s: None)
  first = [open(p, "rb").read() for p in paths]
  assert [os.path.basename(p) for p in paths] == ["runs.csv", "table3.md"]
  assert first[1].decode() == table3.markdown(study, HAND)
  for p in paths:
    os.remove(p)
  again = table3.report(study, log=lambda s: None)
  assert [open(p, "rb").read() for p in again] == first
  with open(paths[0]) as f:
    rows = list(csv.DictReader(f))
  # Plan order (seed after seed), only the finished runs.
  assert [r["run"] for r in rows][:5] == [
      "clean-s0", "no_dcn-s0", "smaller-s0", "fewer_tasks-s0", "clean-s1"]
  assert len(rows) == 15
  assert rows[1]["variant"] == "no DCN" and rows[1]["seed"] == "0"
  assert rows[1]["learning_rate"] == "0.16" and rows[1]["method"] == "naive"
  assert list(rows[0])[:6] == ["run", "variant", "model", "method",
                               "learning_rate", "seed"]


def test_report_refuses_runs_with_other_settings(tmp_path):
  study = make_ablation(tmp_path, **FOUR)
  write_collected(study, HAND)
  # The rate changed after the runs (say, after the calibration).
  other = make_ablation(tmp_path, **dict(FOUR, learning_rate=0.2))
  with pytest.raises(ValueError, match="15 runs were started with other "
                                       "settings; give the sweep another "
                                       "Ablation.name"):
    table3.report(other, log=lambda s: None)
  with pytest.raises(FileNotFoundError, match="No finished runs"):
    table3.report(make_ablation(tmp_path, name="empty"), log=lambda s: None)


def test_the_runner_collects_an_ablation(tmp_path):
  # A run that finished while no runner watched: collected, listed in
  # runs.csv; nothing is started (max_new_runs=0).
  study = make_ablation(tmp_path, variants={"clean": []}, seeds=(0,))
  source = os.path.join(study.runs_dir, "hand", "clean-s0")
  os.makedirs(source)
  with open(os.path.join(source, "summary.json"), "w") as f:
    json.dump(summary(0.7), f)
  with open(os.path.join(source, "metrics.jsonl"), "w") as f:
    f.write('{"step": 10}\n')
  lines = []
  done = runner.run_sweep(study, log=lines.append, max_new_runs=0)
  assert list(done) == ["clean-s0"]
  assert "1 runs in all, 1 already finished" in lines[0]
  target = runner.collected_dir(study, "clean-s0")
  assert sorted(os.listdir(target)) == ["metrics.jsonl.gz", "summary.json"]
  with open(os.path.join(study.results_dir, "hand", "runs.csv")) as f:
    assert [r["run"] for r in csv.DictReader(f)] == ["clean-s0"]


# -- the entry point -------------------------------------------------------------


def test_dispatch_on_what_the_gin_files_bind(tmp_path):
  assert entry.kind_of(["configs/table2_mini.gin"], []) == "Sweep"
  assert entry.kind_of(["configs/table3_mini.gin"], []) == "Ablation"
  # Through an include, and through --gin_param.
  assert entry.kind_of(["configs/table3_cpu_calibration.gin"], []) == "Sweep"
  both = tmp_path / "both.gin"
  both.write_text("include 'configs/table2_mini.gin'\n"
                  "Ablation.name = 'x'\n")
  with pytest.raises(ValueError, match="binds both Sweep and Ablation"):
    entry.kind_of([str(both)], [])
  with pytest.raises(ValueError, match="binds both Sweep and Ablation"):
    entry.kind_of(["configs/table2_mini.gin"], ["Ablation.seeds = (0,)"])
  with pytest.raises(ValueError, match="large_dcn_naive.gin: binds neither "
                                       "Sweep .* nor Ablation"):
    entry.kind_of(["configs/large_dcn_naive.gin"], [])
  gin.clear_config()
  try:
    assert isinstance(entry.load(["configs/table3_mini.gin"], []),
                      ablation.Ablation)
    gin.clear_config()
    assert isinstance(entry.load(["configs/table2_mini.gin"], []),
                      grid.Sweep)
  finally:
    gin.clear_config()


def run_entry(*args):
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.pop("PYTHONPATH", None)
  return subprocess.run([sys.executable, "-m", "sweeps", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_the_entry_point_names_what_it_cannot_run():
  out = run_entry("--gin_file=configs/large_dcn_naive.gin")
  assert out.returncode != 0
  assert ("configs/large_dcn_naive.gin: binds neither Sweep (a Table 2 "
          "grid, e.g. configs/table2_cpu.gin) nor Ablation (a Table 3 "
          "ablation, e.g. configs/table3_cpu.gin)") in out.stderr
  out = run_entry("--gin_file=configs/table3_mini.gin", "--rejudge")
  assert out.returncode != 0
  assert "--rejudge re-judges Table 2 sweeps (Sweep) only" in out.stderr


# -- the presets -------------------------------------------------------------------


def load_preset(path):
  gin.clear_config()
  try:
    return entry.load([path], [])
  finally:
    gin.clear_config()


def test_the_cpu_preset_is_the_paper_ablation():
  study = load_preset("configs/table3_cpu.gin")
  assert isinstance(study, ablation.Ablation)
  assert study.model == "configs/models/large_dcn.gin"
  assert study.method == "naive" and study.seeds == (0, 1, 2, 3)
  assert study.run_gin_files == ("configs/table2/cpu_runs.gin",)
  assert list(study.variants) == [
      "clean", "smaller model", "no DCN", "fewer input features",
      "one fewer task", "two fewer tasks"]
  assert study.variants["clean"] == ()
  assert study.total_runs() == 24
  calibration = load_preset("configs/table3_cpu_calibration.gin")
  assert isinstance(calibration, grid.Sweep)
  assert calibration.models == {"Large+DCN": "configs/models/large_dcn.gin"}
  assert calibration.methods == ("clippy",)
  assert calibration.learning_rate == 0.01
  assert calibration.lr_multipliers == (1, 2, 4, 8, 16, 32, 64, 128)
  assert calibration.seeds == (0,)
  assert calibration.threshold_search_model is None
  assert calibration.total_runs() == 8


def _count(width, bottom, tasks, cross_layers):
  """Non-embedding parameters from the widths alone: full-rank cross
  layers w x w + w and a LayerNorm 2w, the MLP, one logit per task."""
  count = cross_layers * (width * width + width) + (
      2 * width if cross_layers else 0)
  previous = width
  for w in bottom:
    count += previous * w + w
    previous = w
  return count + tasks * (previous + 1)


# cpu_runs.gin: embeddings 16, widths x1/8 (Large+DCN 512x4). The synthetic
# schema embeds 25 categorical features and has 3 x 24 dense columns: input
# 25 x 16 + 72 = 472.
CPU_COUNTS = {
    "clean": _count(472, [512] * 4, 6, 4),
    "smaller model": _count(472, [256] * 4, 6, 4),
    "no DCN": _count(472, [512] * 4, 6, 0),
    "fewer input features": _count(472 - 11 * 16, [512] * 4, 6, 4),
    "one fewer task": _count(472, [512] * 4, 5, 4),
    "two fewer tasks": _count(472, [512] * 4, 4, 4),
}


def test_every_cpu_variant_builds_the_model_it_says():
  study = load_preset("configs/table3_cpu.gin")
  for variant in study.variants:
    run = study.runs(variant)[0]
    gin.clear_config()
    try:
      launch.parse_gin(run.gin_files(study), run.gin_params(study))
      stream = SyntheticStream(num_days=2, examples_per_day=4)
      model = build_model(stream.schema)
      model(stream.rows(tf.range(2)))
    finally:
      gin.clear_config()
    assert model.non_embedding_parameters() == CPU_COUNTS[variant], variant
  tasks = {"one fewer task": ["click", "like", "share", "comment",
                              "watch_time"],
           "two fewer tasks": ["click", "like", "share", "watch_time"]}
  for variant, expected in tasks.items():
    assert study.variants[variant] == (f"build_model.tasks = {expected!r}",)
