"""The MovieLens builder and source: real 100K files, a 1M fixture, errors.

Expected values are computed here with pandas straight from the raw files,
not through data/movielens.py. The 100K files are read in place from
../shared/data/ml-100k (research use only: never copied into the repo).
"""

import datetime
import os
import zlib

import gin
import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds

from data import movielens
from data.window import MovingWindow
# The shipped config binds Trainer.eval_every_days: register Trainer.
from ranking import trainer  # pylint: disable=unused-import
from tests.data.reference_calendar import all_rows, local_days, local_time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ML_100K = os.path.join(REPO_ROOT, "..", "shared", "data", "ml-100k")
CHICAGO = "America/Chicago"

needs_100k = pytest.mark.skipif(
    not os.path.isfile(os.path.join(ML_100K, "u.data")),
    reason=f"MovieLens 100K is not in {ML_100K} (shared data, not in the "
           "repo)")


def _local(seconds):
  return local_time(seconds, "s", CHICAGO)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
  """(source, rows of the source, pandas ratings in stable time order)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  source = movielens.movielens_source(ML_100K, "100k", data_dir=data_dir)
  ratings = pd.read_csv(os.path.join(ML_100K, "u.data"), sep="\t",
                        names=["user", "item", "rating", "ts"])
  ratings = ratings.sort_values("ts", kind="stable").reset_index(drop=True)
  local = _local(ratings["ts"])
  ratings["day"] = local_days(local)
  ratings["hour"] = local.dt.hour.to_numpy()
  ratings["weekday"] = local.dt.weekday.to_numpy()
  return source, all_rows(source), ratings, data_dir


@needs_100k
def test_100k_has_every_rating(ml100k):
  source, rows, ratings, data_dir = ml100k
  assert len(ratings) == 100_000
  assert source.num_rows == 100_000
  builder = movielens.MovieLensLocal(config="100k", data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == 100_000
  assert source.name == "movielens-100k"


@needs_100k
def test_100k_rows_are_the_ratings_in_time_order(ml100k):
  _, rows, ratings, _ = ml100k
  np.testing.assert_array_equal(rows["user_id"], ratings["user"])
  np.testing.assert_array_equal(rows["item_id"], ratings["item"])
  np.testing.assert_array_equal(rows["rating"], ratings["rating"])
  assert np.all(np.diff(rows["day"]) >= 0)


@needs_100k
def test_100k_days_are_chicago_dates(ml100k):
  source, rows, ratings, _ = ml100k
  np.testing.assert_array_equal(rows["day"], ratings["day"])
  np.testing.assert_array_equal(rows["hour"], ratings["hour"])
  np.testing.assert_array_equal(rows["weekday"], ratings["weekday"])
  counts = np.bincount(ratings["day"])
  np.testing.assert_array_equal(np.diff(source.day_offsets), counts)
  # 1997-09-20 03:05:10 UTC is still 1997-09-19 in Chicago, a Friday.
  first = _local(ratings["ts"]).iloc[0]
  assert str(first.date()) == "1997-09-19" and rows["weekday"][0] == 4
  assert source.num_days == ratings["day"].max() + 1


@needs_100k
def test_100k_labels(ml100k):
  source, rows, ratings, _ = ml100k
  assert rows["liked"].sum() == (ratings["rating"] >= 4).sum()
  np.testing.assert_array_equal(rows["liked"], ratings["rating"] >= 4)
  assert source.schema.label("rating").kind == "regression"
  assert source.schema.label("liked").kind == "binary"


@needs_100k
def test_100k_genres_padded(ml100k):
  source, rows, _, _ = ml100k
  items = pd.read_csv(os.path.join(ML_100K, "u.item"), sep="|",
                      encoding="latin-1", header=None)
  flags = items.iloc[:, -19:].to_numpy()
  genre_names = pd.read_csv(os.path.join(ML_100K, "u.genre"), sep="|",
                            header=None)[0].tolist()
  max_len = int(flags.sum(axis=1).max())
  spec = {f.name: f for f in source.schema.categorical}["genres"]
  assert spec.max_len == max_len and spec.vocab_size == 19
  toy_story = rows["genres"][rows["item_id"] == 1]
  assert items.iloc[0, 1] == "Toy Story (1995)"
  expected = [genre_names.index(g)
              for g in ("Animation", "Children's", "Comedy")]
  assert len(toy_story) == (rows["item_id"] == 1).sum() > 0
  np.testing.assert_array_equal(
      toy_story, np.tile(expected + [-1] * (max_len - 3),
                         (len(toy_story), 1)))
  # Every rating's genres are its movie's flags, padded with -1.
  ids = rows["genres"]
  for row in np.flatnonzero(rows["item_id"] < 50):
    want = np.flatnonzero(flags[rows["item_id"][row] - 1])
    np.testing.assert_array_equal(ids[row, :len(want)], want)
    assert np.all(ids[row, len(want):] == -1)


@needs_100k
def test_100k_user_features(ml100k):
  source, rows, _, _ = ml100k
  users = pd.read_csv(os.path.join(ML_100K, "u.user"), sep="|", header=None,
                      names=["user", "age", "gender", "occupation", "zip"],
                      dtype={"zip": str})
  occupations = pd.read_csv(os.path.join(ML_100K, "u.occupation"),
                            header=None)[0].tolist()
  joined = users.set_index("user").loc[rows["user_id"]]
  np.testing.assert_array_equal(rows["gender"], joined["gender"] == "M")
  np.testing.assert_array_equal(
      rows["occupation"], [occupations.index(o) for o in joined["occupation"]])
  spec = {f.name: f for f in source.schema.dense}["age"]
  fit = rows["day"] < rows["day"].max()
  ages = joined["age"].to_numpy(float)
  assert spec.mean == pytest.approx(ages[fit].mean())
  assert spec.std == pytest.approx(ages[fit].std())
  np.testing.assert_allclose(rows["age"][:, 0],
                             (ages - ages[fit].mean()) / ages[fit].std(),
                             rtol=1e-5, atol=1e-5)
  buckets = {f.name: f for f in source.schema.categorical}[
      "zip_prefix"].vocab_size
  np.testing.assert_array_equal(
      rows["zip_prefix"],
      [zlib.crc32(z[:3].encode()) % buckets for z in joined["zip"]])


@needs_100k
def test_100k_evaluation_day_never_in_a_training_window(ml100k):
  source, _, ratings, _ = ml100k
  window = MovingWindow(source, batch_size=1024, window_days=7)
  eval_day = ratings["day"].max()
  assert window.eval_day == eval_day == source.num_days - 1
  first_eval_row = source.day_offsets[eval_day]
  assert first_eval_row == (ratings["day"] < eval_day).sum()
  for step in range(window.total_steps):
    day = window.day_of_step(step)
    rows = window.row_ids(step).numpy()
    assert rows.max() < first_eval_row, step
    lo = source.day_offsets[max(day - 6, 0)]
    assert rows.min() >= lo and rows.max() < source.day_offsets[day + 1]
  eval_rows = np.concatenate([b["day"].numpy()
                              for b in window.eval_dataset(8192)])
  assert len(eval_rows) == (ratings["day"] == eval_day).sum()
  assert np.all(eval_rows == eval_day)


@needs_100k
def test_100k_dates_name_chicago_days(ml100k):
  source, _, ratings, _ = ml100k
  # Day 0 is the Chicago date of the first rating (its UTC date is
  # 1997-09-20); the last day is 11 + 31 + 30 + 31 + 31 + 28 + 31 + 22 =
  # 215 days later.
  assert source.first_date == datetime.date(1997, 9, 19)
  assert source.num_days == 216
  assert source.date_of_day(215) == datetime.date(1998, 4, 22)
  window = MovingWindow(source, batch_size=1024, window_days=7,
                        eval_date="1998-04-22", first_train_date="1997-10-01")
  assert window.eval_day == 215 and window.train_days[0] == 12
  # Its last day is small: a warning, with the counts of the binary task.
  last = ratings[ratings["day"] == 215]
  liked = int((last["rating"] >= 4).sum())
  lines = []
  assert window.check_eval_day(log=lines.append) == {
      "liked": (liked, len(last) - liked)}
  assert lines == [
      f"WARNING: the evaluation day 215 (1998-04-22) has {len(last)} "
      "examples, fewer than MovingWindow.min_eval_examples = 1,000; liked: "
      f"{liked} positives, {len(last) - liked} negatives: its AUCs are noisy"
      "; evaluate a larger day (MovingWindow.eval_day or eval_date)."]


# A MovieLens 1M fixture, written here: "::"-separated, Latin-1 titles.

_USERS_1M = ["1::F::1::10::48067", "2::M::56::16::70072",
             "3::M::25::15::55117-1234"]
_MOVIES_1M = ["1::Toy Story (1995)::Animation|Children's|Comedy",
              "2::Café Society (1995)::Drama",
              "3::Heat (1995)::Action|Crime|Thriller|Romance"]
# Local Chicago times: 2000-10-28 23:30 CDT, 10-29 00:30 CDT, 10-29 01:30 CST
# (after the fall-back), 10-30 00:10 CST, 10-30 23:59 CST.
_STAMPS_1M = ["2000-10-28 23:30", "2000-10-29 00:30", "2000-10-29 07:30Z",
              "2000-10-30 00:10", "2000-10-30 23:59"]


def _stamp(text):
  if text.endswith("Z"):
    return int(pd.Timestamp(text[:-1], tz="UTC").timestamp())
  return int(pd.Timestamp(text, tz=CHICAGO).timestamp())


def _ratings_1m():
  rows = [(1, 1, 5), (2, 2, 3), (3, 3, 4), (1, 3, 1), (2, 1, 4)]
  return [f"{u}::{m}::{r}::{_stamp(s)}"
          for (u, m, r), s in zip(rows, _STAMPS_1M)]


def _write_1m(folder, ratings=None, users=None, movies=None):
  os.makedirs(folder, exist_ok=True)
  for name, lines in (("ratings.dat", ratings or _ratings_1m()),
                      ("users.dat", users or _USERS_1M),
                      ("movies.dat", movies or _MOVIES_1M)):
    with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
      f.write("\n".join(lines) + "\n")
  return str(folder)


def test_1m_fixture(tmp_path):
  manual = _write_1m(tmp_path / "ml-1m")
  # Shuffle the file: the source sorts by time.
  lines = _ratings_1m()
  _write_1m(manual, ratings=[lines[i] for i in (3, 0, 4, 2, 1)])
  source = movielens.movielens_source(manual, "1m",
                                      data_dir=str(tmp_path / "tfds"))
  rows = all_rows(source)
  raw = pd.read_csv(os.path.join(manual, "ratings.dat"), sep="::",
                    engine="python", names=["user", "item", "rating", "ts"])
  raw = raw.sort_values("ts", kind="stable")
  local = _local(raw["ts"])
  np.testing.assert_array_equal(rows["user_id"], raw["user"])
  np.testing.assert_array_equal(rows["item_id"], raw["item"])
  np.testing.assert_array_equal(rows["day"], local_days(local))
  np.testing.assert_array_equal(rows["day"], [0, 1, 1, 2, 2])
  np.testing.assert_array_equal(rows["hour"], [23, 0, 1, 0, 23])
  np.testing.assert_array_equal(rows["rating"], raw["rating"])
  np.testing.assert_array_equal(rows["liked"], raw["rating"] >= 4)
  # Users: gender F=0/M=1, occupation = the 1M code, age = the age code.
  np.testing.assert_array_equal(rows["gender"], [0, 1, 1, 0, 1])
  np.testing.assert_array_equal(rows["occupation"], [10, 16, 15, 10, 16])
  ages = np.array([1, 56, 25, 1, 56], float)
  fit = rows["day"] < 2
  np.testing.assert_allclose(
      rows["age"][:, 0], (ages - ages[fit].mean()) / ages[fit].std(),
      rtol=1e-5)
  np.testing.assert_array_equal(
      rows["zip_prefix"],
      [zlib.crc32(z.encode()) % 1000 for z in
       ("480", "700", "551", "480", "700")])
  genres = movielens.GENRES
  spec = {f.name: f for f in source.schema.categorical}["genres"]
  assert spec.max_len == 4
  np.testing.assert_array_equal(rows["genres"][0], [
      genres.index(g) for g in ("Animation", "Children's", "Comedy")] + [-1])
  np.testing.assert_array_equal(rows["genres"][1],
                                [genres.index("Drama"), -1, -1, -1])
  assert source.schema.categorical[0].vocab_size == 4  # user ids 1..3

  # The prepared TFDS dataset also reads through the standard API, in the
  # files' order, with the class names of its labels.
  builder = movielens.MovieLensLocal(config="1m",
                                     data_dir=str(tmp_path / "tfds"))
  first = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
  assert (first["user_id"], first["item_id"]) == (1, 3)
  features = builder.info.features
  assert features["occupation"].int2str(first["occupation"]) == "K-12 student"
  # Genres keep movies.dat's order.
  assert [features["genres"].feature.int2str(g) for g in first["genres"]] == [
      "Action", "Crime", "Thriller", "Romance"]
  assert first["zip_prefix"] == b"480" and first["day"] == 2


def test_1m_through_the_shipped_gin_config(tmp_path):
  manual = _write_1m(tmp_path / "ml-1m")
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO_ROOT, "configs", "data", "movielens.gin")],
        [f"movielens_source.manual_dir = {manual!r}",
         "movielens_source.variant = '1m'"])
    source = movielens.movielens_source()  # a temporary TFDS data_dir
  finally:
    gin.clear_config()
  assert source.name == "movielens-1m" and source.num_rows == 5


# Bad input.


def test_missing_manual_dir_is_named(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    movielens.movielens_source(missing, "1m", data_dir=str(tmp_path / "t"))


def test_missing_file_is_named(tmp_path):
  manual = _write_1m(tmp_path / "ml-1m")
  os.remove(os.path.join(manual, "users.dat"))
  with pytest.raises(FileNotFoundError, match=r"ml-1m[/\\]users\.dat"):
    movielens.movielens_source(manual, "1m", data_dir=str(tmp_path / "t"))


@pytest.mark.parametrize("bad_line, message", [
    ("2::2::3", r"ratings\.dat, line 3: expected 4 '::'-separated fields"),
    ("2::2::3::2000-10-29", r"ratings\.dat, line 3: unparsable timestamp"),
    ("2::2::nan::972799200", r"ratings\.dat, line 3: unparsable rating"),
    ("2::2::0::972799200", r"ratings\.dat, line 3: rating '0' is not in"),
    ("9::2::3::972799200", r"ratings\.dat, line 3: user 9 is not in"),
])
def test_bad_rating_lines_are_named(tmp_path, bad_line, message):
  lines = _ratings_1m()
  lines[2] = bad_line
  manual = _write_1m(tmp_path / "ml-1m", ratings=lines)
  with pytest.raises(ValueError, match=message):
    movielens.movielens_source(manual, "1m", data_dir=str(tmp_path / "t"))


def test_unknown_genre_is_named(tmp_path):
  movies = list(_MOVIES_1M)
  movies[1] = "2::Café Society (1995)::Drama|Mockumentary"
  manual = _write_1m(tmp_path / "ml-1m", movies=movies)
  with pytest.raises(ValueError,
                     match=r"movies\.dat, line 2: unknown genres "
                           r"\['Mockumentary'\]"):
    movielens.movielens_source(manual, "1m", data_dir=str(tmp_path / "t"))


def test_unknown_variant():
  with pytest.raises(ValueError, match="'10m'"):
    movielens.movielens_source("/tmp", "10m")
