"""MovieLens 100K and 1M: a TFDS builder over local files, and their Source.

`MovieLensLocal` is a TFDS dataset builder (configs "100k" and "1m") that
reads the raw GroupLens files from a manual directory, never from the
network, and writes one example per rating (ids, rating, timestamp, user
demographics, movie genres and the local hour, weekday and day).
`movielens_source` prepares it and converts it into the project's
InMemorySource (see data/schema.py for the batch layout), rows sorted by
time.

Days, hours and weekdays are local to America/Chicago (GroupLens is in
Minnesota); day 0 is the local date of the earliest rating.

Licence: the MovieLens data sets are for research use only, may not be used
commercially and may not be redistributed without GroupLens' separate
permission; cite F. M. Harper and J. A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015. Keep the files outside the
repository and point `manual_dir` at them.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow_datasets as tfds

from data import schema as schema_lib
from data.encoding import (first_local_date, local_calendar, stable_hash,
                           standardize)
from data.prepared import prepared_builder, read_prepared
from data.source import InMemorySource

TIME_ZONE = "America/Chicago"
ZIP_PREFIX_LEN = 3
GENDERS = ("F", "M")
# The 19 genres of u.genre, in its order; 1M uses the same names less
# "unknown".
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's",
          "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir",
          "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
# u.occupation of the 100K release, in its order.
OCCUPATIONS_100K = ("administrator", "artist", "doctor", "educator",
                    "engineer", "entertainment", "executive", "healthcare",
                    "homemaker", "lawyer", "librarian", "marketing", "none",
                    "other", "programmer", "retired", "salesman", "scientist",
                    "student", "technician", "writer")
# The occupation codes 0..20 of the 1M release (its README).
OCCUPATIONS_1M = ("other or not specified", "academic/educator", "artist",
                  "clerical/admin", "college/grad student", "customer service",
                  "doctor/health care", "executive/managerial", "farmer",
                  "homemaker", "K-12 student", "lawyer", "programmer",
                  "retired", "sales/marketing", "scientist", "self-employed",
                  "technician/engineer", "tradesman/craftsman", "unemployed",
                  "writer")

_CITATION = """
@article{harper2015movielens,
  title = {The MovieLens Datasets: History and Context},
  author = {Harper, F. Maxwell and Konstan, Joseph A.},
  journal = {ACM Transactions on Interactive Intelligent Systems},
  volume = {5}, number = {4}, articleno = {19}, year = {2015},
  doi = {10.1145/2827872}
}
"""


@dataclasses.dataclass(eq=False)
class MovieLensConfig(tfds.core.BuilderConfig):
  """A MovieLens release.

  Attributes:
    files: the files this release needs in the manual directory.
    occupations: the release's occupation names, in code order.
  """
  files: Tuple[str, ...] = ()
  occupations: Tuple[str, ...] = ()


class MovieLensLocal(tfds.core.GeneratorBasedBuilder):
  """MovieLens ratings joined with users and movies, from local files."""

  name = "movielens_local"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: 100k and 1m from local files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download and unzip the release from https://grouplens.org/datasets/movielens/
  yourself (research use only; do not redistribute it) and pass the
  unzipped folder as the manual directory:
    100k: ml-100k/ holding u.data, u.user, u.item, u.genre, u.occupation.
    1m:   ml-1m/ holding ratings.dat, users.dat, movies.dat.
  """
  BUILDER_CONFIGS = [
      MovieLensConfig(
          name="100k",
          description="MovieLens 100K (1998): 100,000 ratings, 943 users.",
          files=("u.data", "u.user", "u.item", "u.genre", "u.occupation"),
          occupations=OCCUPATIONS_100K),
      MovieLensConfig(
          name="1m",
          description="MovieLens 1M (2003): 1,000,209 ratings, 6,040 users.",
          files=("ratings.dat", "users.dat", "movies.dat"),
          occupations=OCCUPATIONS_1M),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=("MovieLens ratings read from local files, one example "
                     "per rating, with user demographics, movie genres and "
                     f"local ({TIME_ZONE}) hour, weekday and day."),
        features=tfds.features.FeaturesDict({
            "user_id": np.int64,
            "item_id": np.int64,
            "rating": np.int64,
            "timestamp": np.int64,  # unix seconds
            # 100k: years; 1m: the age-range code (1, 18, 25, ..., 56).
            "age": np.int64,
            "gender": tfds.features.ClassLabel(names=list(GENDERS)),
            "occupation": tfds.features.ClassLabel(
                names=list(config.occupations)),
            "zip_prefix": tfds.features.Text(),
            "genres": tfds.features.Sequence(
                tfds.features.ClassLabel(names=list(GENRES))),
            "hour": np.int64,
            "weekday": np.int64,  # Monday = 0
            "day": np.int64,  # 0 = local date of the earliest rating
        }),
        homepage="https://grouplens.org/datasets/movielens/",
        citation=_CITATION,
        # Keep the files' order, so that sorting by time keeps it for ties.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    for name in self.builder_config.files:
      _require_file(os.path.join(manual_dir, name))
    return {"train": self._generate_examples(manual_dir)}

  def _generate_examples(self, manual_dir: str):
    if self.builder_config.name == "100k":
      table = _read_100k(manual_dir)
    else:
      table = _read_1m(manual_dir)
    hour, weekday, day = local_calendar(table["timestamp"], TIME_ZONE)
    occupations = self.builder_config.occupations
    for i in range(len(table["timestamp"])):
      yield i, {
          "user_id": table["user_id"][i],
          "item_id": table["item_id"][i],
          "rating": table["rating"][i],
          "timestamp": table["timestamp"][i],
          "age": table["age"][i],
          "gender": table["gender"][i],
          "occupation": occupations.index(table["occupation"][i]),
          "zip_prefix": table["zip_prefix"][i],
          "genres": table["genres"][i],
          "hour": hour[i],
          "weekday": weekday[i],
          "day": day[i],
      }


@gin.configurable
def movielens_source(manual_dir: str = gin.REQUIRED,
                     variant: str = "100k",
                     data_dir: Optional[str] = None,
                     zip_buckets: int = 1000) -> InMemorySource:
  """MovieLens as a source: prepares the TFDS dataset and loads it.

  Schema: categorical user_id and item_id (the raw ids; vocabulary = largest
  id + 1), gender (2), occupation (the release's list), zip_prefix (the
  first 3 characters of the zip code, hashed with CRC32 into `zip_buckets`),
  hour (24) and weekday (7), all local to America/Chicago; multi-valued
  genres (max_len = most genres of any rated movie, padded with -1); dense
  age (years for 100k, the age-range code for 1m), normalised by the mean
  and standard deviation of the days before the last, so the default
  evaluation day does not leak into it; labels rating (regression, raw
  1..5) and liked (binary, rating >= 4). Rows are sorted by timestamp
  (stable: ties keep the files' order).

  Args:
    manual_dir: the unzipped release (ml-100k/ or ml-1m/).
    variant: "100k" or "1m".
    data_dir: where TFDS writes (and on later calls reuses) the prepared
      dataset; None prepares it in a temporary directory deleted afterwards.
    zip_buckets: hash buckets of the zip prefix.

  Returns:
    An InMemorySource named "movielens-<variant>"; its first_date (day 0)
    is the Chicago date of the earliest rating (100K: 1997-09-19).

  Raises:
    FileNotFoundError: manual_dir or one of the release's files is missing.
    ValueError: a malformed line (naming the file and line).
  """
  with prepared_builder(MovieLensLocal, variant, manual_dir, data_dir,
                        "MovieLens") as builder:
    return _to_source(builder, zip_buckets)


def _to_source(builder: MovieLensLocal, zip_buckets: int) -> InMemorySource:
  """Converts the prepared dataset into an InMemorySource."""
  raw = read_prepared(builder)
  order = np.argsort(raw["timestamp"], kind="stable")
  raw = {k: v[order] for k, v in raw.items()}
  days = raw["day"]
  genres = raw["genres"]
  max_len = genres.shape[1]

  features = builder.info.features
  rating = raw["rating"].astype(np.float32)
  age, age_mean, age_std = standardize(raw["age"], days)
  columns = {
      "user_id": raw["user_id"],
      "item_id": raw["item_id"],
      "gender": raw["gender"],
      "occupation": raw["occupation"],
      "zip_prefix": stable_hash(raw["zip_prefix"], zip_buckets),
      "hour": raw["hour"],
      "weekday": raw["weekday"],
      "genres": genres,
      "age": age,
      "rating": rating,
      "liked": (rating >= 4).astype(np.float32),
  }
  schema = schema_lib.Schema(
      categorical=[
          schema_lib.CategoricalFeature("user_id",
                                        int(raw["user_id"].max()) + 1),
          schema_lib.CategoricalFeature("item_id",
                                        int(raw["item_id"].max()) + 1),
          schema_lib.CategoricalFeature("gender",
                                        features["gender"].num_classes),
          schema_lib.CategoricalFeature("occupation",
                                        features["occupation"].num_classes),
          schema_lib.CategoricalFeature("zip_prefix", zip_buckets),
          schema_lib.CategoricalFeature("hour", 24),
          schema_lib.CategoricalFeature("weekday", 7),
          schema_lib.CategoricalFeature(
              "genres", features["genres"].feature.num_classes, max_len),
      ],
      dense=[schema_lib.DenseFeature("age", 1, "none", age_mean, age_std)],
      labels=[schema_lib.Label("rating", "regression"),
              schema_lib.Label("liked", "binary")])
  # Day 0 is the local date of the earliest rating (as the builder
  # computed `day`): derived from the stored timestamps, so datasets
  # prepared before sources had dates give it too.
  return InMemorySource(schema, columns, days,
                        name=f"movielens-{builder.builder_config.name}",
                        first_date=first_local_date(raw["timestamp"],
                                                    TIME_ZONE))


# Parsing the raw files.


def _require_file(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MovieLens file not found: {path}")


def _lines(path: str, encoding: str = "latin-1"):
  """(line number, text) of the non-blank lines of a file."""
  _require_file(path)
  with open(path, encoding=encoding) as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if line.strip():
        yield number, line


def _fields(path: str, number: int, line: str, sep: str, count: int
            ) -> List[str]:
  fields = line.split(sep)
  if len(fields) != count:
    raise ValueError(f"{path}, line {number}: expected {count} "
                     f"{sep!r}-separated fields, got {len(fields)}: {line!r}")
  return fields


def _int(path: str, number: int, what: str, text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{path}, line {number}: unparsable {what} "
                     f"{text!r}.") from None


def _ratings(path: str, sep: str) -> Dict[str, np.ndarray]:
  """user, item, rating, timestamp and line number of each rating."""
  rows = []
  for number, line in _lines(path):
    user, item, rating, stamp = _fields(path, number, line, sep, 4)
    row = (_int(path, number, "user id", user),
           _int(path, number, "item id", item),
           _int(path, number, "rating", rating),
           _int(path, number, "timestamp", stamp), number)
    if not 1 <= row[2] <= 5:
      raise ValueError(f"{path}, line {number}: rating {rating!r} is not in "
                       "1..5.")
    if row[3] < 0:
      raise ValueError(f"{path}, line {number}: negative timestamp "
                       f"{stamp!r}.")
    rows.append(row)
  if not rows:
    raise ValueError(f"{path}: no ratings.")
  array = np.array(rows, np.int64)
  return dict(zip(("user_id", "item_id", "rating", "timestamp", "line"),
                  array.T))


def _join(ratings_path: str, ratings: Dict[str, np.ndarray],
          users: Dict[int, tuple], movies: Dict[int, List[str]]
          ) -> Dict[str, list]:
  """Adds each rating's user and movie attributes."""
  table = {k: v.tolist() for k, v in ratings.items()}
  for key in ("age", "gender", "occupation", "zip_prefix", "genres"):
    table[key] = []
  for user, item, line in zip(table["user_id"], table["item_id"],
                              table["line"]):
    if user not in users:
      raise ValueError(f"{ratings_path}, line {line}: user {user} is not in "
                       "the users file.")
    if item not in movies:
      raise ValueError(f"{ratings_path}, line {line}: movie {item} is not in "
                       "the movies file.")
    age, gender, occupation, zip_code = users[user]
    table["age"].append(age)
    table["gender"].append(gender)
    table["occupation"].append(occupation)
    table["zip_prefix"].append(zip_code[:ZIP_PREFIX_LEN])
    table["genres"].append(movies[item])
  return table


def _check_list(path: str, names: Sequence[str], expected: Sequence[str]):
  if tuple(names) != tuple(expected):
    raise ValueError(f"{path}: lists {list(names)}, but this builder encodes "
                     f"{list(expected)}.")


def _read_100k(manual_dir: str) -> Dict[str, list]:
  """The ratings of ml-100k joined with u.user and u.item."""
  path = lambda name: os.path.join(manual_dir, name)
  genres = [_fields(path("u.genre"), n, line, "|", 2)[0]
            for n, line in _lines(path("u.genre"))]
  _check_list(path("u.genre"), genres, GENRES)
  occupations = [line.strip() for _, line in _lines(path("u.occupation"))]
  _check_list(path("u.occupation"), occupations, OCCUPATIONS_100K)

  users = {}
  for number, line in _lines(path("u.user")):
    user, age, gender, occupation, zip_code = _fields(path("u.user"), number,
                                                      line, "|", 5)
    if gender not in GENDERS or occupation not in OCCUPATIONS_100K:
      raise ValueError(f"{path('u.user')}, line {number}: unknown gender or "
                       f"occupation in {line!r}.")
    users[_int(path("u.user"), number, "user id", user)] = (
        _int(path("u.user"), number, "age", age), gender, occupation,
        zip_code)

  movies = {}
  for number, line in _lines(path("u.item")):
    fields = _fields(path("u.item"), number, line, "|", 5 + len(GENRES))
    flags = fields[-len(GENRES):]
    if any(f not in ("0", "1") for f in flags):
      raise ValueError(f"{path('u.item')}, line {number}: genre flags must "
                       f"be 0 or 1, got {flags}.")
    movies[_int(path("u.item"), number, "movie id", fields[0])] = [
        g for g, f in zip(GENRES, flags) if f == "1"]

  ratings = _ratings(path("u.data"), "\t")
  return _join(path("u.data"), ratings, users, movies)


def _read_1m(manual_dir: str) -> Dict[str, list]:
  """The ratings of ml-1m joined with users.dat and movies.dat."""
  path = lambda name: os.path.join(manual_dir, name)
  users = {}
  for number, line in _lines(path("users.dat")):
    user, gender, age, occupation, zip_code = _fields(
        path("users.dat"), number, line, "::", 5)
    code = _int(path("users.dat"), number, "occupation", occupation)
    if gender not in GENDERS or not 0 <= code < len(OCCUPATIONS_1M):
      raise ValueError(f"{path('users.dat')}, line {number}: unknown gender "
                       f"or occupation in {line!r}.")
    users[_int(path("users.dat"), number, "user id", user)] = (
        _int(path("users.dat"), number, "age", age), gender,
        OCCUPATIONS_1M[code], zip_code)

  movies = {}
  for number, line in _lines(path("movies.dat")):
    movie, _, rest = line.partition("::")
    _, sep, genre_text = rest.rpartition("::")
    if not sep:
      raise ValueError(f"{path('movies.dat')}, line {number}: expected "
                       f"MovieID::Title::Genres, got {line!r}")
    genres = [g for g in genre_text.split("|") if g]
    unknown = [g for g in genres if g not in GENRES]
    if unknown:
      raise ValueError(f"{path('movies.dat')}, line {number}: unknown genres "
                       f"{unknown}.")
    movies[_int(path("movies.dat"), number, "movie id", movie)] = genres

  ratings = _ratings(path("ratings.dat"), "::")
  return _join(path("ratings.dat"), ratings, users, movies)
