"""The factor each method would apply to a run's recorded norms (paper
Fig. 4b), from its per-layer diagnostics in metrics.jsonl: the formula of
ranking/what_if.py (which the run's TensorBoard charts too), over every
layer and step.
"""

from typing import Dict, List, Mapping

import numpy as np

from ranking.what_if import MEASUREMENTS, what_if_factors

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
  factors = what_if_factors(
      *(_column(train, steps, layers, key) for key in MEASUREMENTS), eta,
      gc, agc, lambda_rel)
  return {m: f.min(axis=0, initial=1.0) for m, f in factors.items()}
