"""The moving window: day order, resume, held-out day, replicas, errors."""

import numpy as np
import pytest
import tensorflow as tf

from data import schema as schema_lib
from data.source import InMemorySource
from data.synthetic import SyntheticStream
from data.window import MovingWindow
from tests import strategies


def _toy_source(day_sizes):
  """One dense column holding each row's global id: batches name their
  rows."""
  days = np.repeat(np.arange(len(day_sizes)), day_sizes)
  schema = schema_lib.Schema(dense=[schema_lib.DenseFeature("row")],
                             labels=[schema_lib.Label("y", "binary")])
  return InMemorySource(schema, {
      "row": np.arange(len(days), dtype=np.float32)[:, None],
      "y": np.zeros(len(days), np.float32)}, days, name="toy",
                        num_days=len(day_sizes))


def _rows(batch):
  return batch["row"].numpy()[:, 0].astype(int)


def test_days_in_order_and_batches_from_the_window_only():
  source = _toy_source([10, 20, 30, 40, 50])
  window = MovingWindow(source, batch_size=8, window_days=2)
  assert window.eval_day == 4
  np.testing.assert_array_equal(window.train_days, [0, 1, 2, 3])
  np.testing.assert_array_equal(window.steps_per_day, [2, 3, 4, 5])
  days_seen = []
  for step, batch in enumerate(window.train_dataset()):
    day = window.day_of_step(step)
    days_seen.append(day)
    lo = source.day_offsets[max(day - 1, 0)]
    hi = source.day_offsets[day + 1]
    rows = _rows(batch)
    assert np.all((rows >= lo) & (rows < hi)), (step, day, rows)
    np.testing.assert_array_equal(batch["day"].numpy(),
                                  source.day_of_rows(rows).numpy())
  assert days_seen == sorted(days_seen) and len(days_seen) == 14


def test_the_evaluation_day_is_never_trained_on():
  source = _toy_source([5, 5, 5, 5, 5, 5])
  window = MovingWindow(source, batch_size=4, window_days=10, eval_day=3,
                        steps_per_day=30)
  trained = np.concatenate([_rows(b) for b in window.train_dataset()])
  eval_rows = np.concatenate([_rows(b) for b in window.eval_dataset(3)])
  np.testing.assert_array_equal(eval_rows, np.arange(15, 20))
  assert not set(trained) & set(eval_rows)
  assert set(trained) == set(range(15))  # every row of days 0..2 drawn


def test_sampling_is_uniform_over_the_window():
  source = _toy_source([100, 100, 100])
  window = MovingWindow(source, batch_size=500, window_days=2,
                        steps_per_day=20)
  start = window.first_step_of_day(1)
  rows = np.concatenate([_rows(b) for b in window.train_dataset(start)])
  counts = np.bincount(rows, minlength=200)
  assert counts[:200].min() > 0
  # 20000 draws over 200 rows: about 100 each; days 0 and 1 equally often.
  assert abs(counts[:100].sum() - counts[100:200].sum()) < 0.05 * len(rows)


def test_resuming_at_step_k_yields_the_tail_exactly():
  stream = SyntheticStream(num_days=4, examples_per_day=300)
  window = MovingWindow(stream, batch_size=64, window_days=2, seed=9)
  full = list(window.train_dataset())
  for k in (0, 1, 5, window.total_steps - 1):
    tail = list(MovingWindow(stream, batch_size=64, window_days=2,
                             seed=9).train_dataset(start_step=k))
    assert len(tail) == len(full) - k
    for a, b in zip(tail, full[k:]):
      for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
  # A run that stops at step 4 gets steps k..3 and builds nothing after.
  for k in (0, 2, 4):
    head = list(window.train_dataset(start_step=k, stop_step=4))
    assert len(head) == 4 - k
    for a, b in zip(head, full[k:4]):
      np.testing.assert_array_equal(a["user_id"].numpy(),
                                    b["user_id"].numpy())
  for start, stop in ((3, 2), (0, window.total_steps + 1)):
    with pytest.raises(ValueError, match=f"steps {start}..{stop} are "
                       "outside"):
      window.train_dataset(start_step=start, stop_step=stop)
  other = next(iter(MovingWindow(stream, batch_size=64, window_days=2,
                                 seed=10).train_dataset()))
  assert not np.array_equal(other["user_id"].numpy(),
                            full[0]["user_id"].numpy())


def test_replicas_split_the_same_global_batch():
  source = _toy_source([40, 40, 40])
  window = MovingWindow(source, batch_size=8, steps_per_day=3)
  strategy = strategies.two_cpu_replicas()
  dist = strategy.distribute_datasets_from_function(
      lambda ctx: window.train_dataset(input_context=ctx))
  for step, (global_batch, per_replica) in enumerate(
      zip(window.train_dataset(), dist)):
    parts = [_rows(dict(row=r)) for r in
             strategy.experimental_local_results(per_replica["row"])]
    np.testing.assert_array_equal(np.concatenate(parts),
                                  _rows(global_batch))
  assert step == window.total_steps - 1


