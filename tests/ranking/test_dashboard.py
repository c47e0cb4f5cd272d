"""The TensorBoard a run writes (ranking/dashboard.py): the custom-scalars
layout read back from the event files and matched against the tags the run
wrote; the what-if factors by hand; the histograms."""

import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as layout_metadata

from ranking import dashboard
from ranking.what_if import what_if_factors
from tests.runs import train


def read_events(directory):
  """{tag: [(step, value or histogram or layout bytes)]} of a run split."""
  out = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        plugin = value.metadata.plugin_data.plugin_name
        array = tf.make_ndarray(value.tensor)
        out.setdefault(value.tag, []).append((event.step, plugin, array))
  return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("dashboard"))
  sizes, order = {}, []

  def record_sizes(trainer):
    sizes.update({name.replace(":0", ""): int(np.prod(v.shape)) for name, v
                  in trainer.dense_optimizer.diagnosed_variables().items()})
    order.extend(sizes)

  summary, _ = train(model_dir, ["Trainer.max_steps = 40"],
                     trainer_hook=record_sizes)
  assert summary["final_step"] == 40
  return {"dir": model_dir, "sizes": sizes, "layer_order": order,
          "train": read_events(os.path.join(model_dir, "train")),
          "eval": read_events(os.path.join(model_dir, "eval"))}


def layout_of(events) -> layout_pb2.Layout:
  (step, plugin, content), = events[layout_metadata.CONFIG_SUMMARY_TAG]
  assert plugin == layout_metadata.PLUGIN_NAME and step == 0
  layout = layout_pb2.Layout()
  layout.ParseFromString(content.item())
  return layout


def matching(chart, tags):
  return sorted(t for t in tags
                if any(re.search(p, t) for p in chart.multiline.tag))


def test_the_layout_charts_the_paper_figures_from_the_written_tags(run):
  layout = layout_of(run["train"])
  titles = [c.title for c in layout.category]
  train_tags = {t for t, points in run["train"].items()
                if points[0][1] == "scalars"}
  eval_tags = {t for t, points in run["eval"].items()}
  layers = {t.split("/", 1)[1].rsplit("/", 1)[0] for t in train_tags
            if t.startswith("diagnostics/")}
  assert len(layers) == 16  # Small: 2 bottom + 6 task heads, kernel + bias
  # A section per layer, in the optimizer's order (input side first).
  assert sorted(layers) == sorted(run["layer_order"])
  assert titles == (["Figure 6: clipping factor sigma, every layer",
                     "Figure 5: next-day metrics per task"] +
                    [f"Figure 4b: {layer}" for layer in run["layer_order"]] +
                    ["Stability"])
  categories = {c.title: c for c in layout.category}

  # Figure 6: one chart holds the sigma of every layer.
  sigma = layout.category[0].chart[0]
  assert matching(sigma, train_tags) == sorted(
      f"diagnostics/{layer}/sigma" for layer in layers)

  # Figure 4b: per layer, a chart for each norm and one of its sigma with
  # the three factors; no other layer's tags (dense_0 must not match
  # dense_0_1, say).
  for layer in layers:
    charts = categories[f"Figure 4b: {layer}"].chart
    assert [matching(c, train_tags) for c in charts] == [
        [f"diagnostics/{layer}/grad_norm"],
        [f"diagnostics/{layer}/grad_to_weight_norm"],
        [f"diagnostics/{layer}/max_direction_to_weight"],
        sorted([f"diagnostics/{layer}/sigma"] +
               [f"factors/{layer}/{m}" for m in dashboard.FACTORS])]
  assert [c.closed for c in layout.category[2:-1]] == [False] + [True] * 15

  # Figure 5: each task's next-day metric, from the eval logs.
  tasks = ["click", "like", "share", "comment", "watch_time", "rating"]
  metric_charts = layout.category[1].chart[:len(tasks)]
  for task, chart in zip(tasks, metric_charts):
    metric = "rmse" if task in ("watch_time", "rating") else "auc"
    assert matching(chart, eval_tags) == [f"{task}/{metric}"]
    assert chart.title == f"{task}: next-day {metric.upper()}"
  # Every tag a chart names exists: no chart is empty.
  for category in layout.category[:-1]:
    for chart in category.chart:
      assert matching(chart, train_tags | eval_tags), chart.title


def test_factors_are_the_what_if_formula_of_the_written_norms(run):
  events, eta = run["train"], 0.02  # configs/base.gin's rate
  layer = "ranker/bottom/dense_0/kernel"
  assert f"factors/{layer}/gc" in events, sorted(events)[:20]
  for step in (20, 40):
    def at(tag):
      (value,) = [v for s, _, v in events[tag] if s == step]
      return float(value)
    g, gw, rw = (at(f"diagnostics/{layer}/{k}")
                 for k in dashboard.MEASUREMENTS)
    # By hand, with the Dashboard's defaults (GC 1e-2, AGC 1e-3, 0.5).
    np.testing.assert_allclose(at(f"factors/{layer}/gc"), min(1, 0.01 / g),
                               rtol=1e-6)
    np.testing.assert_allclose(at(f"factors/{layer}/agc"),
                               min(1, 0.001 / gw), rtol=1e-6)
    np.testing.assert_allclose(at(f"factors/{layer}/clippy"),
                               min(1, 0.5 / (eta * rw)), rtol=1e-6)
  # Factors are TensorBoard only: metrics.jsonl keeps the norms.
  with open(os.path.join(run["dir"], "metrics.jsonl")) as f:
    text = f.read()
  assert "factors/" not in text and f"diagnostics/{layer}/grad_norm" in text


def test_histograms_of_weights_and_of_sigma_over_layers(run):
  events = run["train"]
  assert sorted(t[len("weights/"):] for t in events
                if t.startswith("weights/")) == sorted(run["sizes"])
  for layer, size in run["sizes"].items():
    hist = events[f"weights/{layer}"]
    assert [s for s, _, _ in hist] == [20, 40]
    assert all(p == "histograms" for _, p, _ in hist)
    # (left, right, count) rows: the counts add up to the layer's size.
    assert hist[-1][2][:, 2].sum() == size
  (_, plugin, sigma), = [p for p in events["sigma/layers"] if p[0] == 40]
  assert plugin == "histograms" and sigma[:, 2].sum() == len(run["sizes"])


def test_what_if_factors_by_hand():
  f = what_if_factors(np.array([0.5, 0.0, np.nan]), np.array([2.0, 1.0, 1.0]),
                      np.array([10.0, 1.0, 1.0]), 0.1, 0.1, 1.0, 0.5)
  np.testing.assert_allclose(f["gc"], [0.2, 1.0, 1.0])
  np.testing.assert_allclose(f["agc"], [0.5, 1.0, 1.0])
  np.testing.assert_allclose(f["clippy"], [0.5, 1.0, 1.0])


def test_bad_thresholds_are_named():
  with pytest.raises(ValueError, match="Dashboard.gc_clip_norm must be > 0"):
    dashboard.Dashboard(gc_clip_norm=0.0)
