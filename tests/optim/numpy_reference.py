"""Independent numpy implementations of the paper's rules and updates.

Written from the formulas (Tang et al. 2023, eq. 5 and Algorithm 1; Brock et
al. 2021 for AGC; You et al. 2020 for LAMB; Kingma & Ba 2015 for Adam as
tf.keras places epsilon), not from the TensorFlow code.
"""

import numpy as np


def sigma_naive(g, w, r, lr):
  return 1.0


def sigma_gc(g, w, r, lr, clip_norm):
  n = np.sqrt(np.sum(g * g))
  return 1.0 if n == 0 else min(1.0, clip_norm / n)


def unit_norms(x):
  if x.ndim <= 1:
    return np.abs(x)
  out = np.empty(x.shape[-1])
  for j in range(x.shape[-1]):
    out[j] = np.sqrt(np.sum(x[..., j] ** 2))
  return out


def sigma_agc(g, w, r, lr, clip_factor, eps=1e-3, unitwise=False):
  if not unitwise:
    gn = np.sqrt(np.sum(g * g))
    wn = max(np.sqrt(np.sum(w * w)), eps)
    return 1.0 if gn == 0 else min(1.0, clip_factor * wn / gn)
  gn, wn = unit_norms(g), np.maximum(unit_norms(w), eps)
  s = np.ones_like(gn)
  nz = gn > 0
  s[nz] = np.minimum(1.0, clip_factor * wn[nz] / gn[nz])
  return s  # one per unit; broadcasts on the last axis


def sigma_lamb(g, w, r, lr, trust_coefficient):
  wn, rn = np.sqrt(np.sum(w * w)), np.sqrt(np.sum(r * r))
  # The trust ratio is 1 where a norm is 0: sigma = mu (You et al. 2020).
  return trust_coefficient * (wn / rn if wn > 0 and rn > 0 else 1.0)


def sigma_clippy(g, w, r, lr, lambda_rel, lambda_abs):
  sigma = 1.0
  for wi, ri in zip(w.ravel(), r.ravel()):
    if ri != 0:
      sigma = min(sigma, (lambda_rel * abs(wi) + lambda_abs) / (lr * abs(ri)))
  return sigma


SIGMAS = {"naive": sigma_naive, "gc": sigma_gc, "agc": sigma_agc,
          "lamb": sigma_lamb, "clippy": sigma_clippy}


def dense_from_slices(values, indices, rows):
  g = np.zeros((rows,) + values.shape[1:])
  for v, i in zip(values, indices):
    g[i] += v
  return g


class AdagradReference:
  """Scaled Adagrad on one variable, dense or sparse (row-wise) gradients."""

  def __init__(self, w, method, params, g0=0.1, eps=1e-7, mode="standard"):
    self.w = np.array(w, np.float64)
    self.acc = np.full_like(self.w, g0)
    self.sigma_fn = SIGMAS[method]
    self.params, self.eps, self.mode = params, eps, mode

  def step(self, g, lr, rows=None):
    """Applies one step; `rows` (unique, sorted as given) for sparse. Returns sigma."""
    sel = slice(None) if rows is None else rows
    if self.mode == "standard":
      self.acc[sel] += g * g
    r = g / np.sqrt(self.acc[sel] + self.eps)
    sigma = self.sigma_fn(g, self.w[sel], r, lr, **self.params)
    if self.mode == "clipped":
      self.acc[sel] += (sigma * g) ** 2
    elif self.mode == "delayed":
      self.acc[sel] += g * g
    self.w[sel] -= lr * sigma * r
    return sigma


class AdamReference:
  """Scaled Adam on one variable (dense gradients)."""

  def __init__(self, w, method, params, b1=0.9, b2=0.999, eps=1e-7):
    self.w = np.array(w, np.float64)
    self.m = np.zeros_like(self.w)
    self.v = np.zeros_like(self.w)
    self.t = 0
    self.sigma_fn = SIGMAS[method]
    self.params, self.b1, self.b2, self.eps = params, b1, b2, eps

  def step(self, g, lr):
    self.t += 1
    self.m = self.b1 * self.m + (1 - self.b1) * g
    self.v = self.b2 * self.v + (1 - self.b2) * g * g
    m_hat = self.m / (1 - self.b1 ** self.t)
    r = m_hat * np.sqrt(1 - self.b2 ** self.t) / (np.sqrt(self.v) + self.eps)
    sigma = self.sigma_fn(g, self.w, r, lr, **self.params)
    self.w -= lr * sigma * r
    return sigma
