"""The default dataset: a synthetic, time-ordered, production-like stream.

Six tasks like a video ranking model (click, like, share, comment: binary
with different base rates; watch_time, rating: regression) produced by a
hidden ground-truth model: user and item latent factors whose interaction
slowly rotates (gradual drift every day), per-id effects of the categorical
features, heavy-tailed dense features that carry part of the signal, and a
feature interaction. Shift days add sudden changes that stay: new items
appear, a group of dense features changes scale, and the click rate jumps.

Every value of row r is a counter-based hash of (seed, r, field), so any row
is available at any time with no state: the stream is generated on the fly
by tf.data and memory does not grow with the number of days.

The stream has a nominal calendar: day 0 is FIRST_DATE (2022-04-15), the
date data/materialize.py stamps on day 0 when it writes the stream to
files, so a date names the same day in the stream and in its files
(MovingWindow.eval_date = '2022-04-28' is day 13). The dates carry no
signal: nothing in the stream depends on the weekday.
"""

import datetime
from typing import Sequence

import gin
import numpy as np
import tensorflow as tf

from data import schema as schema_lib
from data.source import Source

_MASK = 0xFFFFFFFF
FIRST_DATE = datetime.date(2022, 4, 15)
TASKS = (
    schema_lib.Label("click", "binary"),
    schema_lib.Label("like", "binary"),
    schema_lib.Label("share", "binary"),
    schema_lib.Label("comment", "binary"),
    schema_lib.Label("watch_time", "regression", "log1p"),
    schema_lib.Label("rating", "regression"),
)
# Base logit, weight of the shared preference, of the task's own preference.
_BINARY = {"click": (-0.8, 1.0, 0.6), "like": (-3.0, 0.8, 0.9),
           "share": (-4.2, 0.7, 1.0), "comment": (-3.6, 0.6, 1.0)}
# Field numbers of the hashed draws (keep distinct).
_F_USER, _F_ITEM, _F_NEW, _F_CAT, _F_TAGS, _F_DENSE, _F_LABEL = (
    1, 2, 3, 100, 200, 300, 900)
_SALT_USER, _SALT_ITEM, _SALT_EFFECT, _SALT_TAG, _SALT_WEIGHT = (
    11, 12, 13, 14, 15)


def _fmix(x):
  """A 32-bit integer hash (low-bias multiply-xorshift) of uint32 values:
  a tensor's, or a numpy array's (constants, hashed before tracing). The
  products wrap to 32 bits by themselves."""
  ops = tf.bitwise if isinstance(x, tf.Tensor) else np
  xor, shift = ops.bitwise_xor, ops.right_shift
  with np.errstate(over="ignore"):  # numpy scalars warn when they wrap
    x = xor(x, shift(x, 16)) * 0x7FEB352D
    x = xor(x, shift(x, 15)) * 0x446CA68B
    return xor(x, shift(x, 16))


def _rowwise_matmul(x, w):
  """x @ w computed per row, so a row's value does not depend on the batch
  it is drawn in (a matmul kernel's rounding does)."""
  return tf.reduce_sum(x[:, :, None] * w[None, :, :], axis=1)


