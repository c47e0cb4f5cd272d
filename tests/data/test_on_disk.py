"""A prepared log on disk serves exactly the batches of its source."""

import gc
import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from data import on_disk
from data import prepare as prepare_lib
from data import schema as schema_lib
from data.source import InMemorySource
from data.synthetic import SyntheticStream
from data.window import MovingWindow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DAYS, PER_DAY = 5, 1500


def _stream():
  return SyntheticStream(num_days=DAYS, examples_per_day=PER_DAY,
                         shift_days=(2,), seed=4)


def _in_memory(stream):
  """The reference: every row generated once per day, held as arrays."""
  days = [stream.rows(tf.range(stream.day_offsets[d],
                               stream.day_offsets[d + 1], dtype=tf.int64))
          for d in range(stream.num_days)]
  columns = {k: np.concatenate([d[k].numpy() for d in days])
             for k in days[0] if k != schema_lib.DAY}
  day_of_row = np.concatenate([d[schema_lib.DAY].numpy() for d in days])
  return InMemorySource(stream.schema, columns, day_of_row, name="reference")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """(stream, in-memory reference, prepared dir): prepared in chunks of
  1000 rows, so chunks straddle days' ends differently from the reference."""
  stream = _stream()
  path = str(tmp_path_factory.mktemp("prepared"))
  prepare_lib.prepare(stream, path, chunk=1000, log=lambda _: None)
  return stream, _in_memory(stream), path


def _copy(prepared, tmp_path):
  target = str(tmp_path / "copy")
  shutil.copytree(prepared[2], target)
  return target


def _assert_same(a, b, exact=True):
  assert list(a) == list(b) if exact else sorted(a) == sorted(b)
  for key in a:
    x, y = np.asarray(a[key]), np.asarray(b[key])
    assert x.dtype == y.dtype and x.shape == y.shape, key
    if exact or x.dtype != np.float32:
      np.testing.assert_array_equal(x, y, err_msg=key)
    else:  # the stream itself: one ulp between batch shapes (README)
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=key)


def test_schema_days_and_rows_match_the_sources(prepared):
  stream, reference, path = prepared
  source = on_disk.on_disk_source(path)
  assert source.schema == stream.schema
  np.testing.assert_array_equal(source.day_offsets, stream.day_offsets)
  assert source.first_date == stream.first_date is not None  # the calendar
  rng = np.random.default_rng(0)
  ids = np.concatenate([
      rng.integers(0, stream.num_rows, 300),
      [0, stream.num_rows - 1, PER_DAY - 1, PER_DAY, 3 * PER_DAY]])
  got = {k: v.numpy() for k, v in source.rows(tf.constant(ids)).items()}
  _assert_same(got, {k: v.numpy() for k, v in
                     reference.rows(tf.constant(ids)).items()})
  _assert_same(got, {k: v.numpy() for k, v in
                     stream.rows(tf.constant(ids)).items()}, exact=False)
  one_day = np.arange(2 * PER_DAY + 7, 2 * PER_DAY + 40)
  _assert_same({k: v.numpy() for k, v in source.rows(one_day).items()},
               {k: v.numpy() for k, v in reference.rows(one_day).items()})


def test_rows_trace_with_static_shapes(prepared):
  source = on_disk.on_disk_source(prepared[2])
  traced = tf.function(source.rows).get_concrete_function(
      tf.TensorSpec([None], tf.int64))
  shapes = {k: v.shape.as_list() for k, v in
            traced.structured_outputs.items()}
  assert shapes["user_id"] == [None]
  assert shapes["item_tags"] == [None, 5]
  assert shapes["context_dense"] == [None, 24]
  assert shapes["click"] == [None] and shapes["day"] == [None]


def test_window_batches_equal_the_in_memory_ones(prepared):
  stream, reference, path = prepared
  source = on_disk.on_disk_source(path)

  def batches(src, start, n):
    window = MovingWindow(src, batch_size=256, window_days=2, seed=7)
    return [{k: v.numpy() for k, v in b.items()}
            for b in window.train_dataset(start).take(n)]

  window = MovingWindow(source, batch_size=256, window_days=2, seed=7)
  for start in (0, window.first_step_of_day(3) - 1):
    for a, b in zip(batches(source, start, 4), batches(reference, start, 4)):
      _assert_same(a, b)
  for a, b in zip(batches(source, 5, 2), batches(stream, 5, 2)):
    _assert_same(a, b, exact=False)
  evals = [zip(MovingWindow(s, batch_size=512).eval_dataset(),
               MovingWindow(reference, batch_size=512).eval_dataset())
           for s in (source,)][0]
  for a, b in evals:
    _assert_same({k: v.numpy() for k, v in a.items()},
                 {k: v.numpy() for k, v in b.items()})


