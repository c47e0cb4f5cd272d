"""The factor GC, AGC and Clippy would apply to a layer's recorded norms
(paper Figure 4b). numpy only: the sweep reports read it too."""

from typing import Dict

import numpy as np

# The recorded norms it reads (optim.DIAGNOSTICS less sigma) and the
# methods whose factors it gives.
MEASUREMENTS = ("grad_norm", "grad_to_weight_norm", "max_direction_to_weight")
FACTORS = ("gc", "agc", "clippy")


def what_if_factors(grad_norm, grad_to_weight_norm, max_direction_to_weight,
                    eta, gc, agc, clippy_lambda_rel) -> Dict[str, np.ndarray]:
  """The factor each method would apply to recorded norms (paper Fig. 4b):
  GC min(1, lambda/||g||); AGC min(1, lambda ||w||/||g||) (the ||w|| floor
  left out); Clippy with lambda_abs = 0, min(1, lambda_rel / (eta
  ||r/w||_inf)), exact for that lambda_abs since ||r/w||_inf is the max of
  |r_i|/|w_i| over w_i != 0 (lambda_abs > 0 only loosens it). Elementwise
  over arrays; a zero or unrecorded (NaN) norm needs no clipping: 1."""
  with np.errstate(divide="ignore", invalid="ignore"):
    raw = {
        "gc": gc / np.asarray(grad_norm, np.float64),
        "agc": agc / np.asarray(grad_to_weight_norm, np.float64),
        "clippy": clippy_lambda_rel / (
            eta * np.asarray(max_direction_to_weight, np.float64)),
    }
  return {m: np.minimum(1.0, np.where(np.isnan(f), np.inf, f))
          for m, f in raw.items()}
