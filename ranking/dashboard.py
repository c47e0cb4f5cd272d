"""A run's TensorBoard laid out like the paper's figures.

The trainer writes flat scalars (four per dense variable, a few per task);
this module adds what turns them into the paper's figures:

  - a custom-scalars layout (TensorBoard's "Custom Scalars" tab), written
    into the run's train/ logs when a run starts:
      Figure 6   one chart of sigma for every dense layer, and the smallest
      Figure 5   per task: next-day AUC or RMSE (eval, eval_sidecar), loss
      Figure 4b  a section per dense layer: ||g||, ||g||/||w||, ||r/w||_inf
                 and its sigma beside the factors GC, AGC and Clippy would
                 apply to those norms
      Stability  micro-divergences, blow-ups, skipped steps, rollbacks,
                 sharpness beside 2/eta (section 3.2)
  - the what-if factors of Figure 4b as scalars, factors/<layer>/{gc,agc,
    clippy}, computed from the recorded norms by `what_if_factors` (the
    formula sweeps/factors.py applies to a finished run, ranking/what_if);
  - histograms: each dense layer's weights (weights/<layer>) and sigma over
    the layers (sigma/layers), every summary step.
"""

import re
from typing import Dict, Mapping, Sequence

import gin
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as layout_metadata

from ranking.what_if import FACTORS, MEASUREMENTS, what_if_factors


def _chart(title: str, patterns: Sequence[str]) -> layout_pb2.Chart:
  return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(
      tag=list(patterns)))


def _exact(tag: str) -> str:
  return f"^{re.escape(tag)}$"


@gin.configurable
class Dashboard:
  """What a run's TensorBoard shows besides its flat scalars.

  Attributes:
    gc_clip_norm, agc_clip_factor, clippy_lambda_rel: the thresholds of the
      what-if factors (paper: the middle of the GC and AGC grids, Clippy's
      lambda_rel).
    weight_histograms: write a histogram of each dense layer's weights and
      of sigma over the layers at every summary step.
  """

  def __init__(self, gc_clip_norm: float = 1e-2,
               agc_clip_factor: float = 1e-3,
               clippy_lambda_rel: float = 0.5,
               weight_histograms: bool = True):
    for name, value in (("gc_clip_norm", gc_clip_norm),
                        ("agc_clip_factor", agc_clip_factor),
                        ("clippy_lambda_rel", clippy_lambda_rel)):
      if not value > 0:
        raise ValueError(f"Dashboard.{name} must be > 0, got {value!r}.")
    self.gc_clip_norm = gc_clip_norm
    self.agc_clip_factor = agc_clip_factor
    self.clippy_lambda_rel = clippy_lambda_rel
    self.weight_histograms = weight_histograms

  def factors(self, diagnostics: Mapping[str, Mapping[str, float]],
              eta: float) -> Dict[str, float]:
    """{factors/<layer>/<method>: value} from one summary's diagnostics
    ({layer: {DIAGNOSTICS key: value}})."""
    out = {}
    for layer, values in diagnostics.items():
      factors = what_if_factors(
          *(float(values[k]) for k in MEASUREMENTS), eta,
          self.gc_clip_norm, self.agc_clip_factor, self.clippy_lambda_rel)
      for method, value in factors.items():
        out[f"factors/{layer}/{method}"] = float(value)
    return out

  def histograms(self, variables: Mapping[str, tf.Variable],
                 sigmas: Sequence[float]) -> Dict[str, tf.Tensor]:
    """{weights/<layer>: its weights, sigma/layers: sigma of every layer},
    from {layer: variable}."""
    if not self.weight_histograms:
      return {}
    out = {f"weights/{name}": tf.convert_to_tensor(v)
           for name, v in variables.items()}
    if sigmas:
      out["sigma/layers"] = tf.constant(list(sigmas), tf.float32)
    return out

  def layout(self, layers: Sequence[str], tasks) -> layout_pb2.Layout:
    """The custom-scalars layout of a run with these dense layers (the
    diagnostics' names; none when diagnostics are off) and tasks."""
    categories = []
    if layers:
      categories.append(layout_pb2.Category(
          title="Figure 6: clipping factor sigma, every layer",
          chart=[_chart("sigma of every dense layer",
                        [r"^diagnostics/.*/sigma$"]),
                 _chart("smallest sigma over the layers",
                        [_exact("clipping/min_sigma")])]))
    categories.append(layout_pb2.Category(
        title="Figure 5: next-day metrics per task",
        chart=[_chart(f"{t.name}: next-day {t.metric_name.upper()}",
                      [_exact(f"{t.name}/{t.metric_name}")])
               for t in tasks] +
        [_chart(f"{t.name}: loss (train, eval)", [_exact(f"{t.name}/loss")])
         for t in tasks]))
    lambdas = (f"GC λ={self.gc_clip_norm:g}, AGC λ={self.agc_clip_factor:g}"
               f", Clippy λ_rel={self.clippy_lambda_rel:g}")
    for i, layer in enumerate(layers):
      # One section per layer, its four panels (the norms differ by orders
      # of magnitude, so each has its own chart); only the first is open.
      def tags(*names, layer=layer):
        return "^" + re.escape(f"diagnostics/{layer}/") + (
            f"({'|'.join(names)})$" if len(names) > 1 else f"{names[0]}$")
      categories.append(layout_pb2.Category(
          title=f"Figure 4b: {layer}", closed=i > 0,
          chart=[_chart(f"{layer}: ||g||", [tags("grad_norm")]),
                 _chart(f"{layer}: ||g||/||w||", [tags("grad_to_weight_norm")]),
                 _chart(f"{layer}: ||r/w||_inf",
                        [tags("max_direction_to_weight")]),
                 _chart(f"{layer}: sigma, and the factors GC/AGC/Clippy "
                        f"would apply ({lambdas})",
                        [tags("sigma"),
                         "^" + re.escape(f"factors/{layer}/") +
                         f"({'|'.join(FACTORS)})$"])]))
    categories.append(layout_pb2.Category(
        title="Stability", closed=True,
        chart=[_chart("micro-divergences and blow-ups",
                      [r"^(micro_divergences|blowups|skipped_steps)$"]),
               _chart("rollbacks", [r"^(rollbacks|skipped_batches|lr_scale)$"]),
               _chart("sharpness beside 2/eta (section 3.2)",
                      [r"^sharpness/(hessian|preconditioned|two_over_eta)$"]),
               _chart("total loss", [_exact("loss/total")])]))
    return layout_pb2.Layout(category=categories)


def write_layout(layout: layout_pb2.Layout, step: int):
  """Writes `layout` with the default summary writer (TensorBoard reads the
  first one of each run and merges the runs')."""
  tf.summary.write(tag=layout_metadata.CONFIG_SUMMARY_TAG,
                   tensor=tf.constant(layout.SerializeToString()), step=step,
                   metadata=layout_metadata.create_summary_metadata())
