"""The paper's failure mode in miniature: Adagrad diverges, Clippy does not.

A small MLP trains sequentially on a drifting stream (features drift a
little every step and four of them jump 30x in scale halfway, the kind of
distribution change the paper names as a root cause). At a high learning
rate plain Adagrad's loss goes back to log 2 (the model has collapsed to a
constant prediction); Clippy at the same rate stays close to its own loss at
a learning rate 100x lower.
"""

import numpy as np
import tensorflow as tf

from optim import build_optimizer

DIM, BATCH, STEPS, SEED = 16, 128, 400, 0
HIGH_LR, LOW_LR = 1.0, 0.01


def _drifting_stream():
  rng = np.random.default_rng(SEED)
  linear = rng.normal(size=DIM) * 3 / np.sqrt(DIM)
  pair = rng.normal(size=DIM) * 3 / np.sqrt(DIM)
  xs, ys = [], []
  for t in range(STEPS):
    z = rng.normal(size=(BATCH, DIM))
    logit = z @ linear + (z @ pair) * z[:, 0]
    ys.append((rng.random((BATCH, 1)) < 1 / (1 + np.exp(-logit[:, None]))))
    scale = np.full(DIM, 1 + t / STEPS)        # gradual drift
    if t >= STEPS // 2:
      scale[:4] *= 30                           # sudden shift
    xs.append(z * scale + 0.1 * t / STEPS)
  return (np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32))


def _final_loss(method, learning_rate, stream):
  """Mean training loss over the last 100 steps (progressive validation)."""
  x, y = stream
  tf.keras.utils.set_random_seed(SEED)
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(64, activation="relu"),
      tf.keras.layers.Dense(64, activation="relu"),
      tf.keras.layers.Dense(1),
  ])
  optimizer = build_optimizer(method, learning_rate)
  loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)

  @tf.function
  def step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, model(xb))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  losses = [float(step(x[i], y[i])) for i in range(STEPS)]
  return float(np.mean(losses[-100:]))


def test_adagrad_blows_up_where_clippy_stays_stable():
  stream = _drifting_stream()
  naive_low = _final_loss("naive", LOW_LR, stream)
  naive_high = _final_loss("naive", HIGH_LR, stream)
  clippy_low = _final_loss("clippy", LOW_LR, stream)
  clippy_high = _final_loss("clippy", HIGH_LR, stream)
  summary = dict(naive_low=naive_low, naive_high=naive_high,
                 clippy_low=clippy_low, clippy_high=clippy_high)
  # Adagrad at the high rate is back near log 2: it learned nothing that
  # lasts, and is clearly worse than at the low rate.
  assert naive_high > 0.9 * np.log(2), summary
  assert naive_high > 1.2 * naive_low, summary
  # Clippy at the same rate stays within 20% of its low-rate loss.
  assert clippy_high <= 1.2 * clippy_low, summary