@pytest.mark.parametrize("day_sizes,kwargs,message", [
    ([5, 5, 5], dict(eval_day=3), "evaluation day 3 is absent"),
    ([5, 5, 0], dict(), "evaluation day 2 has no examples"),
    ([0, 0, 5, 5], dict(window_days=1, steps_per_day=2),
     "window of training day 0 \\(days 0..0\\) has no examples"),
    ([0, 0, 5], dict(), "no training steps"),
    ([5, 5, 5], dict(first_train_day=2), "first_train_day"),
    ([5, 5, 5], dict(batch_size=0), "batch_size must be >= 1"),
    ([5, 5, 5], dict(window_days=0), "window_days must be >= 1"),
])
def test_bad_plans_raise_naming_the_day(day_sizes, kwargs, message):
  kwargs.setdefault("batch_size", 2)
  with pytest.raises(ValueError, match=message):
    MovingWindow(_toy_source(day_sizes), **kwargs)


def test_in_memory_source_rejects_nan_and_missing_columns():
  schema = schema_lib.Schema(dense=[schema_lib.DenseFeature("x")],
                             labels=[schema_lib.Label("y", "binary")])
  x = np.zeros((3, 1), np.float32)
  with pytest.raises(ValueError, match="column 'y' has a NaN.*row 1, day 0"):
    InMemorySource(schema, {"x": x, "y": np.array([0, np.nan, 1])},
                   [0, 0, 1], name="logs.csv")
  with pytest.raises(ValueError, match="logs.csv: missing columns for \\['y'\\]"):
    InMemorySource(schema, {"x": x}, [0, 0, 1], name="logs.csv")
  with pytest.raises(ValueError, match="sorted by day"):
    InMemorySource(schema, {"x": x, "y": np.zeros(3)}, [1, 0, 1])


def _parity_source(day_sizes):
  """_toy_source with y = row id % 2."""
  source = _toy_source(day_sizes)
  days = np.repeat(np.arange(len(day_sizes)), day_sizes)
  return InMemorySource(source.schema, {
      "row": np.arange(len(days), dtype=np.float32)[:, None],
      "y": (np.arange(len(days)) % 2).astype(np.float32)}, days,
                        name="toy", num_days=len(day_sizes))


def test_a_fixed_sample_of_the_evaluation_day():
  source = _parity_source([10, 20, 30, 40, 50])  # day 4: rows 100..149
  window = MovingWindow(source, batch_size=8, eval_sample_rows=8)
  # 100 + floor(i * 50 / 8), i = 0..7: evenly spaced, the same every time.
  want = [100, 106, 112, 118, 125, 131, 137, 143]
  np.testing.assert_array_equal(window.eval_rows(), want)
  for _ in range(2):
    np.testing.assert_array_equal(
        np.concatenate([_rows(b) for b in window.eval_dataset(3)]), want)
  lines = []
  # Odd rows among them: 125, 131, 137, 143.
  assert window.check_eval_day(log=lines.append) == {"y": (4, 4)}
  assert lines == ["WARNING: the evaluation day 4 has 8 examples "
                   "(MovingWindow.eval_sample_rows of its 50), fewer than "
                   "MovingWindow.min_eval_examples = 1,000; y: 4 positives, "
                   "4 negatives: its AUCs are noisy; evaluate a larger day "
                   "(MovingWindow.eval_day or eval_date)."]
  # A sample as large as the day is the day.
  whole = MovingWindow(source, batch_size=8, eval_sample_rows=50)
  np.testing.assert_array_equal(whole.eval_rows(), np.arange(100, 150))


def test_the_evaluation_batches_are_cached_when_they_fit():
  source = _parity_source([10, 20, 30, 40, 50])
  # A row is row (float32), y (float32) and day (int64): 16 bytes; the
  # evaluation day's 50 rows, 800.
  for budget, cached in ((800, True), (799, False), (0, False)):
    window = MovingWindow(source, batch_size=8, eval_cache_bytes=budget)
    dataset = window.eval_dataset(7)
    assert window.eval_cached(dataset) == cached, budget
    for _ in range(2):  # cached or not, the same batches
      np.testing.assert_array_equal(
          np.concatenate([_rows(b) for b in dataset]), np.arange(100, 150))


def test_the_training_batches_are_built_ahead_within_prefetch_bytes():
  source = _parity_source([10, 20, 30, 40, 50])
  # 16 bytes a row (see above): a batch of 8 rows is 128 bytes, a
  # replica's half of it 64.
  reference = None
  for budget, per_batch, per_half in ((1000, 7, 15), (100, 1, 1),
                                      (0, tf.data.AUTOTUNE,
                                       tf.data.AUTOTUNE)):
    window = MovingWindow(source, batch_size=8, prefetch_bytes=budget)
    dataset = window.train_dataset()
    assert window.prefetch_batches(dataset, 8) == per_batch, budget
    assert window.prefetch_batches(dataset, 4) == per_half, budget
    rows = np.concatenate([_rows(b) for b in dataset])
    if reference is None:
      reference = rows
    np.testing.assert_array_equal(rows, reference)  # the same batches


@pytest.mark.parametrize("kwargs,message", [
    ({"eval_sample_rows": 0}, "eval_sample_rows must be >= 1"),
    ({"eval_cache_bytes": -1}, "eval_cache_bytes must be >= 0"),
    ({"prefetch_bytes": -1}, "prefetch_bytes must be >= 0"),
    ({"prefetch_bytes": 1.5}, "prefetch_bytes must be a whole number"),
])
def test_bad_evaluation_settings_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    MovingWindow(_toy_source([10, 10]), batch_size=4, **kwargs)