def test_only_recent_days_stay_mapped(prepared, tmp_path):
  path = _copy(prepared, tmp_path)  # mapped by no other test's source
  source = on_disk.OnDiskSource(path, max_mapped_days=1)

  def mapped_files():
    gc.collect()
    with open("/proc/self/maps") as f:
      return {line.split()[-1] for line in f if path in line}

  for day in range(DAYS):  # a two-day window walking over the log
    lo = source.day_offsets[max(day - 1, 0)]
    source.rows(np.arange(lo, source.day_offsets[day + 1], 97))
  assert source.mapped_days == [2, 3, 4]  # two per batch, plus one
  assert mapped_files() == {os.path.join(path, on_disk.day_file(d))
                            for d in (2, 3, 4)}


def test_other_sources_with_vectors_and_an_empty_day(tmp_path):
  days = np.repeat([0, 2, 3], [3, 4, 2])  # day 1 is empty
  schema = schema_lib.Schema(
      categorical=[schema_lib.CategoricalFeature("tags", 9, max_len=3)],
      dense=[schema_lib.DenseFeature("x", 1, "log1p", 0.5, 2.0)],
      labels=[schema_lib.Label("y", "regression", "log1p")])
  rng = np.random.default_rng(1)
  reference = InMemorySource(schema, {
      "tags": rng.integers(-1, 9, (9, 3)), "x": rng.normal(size=(9, 1)),
      "y": rng.normal(size=9)}, days, name="toy", num_days=5)
  prepare_lib.prepare(reference, str(tmp_path), chunk=2, log=lambda _: None)
  source = on_disk.on_disk_source(str(tmp_path))
  assert source.schema == schema and source.num_days == 5
  assert [source.day_size(d) for d in range(5)] == [3, 0, 4, 2, 0]
  ids = tf.constant([8, 0, 3, 7, 2, 5])
  _assert_same({k: v.numpy() for k, v in source.rows(ids).items()},
               {k: v.numpy() for k, v in reference.rows(ids).items()})
  with pytest.raises(Exception, match="row id 9 is outside"):
    source.rows(tf.constant([9]))


def test_missing_directory_and_manifest(prepared, tmp_path):
  with pytest.raises(on_disk.NotPreparedError, match="does not exist"):
    on_disk.on_disk_source(str(tmp_path / "nowhere"))
  path = _copy(prepared, tmp_path)
  os.remove(os.path.join(path, "manifest.json"))
  with pytest.raises(on_disk.NotPreparedError, match="no manifest.json.*"
                     "interrupted"):
    on_disk.on_disk_source(path)