@gin.configurable
class SyntheticStream(Source):
  """A deterministic synthetic log of `num_days` days (see module doc)."""

  def __init__(self,
               num_days: int = 14,
               examples_per_day: int = 100_000,
               seed: int = 0,
               num_users: int = 50_000,
               num_items: int = 20_000,
               new_items_per_shift: int = 5_000,
               id_zipf_exponent: float = 1.05,
               num_categorical: int = 22,
               categorical_vocab_sizes: Sequence[int] = (10, 100, 1000,
                                                         10_000),
               tag_vocab_size: int = 1000,
               max_tags: int = 5,
               dense_dim: int = 24,
               latent_dim: int = 8,
               drift_per_day: float = 0.08,
               shift_days: Sequence[int] = (5, 10),
               shift_scale: float = 5.0,
               new_item_share: float = 0.3,
               label_rate_jump: float = 1.0,
               name: str = "synthetic"):
    """Creates the stream.

    Args:
      num_days: days in the log.
      examples_per_day: examples of each day.
      seed: the whole stream is a function of it.
      num_users: user ids (Zipf-distributed).
      num_items: item ids at the start (Zipf-distributed).
      new_items_per_shift: items that appear on each shift day.
      id_zipf_exponent: s of the power law of id frequencies (> 0, != 1).
      num_categorical: further single-id categorical features.
      categorical_vocab_sizes: their vocabulary sizes, cycled.
      tag_vocab_size: vocabulary of the multi-valued `item_tags`.
      max_tags: most tags per item.
      dense_dim: columns of each dense group (user, item, context).
      latent_dim: size of the hidden user and item factors.
      drift_per_day: rotation (radians) of the hidden preference per day.
      shift_days: days on which sudden shifts start (they persist).
      shift_scale: factor on 8 context features at each shift.
      new_item_share: share of impressions going to the newest items
        after a shift.
      label_rate_jump: added to the click logit at each shift.
      name: name in messages.
    """
    if num_days < 2:
      raise ValueError(f"{name}: num_days must be >= 2 (train and evaluate), "
                       f"got {num_days}.")
    if examples_per_day < 1:
      raise ValueError(f"{name}: examples_per_day must be >= 1.")
    if id_zipf_exponent <= 0 or id_zipf_exponent == 1:
      raise ValueError(f"{name}: id_zipf_exponent must be > 0 and != 1.")
    if new_items_per_shift < 1:
      raise ValueError(f"{name}: new_items_per_shift must be >= 1.")
    if dense_dim < 8:
      raise ValueError(f"{name}: dense_dim must be >= 8.")
    self.seed = int(seed)
    self.num_users, self.num_items = num_users, num_items
    self.new_items_per_shift = new_items_per_shift
    self.zipf = float(id_zipf_exponent)
    self.vocab_sizes = [categorical_vocab_sizes[i % len(
        categorical_vocab_sizes)] for i in range(num_categorical)]
    self.tag_vocab_size, self.max_tags = tag_vocab_size, max_tags
    self.dense_dim, self.latent_dim = dense_dim, latent_dim
    self.drift_per_day = drift_per_day
    self.shift_days = tuple(sorted(shift_days))
    self.shift_scale = shift_scale
    self.new_item_share = new_item_share
    self.label_rate_jump = label_rate_jump
    item_vocab = num_items + len(self.shift_days) * new_items_per_shift
    schema = schema_lib.Schema(
        categorical=(
            [schema_lib.CategoricalFeature("user_id", num_users),
             schema_lib.CategoricalFeature("item_id", item_vocab)] +
            [schema_lib.CategoricalFeature(f"cat_{i:02d}", v)
             for i, v in enumerate(self.vocab_sizes)] +
            [schema_lib.CategoricalFeature("item_tags", tag_vocab_size,
                                           max_len=max_tags)]),
        dense=[schema_lib.DenseFeature(f"{group}_dense", dense_dim)
               for group in ("user", "item", "context")],
        labels=TASKS)
    super().__init__(schema, [examples_per_day] * num_days, name,
                     FIRST_DATE)
    # Fixed projections of the hidden model (numpy, from the seed).
    rng = np.random.default_rng(self.seed)
    k, d = latent_dim, dense_dim
    self._user_proj = tf.constant(rng.normal(size=(k, d)) / np.sqrt(k),
                                  tf.float32)
    self._item_proj = tf.constant(rng.normal(size=(k, d)) / np.sqrt(k),
                                  tf.float32)
    self._dense_w = {g: tf.constant(rng.normal(size=(d,)) * 1.0 / np.sqrt(d),
                                    tf.float32)
                     for g in ("user", "item", "context")}
    self._task_pref = tf.constant(rng.normal(size=(len(_BINARY), k)),
                                  tf.float32)

  # -- hashed draws -----------------------------------------------------

  def _hash(self, *keys, start=None):
    """The hash of (seed, *keys), a uint32 tensor broadcast over the
    keys' shapes; `start` is the hash of (seed, *prefix) from an earlier
    call, and the result that of (seed, *prefix, *keys). Constant keys
    (Python ints, numpy arrays) are hashed in numpy, and so is the chain
    up to the first tensor key: the graph holds only the hashing of tensors.
    With the shared prefixes hashed once, rows() is 1,544 ops against 4,863
    with every key hashed in the graph, and traces in under half the time
    (the values are the same integers)."""
    h = _fmix(np.uint32(self.seed & _MASK)) if start is None else start
    for key in keys:
      # The low 32 bits of each key, as the hash reads it.
      if isinstance(key, tf.Tensor):
        mixed = _fmix(tf.cast(tf.cast(key, tf.int64), tf.uint32))
      else:
        mixed = _fmix(np.asarray(key, np.int64).astype(np.uint32))
      tensors = isinstance(h, tf.Tensor) or isinstance(mixed, tf.Tensor)
      h = _fmix((tf.bitwise if tensors else np).bitwise_xor(h, mixed))
    return tf.convert_to_tensor(h, tf.uint32)

  def _uniform(self, *keys, start=None):
    """Uniform in (0, 1), float32, one per broadcast position of keys."""
    return tf.cast((tf.cast(self._hash(*keys, start=start), tf.float64) +
                    0.5) / 2.0**32, tf.float32)

  def _normal(self, *keys, start=None):
    """Standard normal (Box-Muller on two hashed uniforms)."""
    h = self._hash(*keys, start=start)
    u1 = self._uniform(1, start=h)
    u2 = self._uniform(2, start=h)
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * np.pi * u2)

  def _zipf(self, vocab, *keys, start=None):
    """Ids in [0, vocab) with P(id) ~ (id + 1)^-s (inverse CDF); `vocab`
    may be a list, one size per column of the broadcast keys."""
    u = tf.cast(self._uniform(*keys, start=start), tf.float64)
    a = 1.0 - self.zipf
    top = tf.constant(np.asarray(vocab, np.float64) + 1.0)
    x = ((top ** a - 1.0) * u + 1.0) ** (1.0 / a)
    return tf.minimum(tf.cast(tf.floor(x), tf.int64) - 1,
                      tf.constant(np.asarray(vocab, np.int64) - 1))

  # -- the rows -----------------------------------------------------------

  def rows(self, row_ids):
    row = tf.cast(row_ids, tf.int64)
    day = self.day_of_rows(row)
    shifts = tf.zeros_like(day)
    for s in self.shift_days:
      shifts += tf.cast(day >= s, tf.int64)
    # The hashes of shared key prefixes, computed once: (seed, row) starts
    # most draws; a column of them broadcasts over a row's columns.
    by_row = self._hash(row)
    by_col = by_row[:, None]
    k = np.arange(self.latent_dim, dtype=np.int64)[None, :]
    d = np.arange(self.dense_dim, dtype=np.int64)[None, :]

    user = self._zipf(self.num_users, _F_USER, start=by_row)
    old_item = self._zipf(self.num_items, _F_ITEM, start=by_row)
    by_new = self._hash(_F_NEW, start=by_row)
    new_item = (self.num_items + (shifts - 1) * self.new_items_per_shift +
                self._zipf(self.new_items_per_shift, start=by_new))
    is_new = (shifts > 0) & (self._uniform(7, start=by_new) <
                             self.new_item_share)
    item = tf.where(is_new, new_item, old_item)

    u = self._normal(_SALT_USER, user[:, None], k)
    v = self._normal(_SALT_ITEM, item[:, None], k)
    out = {schema_lib.DAY: day, "user_id": user, "item_id": item}

    # All categorical columns in one broadcast draw (a loop of per-column
    # draws makes a graph that takes seconds to trace).
    cat_effect = tf.zeros_like(u[:, 0])
    if self.vocab_sizes:
      fields = np.arange(len(self.vocab_sizes), dtype=np.int64)[None, :]
      ids = self._zipf(self.vocab_sizes, _F_CAT + fields, start=by_col)
      for i in range(len(self.vocab_sizes)):
        out[f"cat_{i:02d}"] = ids[:, i]
      cat_effect = tf.reduce_sum(self._normal(_SALT_EFFECT, fields, ids),
                                 axis=1) * (0.8 / np.sqrt(len(fields[0])))

    slots = np.arange(self.max_tags, dtype=np.int64)[None, :]
    by_item_tag = self._hash(_SALT_TAG, item)
    n_tags = 1 + tf.cast(self._hash(0, start=by_item_tag),
                         tf.int64) % self.max_tags
    tags = self._zipf(self.tag_vocab_size, slots + 1,
                      start=by_item_tag[:, None])
    out["item_tags"] = tf.where(n_tags[:, None] > slots, tags,
                                schema_lib.PAD_ID)

    # Dense: user / item features reveal the hidden factors (log-normal,
    # then logged); context features are heavy-tailed (a Gaussian scale
    # mixture) and a group of 8 changes scale at every shift.
    user_dense = (_rowwise_matmul(u, self._user_proj) +
                  0.5 * self._normal(_F_DENSE, d, start=by_col))
    item_dense = (_rowwise_matmul(v, self._item_proj) +
                  0.5 * self._normal(_F_DENSE + 1, d, start=by_col))
    context = (self._normal(_F_DENSE + 2, d, start=by_col) *
               tf.exp(0.6 * self._normal(_F_DENSE + 3, d, start=by_col)))
    out["user_dense"] = user_dense
    out["item_dense"] = item_dense
    scale = tf.pow(float(self.shift_scale), tf.cast(shifts, tf.float32))
    group = tf.cast(tf.range(self.dense_dim) < 8, tf.float32)[None, :]
    out["context_dense"] = context * (1.0 + group * (scale[:, None] - 1.0))

    # Hidden preference: u . rotate(v, drift * day), and dense signal whose
    # weights drift too.
    angle = self.drift_per_day * tf.cast(day, tf.float32)[:, None]
    half = self.latent_dim // 2
    v_rot = tf.concat([v[:, :half] * tf.cos(angle) - v[:, half:2 * half] *
                       tf.sin(angle), v[:, half:2 * half] * tf.cos(angle) +
                       v[:, :half] * tf.sin(angle), v[:, 2 * half:]], axis=1)
    pref = tf.reduce_sum(u * v_rot, axis=1) / np.sqrt(self.latent_dim)
    clipped_context = tf.clip_by_value(context, -4.0, 4.0)
    dense_signal = (
        tf.reduce_sum(user_dense * self._dense_w["user"], axis=1) +
        tf.reduce_sum(item_dense * self._dense_w["item"], axis=1) *
        tf.cos(angle[:, 0]) +
        tf.reduce_sum(clipped_context * self._dense_w["context"], axis=1) +
        0.4 * clipped_context[:, 0] * clipped_context[:, 1])
    shared = 1.2 * pref + cat_effect + dense_signal

    jump = self.label_rate_jump * tf.cast(shifts, tf.float32)
    uv = u * v
    for t, (name, (base, w_shared, w_own)) in enumerate(_BINARY.items()):
      own = tf.reduce_sum(uv * self._task_pref[t], axis=1) / np.sqrt(
          self.latent_dim)
      logit = base + w_shared * shared + w_own * own
      if name == "click":
        logit += jump
      out[name] = tf.cast(
          self._uniform(_F_LABEL + t, start=by_row) < tf.sigmoid(logit),
          tf.float32)
    seconds = tf.exp(2.5 + 0.6 * shared +
                     0.5 * self._normal(_F_LABEL + 10, start=by_row))
    out["watch_time"] = tf.math.log1p(seconds)
    out["rating"] = tf.clip_by_value(tf.round(
        3.0 + 0.8 * pref + 0.3 * shared +
        0.7 * self._normal(_F_LABEL + 11, start=by_row)), 1.0, 5.0)
    return out
