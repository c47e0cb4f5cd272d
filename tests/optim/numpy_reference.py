"""Independent numpy implementations of the paper's rules and updates.

Written from the formulas (Tang et al. 2023, eq. 5 and Algorithm 1; Brock et
al. 2021 for AGC; You et al. 2020 for LAMB; Kingma & Ba 2015 for Adam as
tf.keras places epsilon; Wang et al. 2025 for AdaGC, Kumar et al. 2025 for
ZClip, as their reference code keeps a buffer of warm-up norms; Wortsman et
al. 2023 for StableAdamW; Huang et al. 2025 for SPAM), not from the
TensorFlow code. Rules that remember are classes holding plain Python
state; every sigma is called as sigma(g, w, r, lr, v_hat).
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


class AdaGC:
  """Per variable: warm-up clips to lambda_abs, then to lambda_rel * gamma."""

  def __init__(self, lambda_rel=1.05, lambda_abs=1.0, beta=0.98,
               warmup_steps=100):
    self.lambda_rel, self.lambda_abs = lambda_rel, lambda_abs
    self.beta, self.warmup_steps = beta, warmup_steps
    self.step, self.gamma = 0, None

  def __call__(self, g, w, r, lr, v_hat=None):
    self.step += 1
    n = np.sqrt(np.sum(g * g))
    if self.step < self.warmup_steps:
      h = 1.0 if n == 0 else min(1.0, self.lambda_abs / n)
      self.gamma = h * n if self.step == 1 else min(self.gamma, h * n)
    else:
      h = 1.0 if n == 0 else min(1.0, self.lambda_rel * self.gamma / n)
      self.gamma = self.beta * self.gamma + (1 - self.beta) * h * n
    return h


class ZClip:
  """Per variable: a buffer of warm-up norms, then EMA z-score clipping."""

  def __init__(self, z_thresh=2.5, alpha=0.97, warmup_steps=25, eps=1e-6):
    self.z_thresh, self.alpha = z_thresh, alpha
    self.warmup_steps, self.eps = warmup_steps, eps
    self.buffer, self.mean, self.var = [], None, None

  def __call__(self, g, w, r, lr, v_hat=None):
    n = np.sqrt(np.sum(g * g))
    if self.mean is None:
      self.buffer.append(n)
      if len(self.buffer) >= self.warmup_steps:
        self.mean = np.mean(self.buffer)
        self.var = np.mean((np.array(self.buffer) - self.mean) ** 2)
      return 1.0
    std = np.sqrt(self.var)
    z = (n - self.mean) / (std + self.eps)
    applied, h = n, 1.0
    if z > self.z_thresh:
      applied = self.mean + self.z_thresh * std / (z / self.z_thresh)
      h = applied / n
    self.mean = self.alpha * self.mean + (1 - self.alpha) * applied
    self.var = self.alpha * self.var + (1 - self.alpha) * (
        applied - self.mean) ** 2
    return h


def sigma_stable(g, w, r, lr, v_hat, clip_threshold=1.0, eps=1e-8):
  rms = np.sqrt(np.mean(g * g / np.maximum(v_hat, eps * eps)))
  return 1.0 / max(1.0, rms / clip_threshold)


def spike_clip(g, v, theta):
  out = g.copy()
  for i in np.ndindex(g.shape):
    if g[i] ** 2 > theta * v[i]:
      out[i] = np.sign(g[i]) * np.sqrt(theta * v[i])
  return out


SIGMAS = {"naive": sigma_naive, "gc": sigma_gc, "agc": sigma_agc,
          "lamb": sigma_lamb, "clippy": sigma_clippy}
STATEFUL = {"adagc": AdaGC, "zclip": ZClip}


def make_sigma(method, params):
  """sigma(g, w, r, lr, v_hat) of a method, a fresh state for stateful ones."""
  if method in STATEFUL:
    return STATEFUL[method](**params)
  if method == "stable":
    return lambda g, w, r, lr, v_hat: sigma_stable(g, w, r, lr, v_hat,
                                                   **params)
  return lambda g, w, r, lr, v_hat=None: SIGMAS[method](g, w, r, lr, **params)


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
    self.sigma_fn = make_sigma(method, params)
    self.eps, self.mode = eps, mode

  def step(self, g, lr, rows=None):
    """Applies one step; `rows` (unique, sorted as given) for sparse. Returns sigma."""
    sel = slice(None) if rows is None else rows
    if self.mode == "standard":
      self.acc[sel] += g * g
    r = g / np.sqrt(self.acc[sel] + self.eps)
    sigma = self.sigma_fn(g, self.w[sel], r, lr)
    if self.mode == "clipped":
      self.acc[sel] += (sigma * g) ** 2
    elif self.mode == "delayed":
      self.acc[sel] += g * g
    self.w[sel] -= lr * sigma * r
    return sigma


class AdamReference:
  """Scaled Adam on one variable (dense gradients)."""

  def __init__(self, w, method, params, b1=0.9, b2=0.999, eps=1e-7,
               spike_threshold=None, spike_warmup_steps=20):
    self.w = np.array(w, np.float64)
    self.m = np.zeros_like(self.w)
    self.v = np.zeros_like(self.w)
    self.t = 0
    self.sigma_fn = make_sigma(method, params)
    self.b1, self.b2, self.eps = b1, b2, eps
    self.spike_threshold = spike_threshold
    self.spike_warmup_steps = spike_warmup_steps
    self.spikes = 0  # coordinates spike clipping changed, over all steps

  def step(self, g, lr):
    self.t += 1
    if self.spike_threshold is not None and self.t >= self.spike_warmup_steps:
      clipped = spike_clip(g, self.v, self.spike_threshold)
      self.spikes += int(np.sum(clipped != g))
      g = clipped
    self.m = self.b1 * self.m + (1 - self.b1) * g
    self.v = self.b2 * self.v + (1 - self.b2) * g * g
    m_hat = self.m / (1 - self.b1 ** self.t)
    r = m_hat * np.sqrt(1 - self.b2 ** self.t) / (np.sqrt(self.v) + self.eps)
    v_hat = self.v / (1 - self.b2 ** self.t)
    sigma = self.sigma_fn(g, self.w, r, lr, v_hat)
    self.w -= lr * sigma * r
    return sigma