def test_corrupt_or_edited_manifest(prepared, tmp_path):
  path = _copy(prepared, tmp_path)
  manifest_path = os.path.join(path, "manifest.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  with open(manifest_path, "w") as f:
    f.write('{"format": ')
  with pytest.raises(on_disk.ManifestError, match="not readable JSON"):
    on_disk.on_disk_source(path)
  manifest["day_sizes"][1] -= 1
  manifest["days"][1]["rows"] -= 1
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(on_disk.ManifestError, match="fingerprint .* does not "
                     "match its contents"):
    on_disk.on_disk_source(path)


def test_missing_truncated_or_garbled_day_files(prepared, tmp_path):
  path = _copy(prepared, tmp_path)
  day2 = os.path.join(path, on_disk.day_file(2))
  size = os.path.getsize(day2)
  with open(day2, "r+b") as f:
    f.truncate(size - 100)
  with pytest.raises(on_disk.DayFileError, match=f"day 2 file {day2} is "
                     f"{size - 100} bytes, the manifest says {size}: "
                     "truncated"):
    on_disk.on_disk_source(path)
  with open(day2, "r+b") as f:  # same size, footer overwritten
    f.truncate(size)
  with pytest.raises(on_disk.DayFileError, match="sha256"):
    on_disk.on_disk_source(path, verify_checksums=True)
  source = on_disk.on_disk_source(path)
  with pytest.raises(Exception, match="day 2 file .* is not a readable "
                     "Arrow file"):
    source.rows(tf.constant([2 * PER_DAY]))
  os.remove(day2)
  with pytest.raises(on_disk.DayFileError, match="day 2 file .* is missing"):
    on_disk.on_disk_source(path)


def test_fingerprint_expected_by_the_config(prepared, tmp_path):
  source = on_disk.on_disk_source(prepared[2])
  assert on_disk.on_disk_source(
      prepared[2], expected_fingerprint=source.fingerprint)
  with pytest.raises(on_disk.FingerprintMismatchError, match="expects 123"):
    on_disk.on_disk_source(prepared[2], expected_fingerprint="123")
  # A resumed run checks it: the same sizes and schema with other rows
  # (another seed) are other data.
  from ranking import integrity  # pylint: disable=g-import-not-at-top
  recorded = integrity.data_fingerprint(MovingWindow(source, batch_size=64))
  assert recorded["content_sha256"] == source.fingerprint
  other = str(tmp_path)
  prepare_lib.prepare(SyntheticStream(num_days=DAYS, examples_per_day=PER_DAY,
                                      shift_days=(2,), seed=5), other,
                      log=lambda _: None)
  now = integrity.data_fingerprint(MovingWindow(
      on_disk.on_disk_source(other), batch_size=64))
  assert {k for k in now if now[k] != recorded[k]} == {"content_sha256"}


class _FailsOnDay(SyntheticStream):
  """A stream whose reading breaks on one day (a crash mid-prepare)."""

  def rows(self, row_ids):
    if int(self.day_of_rows(row_ids[:1])[0]) == 2:
      raise RuntimeError("disk on fire")
    return super().rows(row_ids)


def test_an_interrupted_prepare_leaves_nothing_complete(tmp_path):
  path = str(tmp_path)
  with pytest.raises(RuntimeError, match="disk on fire"):
    prepare_lib.prepare(_FailsOnDay(num_days=4, examples_per_day=200), path,
                        log=lambda _: None)
  assert sorted(os.listdir(path)) == [on_disk.day_file(0),
                                      on_disk.day_file(1)]
  with pytest.raises(on_disk.NotPreparedError, match="interrupted"):
    on_disk.on_disk_source(path)
  stream = SyntheticStream(num_days=4, examples_per_day=200)
  prepare_lib.prepare(stream, path, log=lambda _: None)  # no manifest: redo
  assert on_disk.on_disk_source(path).num_rows == 800
  with pytest.raises(FileExistsError, match="--overwrite"):
    prepare_lib.prepare(stream, path, log=lambda _: None)
  short = SyntheticStream(num_days=2, examples_per_day=100)
  prepare_lib.prepare(short, path, overwrite=True, log=lambda _: None)
  assert on_disk.on_disk_source(path).num_days == 2
  assert len(os.listdir(path)) == 3  # the old days 2 and 3 are gone
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="notes.txt"):
    prepare_lib.prepare(short, str(other), log=lambda _: None)


def test_the_command_and_the_gin_config(tmp_path):
  out = str(tmp_path / "prepared")
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "data.prepare",
       "--gin_file=configs/data/synthetic.gin", "--source=SyntheticStream",
       "--gin_param=SyntheticStream.num_days = 3",
       "--gin_param=SyntheticStream.examples_per_day = 300",
       f"--output_dir={out}"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "prepared 900 rows of 3 days" in result.stdout
  gin.clear_config()
  try:
    from ranking import launch  # pylint: disable=g-import-not-at-top
    launch.parse_gin(["configs/data/on_disk.gin"],
                     [f"on_disk_source.path = {out!r}"])
    source = gin.query_parameter("Trainer.source").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert isinstance(source, on_disk.OnDiskSource)
  stream = SyntheticStream(num_days=3, examples_per_day=300)
  ids = tf.constant([0, 299, 300, 899])
  _assert_same({k: v.numpy() for k, v in source.rows(ids).items()},
               {k: v.numpy() for k, v in stream.rows(ids).items()},
               exact=False)
