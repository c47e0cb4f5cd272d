"""A user's own CSV / Parquet logs, and the materialised synthetic stream."""

import os

import gin
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data import files, materialize
from data.encoding import stable_hash
from data.synthetic import SyntheticStream

# 2024-03-01 23:30 UTC is 2024-03-02 07:30 in Shanghai (UTC+8).
ROWS = """ts,user,genres,age,watch,click
1709335800,u1,a|b,30,10,1
1709251200,u2,b,40,0,0
1709424000,u1,,50,100,1
"""


def _write(tmp_path, text=ROWS, name="logs.csv"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _source(path, **kwargs):
  args = dict(paths=path, timestamp_column="ts",
              labels={"click": "binary", "watch": "regression:log1p"},
              categorical={"user": 100}, multivalued={"genres": (50, 3)},
              dense={"age": "none"}, time_zone="Asia/Shanghai")
  args.update(kwargs)
  return files.file_source(**args)


def test_csv_logs_become_a_source_sorted_by_local_day(tmp_path):
  source = _source(_write(tmp_path))
  # Shanghai dates: 03-01 08:00, 03-02 07:30, 03-03 08:00 -> days 0, 1, 2.
  np.testing.assert_array_equal(source.day_offsets, [0, 1, 2, 3])
  batch = {k: v.numpy() for k, v in source.rows(tf.range(3)).items()}
  np.testing.assert_array_equal(batch["day"], [0, 1, 2])
  np.testing.assert_array_equal(batch["click"], [0, 1, 1])
  np.testing.assert_allclose(batch["watch"], np.log1p([0, 10, 100]),
                             rtol=1e-6)
  u1, u2 = stable_hash(["u1", "u2"], 100)
  np.testing.assert_array_equal(batch["user"], [u2, u1, u1])
  a, b = stable_hash(["a", "b"], 50)
  np.testing.assert_array_equal(batch["genres"],
                                [[b, -1, -1], [a, b, -1], [-1, -1, -1]])
  # Normalised with the days before the last (ages 40, 30: mean 35, std 5).
  np.testing.assert_allclose(batch["age"][:, 0], [1, -1, 3], rtol=1e-6)
  assert source.schema.label("watch").transform == "log1p"


def test_parquet_and_globs(tmp_path):
  frame = pd.read_csv(_write(tmp_path))
  frame.iloc[:2].to_parquet(tmp_path / "part-0.parquet")
  frame.iloc[2:].to_parquet(tmp_path / "part-1.parquet")
  source = _source(str(tmp_path / "part-*.parquet"))
  assert source.num_rows == 3 and source.num_days == 3


@pytest.mark.parametrize("text,kwargs,error,message", [
    (ROWS.replace("click", "clicked"), {}, ValueError,
     "logs.csv: missing column\\(s\\) \\['click'\\]"),
    (ROWS.replace("40,0,0", "40,0,"), {}, ValueError,
     "logs.csv line 3, column 'click': NaN or non-numeric label \\(empty\\)"),
    (ROWS.replace("1709251200", "yesterday"), {}, ValueError,
     "timestamps mix numbers and other values .*logs.csv line 3, column "
     "'ts': 'yesterday'"),
    (ROWS.replace(",0\n", ",2\n"), {}, ValueError, "must be 0 or 1"),
    (ROWS, dict(labels={"click": "ordinal"}), ValueError, "kind must be"),
    ("ts,user\n", {}, ValueError, "logs.csv: no rows"),
])
def test_bad_logs_name_the_file_and_column(tmp_path, text, kwargs, error,
                                           message):
  with pytest.raises(error, match=message):
    _source(_write(tmp_path, text), **kwargs)


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing-\\*.csv"):
    _source(str(tmp_path / "nothing-*.csv"))


def test_materialised_stream_reads_back_through_gin(tmp_path):
  stream = SyntheticStream(num_days=3, examples_per_day=200, seed=2)
  materialize.materialize(stream, str(tmp_path), chunk=128,
                          log=lambda _: None)
  assert sorted(os.listdir(tmp_path)) == [
      "columns.gin", "day_000.parquet", "day_001.parquet", "day_002.parquet"]
  gin.clear_config()
  try:
    gin.parse_config_file(str(tmp_path / "columns.gin"))
    source = files.file_source()
  finally:
    gin.clear_config()
  np.testing.assert_array_equal(source.day_offsets, stream.day_offsets)
  want = {k: v.numpy() for k, v in stream.rows(tf.range(600)).items()}
  got = {k: v.numpy() for k, v in source.rows(tf.range(600)).items()}
  for label in stream.schema.label_names:
    np.testing.assert_array_equal(got[label], want[label])
  np.testing.assert_array_equal(got["day"], want["day"])
  assert len(source.schema.feature_names) == 25 + 72


def _crc(text, vocab):
  import zlib  # pylint: disable=g-import-not-at-top
  return zlib.crc32(text.encode()) % vocab


def test_categorical_ids_are_the_hash_of_each_value_text():
  # Each distinct value is hashed once; a missing value is "".
  got = files._hashed_ids(pd.Series([3.0, np.nan, 7.5, 3.0]), 101)
  np.testing.assert_array_equal(
      got, [_crc("3.0", 101), _crc("", 101), _crc("7.5", 101),
            _crc("3.0", 101)])
  got = files._hashed_ids(pd.Series(["x", None, 12], dtype=object), 101)
  np.testing.assert_array_equal(got, [_crc("x", 101), _crc("", 101),
                                      _crc("12", 101)])


def test_joined_cells_are_split_and_hashed_in_arrow_as_per_cell():
  pad = -1
  joined = pd.Series(["a|b|c", "", None, "b||d|e|f|g"], dtype=object)
  got = files._joined_ids(joined, "|", 97, 4)
  h = {v: _crc(v, 97) for v in "abcdefg"}
  # Empty ids ("", "b||d") are dropped; a row keeps its first max_len ids.
  np.testing.assert_array_equal(got, [
      [h["a"], h["b"], h["c"], pad], [pad] * 4, [pad] * 4,
      [h["b"], h["d"], h["e"], h["f"]]])
  # Lists of strings keep an empty string as an id, as per cell.
  lists = pd.Series([["a", ""], [], None], dtype=object)
  np.testing.assert_array_equal(files._joined_ids(lists, "|", 97, 3), [
      [h["a"], _crc("", 97), pad], [pad] * 3, [pad] * 3])
  # Numbers and lists of numbers are left to the per-cell path.
  assert files._joined_ids(pd.Series([5, 7]), "|", 97, 2) is None
  assert files._joined_ids(pd.Series([[1, 2]], dtype=object), "|", 97,
                           2) is None
