"""The synthetic stream: deterministic, learnable, and non-stationary."""

import numpy as np
import pytest
import tensorflow as tf

from data import schema as schema_lib
from data import synthetic
from data.synthetic import SyntheticStream
from tests import reference_metrics


def _day(stream, day, n=None):
  lo = stream.day_offsets[day]
  n = n or stream.day_size(day)
  return {k: v.numpy() for k, v in stream.rows(tf.range(lo, lo + n)).items()}


def test_batches_match_the_schema_and_are_deterministic():
  stream = SyntheticStream(num_days=4, examples_per_day=1000, seed=3)
  a = stream.rows(tf.constant([0, 999, 1000, 3999]))
  again = SyntheticStream(num_days=4, examples_per_day=1000, seed=3).rows(
      tf.constant([0, 999, 1000, 3999]))
  other_seed = SyntheticStream(num_days=4, examples_per_day=1000,
                               seed=4).rows(tf.constant([0, 999, 1000, 3999]))
  expected = set(stream.schema.feature_names + stream.schema.label_names)
  assert set(a) == expected | {schema_lib.DAY}
  np.testing.assert_array_equal(a["day"], [0, 0, 1, 3])
  for key in a:
    np.testing.assert_array_equal(a[key], again[key])
  assert not np.array_equal(a["user_id"], other_seed["user_id"])
  for f in stream.schema.categorical:
    ids = a[f.name].numpy()
    assert ids.shape == ((4, f.max_len) if f.multivalent else (4,))
    assert ids.max() < f.vocab_size and ids.min() >= schema_lib.PAD_ID
  tags = a["item_tags"].numpy()
  assert np.all((tags[:, 0] >= 0))  # every item has a tag, padding at end
  for label in ("click", "like", "share", "comment"):
    assert set(np.unique(a[label])) <= {0.0, 1.0}


def _np_hash(seed, *keys):
  """The stream's hash of (seed, *keys), written out in numpy: 32-bit
  multiply-xorshift mixes chained over the keys."""
  mask = 0xFFFFFFFF

  def fmix(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & mask
    x = x ^ (x >> 15)
    x = (x * 0x446CA68B) & mask
    return x ^ (x >> 16)

  h = fmix(np.int64(seed & mask))
  for key in keys:
    h = fmix(h ^ fmix(np.asarray(key, np.int64) & mask))
  return h


def _np_uniform(seed, *keys):
  return ((_np_hash(seed, *keys).astype(np.float64) + 0.5) / 2.0**32).astype(
      np.float32)


def test_draws_match_the_hash_written_out_in_numpy():
  """The values come from the documented hash of (seed, row, field, ...):
  ids exactly, dense draws to float32 rounding (numpy's log and cos)."""
  seed = 3
  stream = SyntheticStream(num_days=4, examples_per_day=1000, seed=seed)
  rows = np.array([0, 1, 17, 500, 998, 999])  # day 0: no shift scaling
  out = {k: v.numpy() for k, v in stream.rows(tf.constant(rows)).items()}

  u = _np_uniform(seed, rows, synthetic._F_USER).astype(np.float64)
  a = 1.0 - stream.zipf
  top = stream.num_users + 1.0
  users = np.minimum(np.floor(((top**a - 1.0) * u + 1.0)**(1.0 / a)).astype(
      np.int64) - 1, stream.num_users - 1)
  np.testing.assert_array_equal(out["user_id"], users)

  n_tags = 1 + _np_hash(seed, synthetic._SALT_TAG, out["item_id"], 0) % (
      stream.max_tags)
  np.testing.assert_array_equal(
      (out["item_tags"] != schema_lib.PAD_ID).sum(axis=1), n_tags)

  d = np.arange(stream.dense_dim)[None, :]
  col = rows[:, None]

  def normal(field):
    u1 = _np_uniform(seed, col, field, d, 1).astype(np.float64)
    u2 = _np_uniform(seed, col, field, d, 2).astype(np.float64)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)

  context = normal(synthetic._F_DENSE + 2) * np.exp(
      0.6 * normal(synthetic._F_DENSE + 3))
  np.testing.assert_allclose(out["context_dense"], context, rtol=1e-5,
                             atol=1e-6)


def test_ids_follow_a_power_law():
  stream = SyntheticStream(num_days=2, examples_per_day=20000,
                           id_zipf_exponent=1.2)
  users = _day(stream, 0)["user_id"]
  counts = np.bincount(users, minlength=stream.num_users)
  # P(id) ~ (id + 1)^-1.2: id 0 about 2^1.2 = 2.3 times as often as id 1.
  assert counts[0] / counts[1] == pytest.approx(2 ** 1.2, rel=0.25)
  assert counts[:10].sum() > 0.1 * len(users)  # a heavy head


def test_the_stream_is_learnable_by_logistic_regression():
  """Next-day click AUC of a logistic regression on the dense features."""
  stream = SyntheticStream(num_days=8, examples_per_day=20000, seed=1,
                           shift_days=(3,))
  train = [_day(stream, d) for d in (5, 6)]
  test = _day(stream, 7)
  def design(batch):
    return np.concatenate([batch[f"{g}_dense"] for g in
                           ("user", "item", "context")], axis=1)
  x = np.concatenate([design(b) for b in train])
  y = np.concatenate([b["click"] for b in train])
  mean, std = x.mean(0), x.std(0) + 1e-6
  model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
  model.compile(tf.keras.optimizers.Adam(0.05),
                tf.keras.losses.BinaryCrossentropy(from_logits=True))
  model.fit((x - mean) / std, y, batch_size=1024, epochs=4, verbose=0)
  scores = model.predict((design(test) - mean) / std, verbose=0)[:, 0]
  auc = reference_metrics.auc(test["click"], scores)
  base_rate_auc = reference_metrics.auc(test["click"],
                                        np.full(len(scores), y.mean()))
  assert auc > 0.65, auc
  assert base_rate_auc == 0.5


def test_shift_days_change_label_rates_and_feature_scales():
  stream = SyntheticStream(num_days=12, examples_per_day=8000,
                           shift_days=(5, 10))
  before, after = _day(stream, 4), _day(stream, 5)
  assert after["click"].mean() > before["click"].mean() + 0.08
  group = slice(0, 8)  # the context features that change scale
  ratio = (after["context_dense"][:, group].std() /
           before["context_dense"][:, group].std())
  assert ratio == pytest.approx(5.0, rel=0.3)
  # New items appear at a shift.
  assert after["item_id"].max() >= stream.num_items
  assert before["item_id"].max() < stream.num_items
  # Gradual drift between ordinary days: the hidden preference rotates, so
  # the same day-0 model of click given the features degrades slowly.
  quiet = [_day(stream, d)["click"].mean() for d in (1, 2, 3)]
  assert max(quiet) - min(quiet) < 0.03


def test_memory_does_not_depend_on_days():
  small = SyntheticStream(num_days=3, examples_per_day=1000)
  huge = SyntheticStream(num_days=3000, examples_per_day=10_000_000)
  constants = lambda s: sum(int(np.prod(t.shape)) for t in (
      s._user_proj, s._item_proj, s._task_pref))
  assert constants(small) == constants(huge)
  last = huge.rows(tf.constant([huge.num_rows - 1]))
  assert int(last["day"][0]) == 2999


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_days=1), "num_days must be >= 2"),
    (dict(examples_per_day=0), "examples_per_day"),
    (dict(id_zipf_exponent=1.0), "id_zipf_exponent"),
    (dict(new_items_per_shift=0), "new_items_per_shift must be >= 1"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SyntheticStream(**kwargs)
