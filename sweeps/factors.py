"""The factor each method would apply to a run's recorded norms (paper
Fig. 4b), from its per-layer diagnostics.

Given a naive run's ||g||, ||g||/||w|| and ||r/w||_inf per layer and step:
GC min(1, lambda/||g||); AGC min(1, lambda*||w||/||g||) (the ||w|| floor
left out); Clippy with lambda_abs = 0, min(1, lambda_rel /
(eta*||r/w||_inf)), exact for that lambda_abs since ||r/w||_inf is the max
of |r_i|/|w_i| over w_i != 0 (lambda_abs > 0 only loosens it).
"""

from typing import Dict, List, Mapping

import numpy as np

CLIPPY_LAMBDA_REL = 0.5  # configs/optimizers/clippy.gin


def _column(train: Mapping[int, Mapping], steps: List[int],
            layers: List[str], key: str) -> np.ndarray:
  """[layer, step] of one diagnostic; missing or null as NaN."""
  def value(step, layer):
    v = train[step].get(f"diagnostics/{layer}/{key}")
    return np.nan if v is None else float(v)
  return np.array([[value(s, layer) for s in steps] for layer in layers],
                  dtype=np.float64).reshape(len(layers), len(steps))


def smallest_factors(train: Mapping[int, Mapping], layers: List[str],
                     eta: float, gc: float, agc: float,
                     lambda_rel: float = CLIPPY_LAMBDA_REL
                     ) -> Dict[str, np.ndarray]:
  """{'gc' | 'agc' | 'clippy': the smallest factor over `layers` at each
  step of sorted(train)}; a layer whose norm is 0 or unrecorded (null, as
  strict JSON writes a non-finite value) counts as needing none (factor 1)."""
  steps = sorted(train)
  with np.errstate(divide="ignore", invalid="ignore"):
    raw = {
        "gc": gc / _column(train, steps, layers, "grad_norm"),
        "agc": agc / _column(train, steps, layers, "grad_to_weight_norm"),
        "clippy": lambda_rel / (eta * _column(train, steps, layers,
                                              "max_direction_to_weight")),
    }
  out = {}
  for method, factor in raw.items():
    factor = np.minimum(1.0, np.where(np.isnan(factor), np.inf, factor))
    out[method] = factor.min(axis=0, initial=1.0)
  return out
