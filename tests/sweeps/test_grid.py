"""The Table 2 protocol: which runs a sweep asks for, given results so far."""

import gin
import pytest

from sweeps import grid


def make_sweep(**overrides):
  args = dict(name="t", models={"Small": "configs/models/small.gin",
                                "Large+DCN": "configs/models/large_dcn.gin"},
              methods=("naive", "gc", "clippy"), learning_rate=0.1,
              lr_multipliers=(1, 2), seeds=(0, 1, 2),
              thresholds={"gc": (1e-1, 1e-2, 1e-3)})
  args.update(overrides)
  with gin.unlock_config():
    return grid.Sweep(**args)


def names(runs):
  return [r.name for r in runs]


def test_first_plan_is_the_selection_runs_at_the_first_seed():
  sweep = make_sweep()
  runs = grid.plan(sweep, {})
  # Per model: naive 2 + gc 3x2 + clippy 2 = 10 selection runs; no seeds yet.
  assert len(runs) == 20
  assert {r.seed for r in runs} == {0}
  assert "small-gc-1e-02-lr2x-s0" in names(runs)
  assert "large_dcn-clippy-lr1x-s0" in names(runs)


def test_best_setting_gets_the_other_seeds():
  sweep = make_sweep(methods=("clippy",), models={"Small": "m.gin"})
  results = {"small-clippy-lr1x-s0": (0.70, False),
             "small-clippy-lr2x-s0": (0.72, False)}
  runs = grid.plan(sweep, results)
  assert names(runs) == ["small-clippy-lr1x-s0", "small-clippy-lr2x-s0",
                         "small-clippy-lr2x-s1", "small-clippy-lr2x-s2"]
  assert [r.stage for r in runs] == ["select", "select", "seed", "seed"]


def test_a_diverged_run_ranks_below_any_that_did_not():
  sweep = make_sweep(methods=("naive",), models={"Small": "m.gin"})
  # 2x has the higher (last) AUC but diverged: 1x is picked.
  results = {"small-naive-lr1x-s0": (0.60, False),
             "small-naive-lr2x-s0": (0.65, True)}
  best, runs = grid.table_runs(sweep, "Small", "naive", results)
  assert best.lr_multiplier == 1
  assert names(runs)[1:] == ["small-naive-lr1x-s1", "small-naive-lr1x-s2"]


def test_when_every_rate_diverged_the_lowest_is_picked():
  sweep = make_sweep(methods=("naive",), models={"Small": "m.gin"})
  results = {"small-naive-lr1x-s0": (0.49, True),
             "small-naive-lr2x-s0": (0.50, True)}
  best, _ = grid.table_runs(sweep, "Small", "naive", results)
  assert best.lr_multiplier == 1


def test_no_seeds_until_every_selection_run_has_finished():
  sweep = make_sweep(methods=("gc",), models={"Small": "m.gin"})
  results = {"small-gc-1e-01-lr1x-s0": (0.9, False)}
  assert all(r.stage == "select" for r in grid.plan(sweep, results))


def test_threshold_searched_on_one_model_is_reused():
  sweep = make_sweep(methods=("gc",), threshold_search_model="Small")
  first = grid.plan(sweep, {})
  # Large+DCN waits for Small's search.
  assert {r.model for r in first} == {"Small"} and len(first) == 6
  results = {r.name: (0.7, False) for r in first}
  results["small-gc-1e-03-lr1x-s0"] = (0.8, False)
  runs = grid.plan(sweep, results)
  large = [r for r in runs if r.model == "Large+DCN"]
  assert names(large) == ["large_dcn-gc-1e-03-lr1x-s0",
                          "large_dcn-gc-1e-03-lr2x-s0"]
  assert sweep.total_runs() == (6 + 2) + (2 + 2)


def test_total_runs_counts_the_whole_protocol():
  sweep = make_sweep()
  # Per model: naive 2+2, gc 6+2, clippy 2+2 = 16.
  assert sweep.total_runs() == 32
  results = {}
  while True:  # play the protocol out with made-up results
    missing = [r for r in grid.plan(sweep, results) if r.name not in results]
    if not missing:
      break
    for r in missing:
      results[r.name] = (0.5 + 0.01 * len(results), False)
  assert len(results) == 32


def test_run_bindings():
  sweep = make_sweep(run_gin_params=("Trainer.max_steps = 5",),
                     run_gin_files=("configs/tiny.gin",))
  run = grid.Run("Small", "gc", 1e-2, 2.0, 1, "seed")
  assert run.gin_files(sweep) == [
      "configs/base.gin", "configs/models/small.gin",
      "configs/optimizers/gc.gin", "configs/tiny.gin"]
  assert run.gin_params(sweep) == [
      "Trainer.max_steps = 5", "LEARNING_RATE = 0.2", "Trainer.seed = 1",
      "MovingWindow.seed = 1", "build_optimizer.clip_norm = 0.01"]


def test_a_method_with_its_own_rate_binds_the_dense_optimizer_only():
  sweep = make_sweep(methods=("naive", "spam"), learning_rates={"spam": 1e-3})
  spam = grid.Run("Small", "spam", None, 2.0, 0, "select")
  assert spam.learning_rate(sweep) == 2e-3
  # Embeddings (LEARNING_RATE) keep the sweep's Adagrad rate.
  assert spam.gin_params(sweep)[0] == "LEARNING_RATE = 0.2"
  assert spam.gin_params(sweep)[-1] == "build_optimizer.learning_rate = 0.002"
  naive = grid.Run("Small", "naive", None, 2.0, 0, "select")
  assert naive.learning_rate(sweep) == 0.2
  assert not any(p.startswith("build_optimizer.learning_rate")
                 for p in naive.gin_params(sweep))


@pytest.mark.parametrize("overrides, message", [
    (dict(methods=("naive", "sgd")), "unknown methods"),
    (dict(learning_rates={"adam": 1e-3}), "not one of the methods"),
    (dict(learning_rates={"gc": 0.0}), r"learning_rates\['gc'\] must be > 0"),
    (dict(thresholds={"clippy": (0.1,)}), "no threshold to search"),
    (dict(threshold_search_model="Medium"), "not one of the models"),
    (dict(seeds=()), "at least one value"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(models={"Large DCN": "a.gin", "large-dcn": "b.gin"}), "collide"),
])
def test_bad_sweeps_are_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    make_sweep(**overrides)


def test_slug():
  assert grid.slug("Large+DCN") == "large_dcn"
  assert grid.slug("Small") == "small"
