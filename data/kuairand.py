"""KuaiRand: a TFDS builder over local log files, and their Source.

`KuaiRandLocal` is a TFDS dataset builder that reads KuaiRand logs from a
manual directory, never from the network, and writes one example per
impression: ids, time, the seven task labels, and, where the release's
feature files are present, the user's features and the video's basic
features. Configs:

  pure, 1k, 27k    the official releases (Gao et al., CIKM 2022): the
                   standard-policy logs log_standard_*_<release>*.csv
                   (2022-04-08..2022-05-08) joined with
                   user_features_<release>.csv and
                   video_features_basic_<release>.csv when present. The
                   random-policy log (a different exposure policy) and the
                   statistical video features are not read.
  likehate_subset  processed_standard_kcore_15.csv of the public repo
                   alessandrosocc/predict_explicit_negative_feedback_kuairand:
                   KuaiRand-27K standard-policy impressions that were liked or
                   hated, 15-core filtered; TAB-separated despite its name,
                   with `label` (1 liked, 0 hated) in place of is_like and no
                   feature files. Its click and long-view rates are biased by
                   that selection.

`kuairand_source` prepares one and converts it into the project's
InMemorySource (see data/schema.py), rows sorted by time. Tasks: is_click,
long_view, is_like, is_comment, is_follow, is_forward (binary) and
play_time (regression, log1p of play_time_ms / 1000). Times are local to
Asia/Shanghai (Beijing, UTC+8).

The whole log is held in memory: Pure (about 1.4M standard impressions) and
the subset fit easily; 1K (about 11.7M) needs several GB; 27K (322M
impressions, 23 GB of logs) does not fit and should be cut down first.

Licence: KuaiRand is CC BY-SA 4.0: attribute it, cite C. Gao et al.,
"KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly
Exposed Videos", CIKM 2022 (doi:10.1145/3511808.3557624), and share
derivatives alike. The subset's processing code is MIT-licensed.
"""

import dataclasses
import glob
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import gin
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data import schema as schema_lib
from data.encoding import (first_local_date, local_calendar, stable_hash,
                           standardize)
from data.prepared import prepared_builder, read_prepared
from data.source import InMemorySource

TIME_ZONE = "Asia/Shanghai"
BINARY_TASKS = ("is_click", "long_view", "is_like", "is_comment", "is_follow",
                "is_forward")
PLAY_TIME = "play_time"
DAY_SOURCES = ("time_ms", "date")
# Log columns every format has (besides the task columns), and optional
# ones: the subset dropped `tab` (the scenario, 0..14).
_LOG_KEYS = ("user_id", "video_id", "time_ms", "date")
_OPTIONAL_LOG_INTS = ("tab", "duration_ms")
# user_features_*.csv: categorical text, categorical ints, counts.
USER_TEXT = ("user_active_degree", "follow_user_num_range",
             "fans_user_num_range", "friend_user_num_range",
             "register_days_range")
USER_INTS = (("is_lowactive_period", "is_live_streamer", "is_video_author") +
             tuple(f"onehot_feat{i}" for i in range(18)))
USER_COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num",
               "register_days")
# video_features_basic_*.csv.
VIDEO_TEXT = ("video_type", "upload_type")
VIDEO_INTS = ("author_id", "music_type")
# Missing values in the prepared dataset (a user or video absent from the
# feature files, or an empty cell).
MISSING_INT = -1
MISSING_TEXT = ""

_CITATION = """
@inproceedings{gao2022kuairand,
  title = {KuaiRand: An Unbiased Sequential Recommendation Dataset with
           Randomly Exposed Videos},
  author = {Gao, Chongming and Li, Shijun and Zhang, Yuan and Chen, Jiawei
            and Li, Biao and Lei, Wenqiang and Jiang, Peng and He, Xiangnan},
  booktitle = {Proceedings of the 31st ACM International Conference on
               Information and Knowledge Management (CIKM '22)},
  pages = {3953--3957}, year = {2022}, doi = {10.1145/3511808.3557624}
}
"""


@dataclasses.dataclass(eq=False)
class KuaiRandConfig(tfds.core.BuilderConfig):
  """A KuaiRand release or derived file.

  Attributes:
    log_pattern: glob of the log files, in manual_dir or manual_dir/data.
    user_features_file: the user features file name ("" for none).
    video_features_file: the basic video features file name ("" for none).
    sep: the logs' field separator.
    is_like_column: the log column holding is_like.
  """
  log_pattern: str = ""
  user_features_file: str = ""
  video_features_file: str = ""
  sep: str = ","
  is_like_column: str = "is_like"

  @property
  def official_format(self) -> bool:
    """An official release: a `tab` column and feature files."""
    return bool(self.user_features_file or self.video_features_file)


def _release(name, description):
  return KuaiRandConfig(
      name=name, description=description,
      log_pattern=f"log_standard_*_{name}*.csv",
      user_features_file=f"user_features_{name}.csv",
      video_features_file=f"video_features_basic_{name}.csv")


class KuaiRandLocal(tfds.core.GeneratorBasedBuilder):
  """KuaiRand impressions with their feedback, from local files."""

  name = "kuairand_local"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: pure, 1k, 27k, likehate_subset."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Official releases: download KuaiRand-Pure.tar.gz, KuaiRand-1K.tar.gz or
  KuaiRand-27K.tar.gz from https://zenodo.org/records/10439422 (CC BY-SA
  4.0), extract it, and pass its folder (or its data/ folder) as the manual
  directory: it holds log_standard_*_<release>*.csv and, optionally,
  user_features_<release>.csv and video_features_basic_<release>.csv.
  likehate_subset: the folder holding processed_standard_kcore_15.csv.
  """
  BUILDER_CONFIGS = [
      _release("pure", "KuaiRand-Pure standard-policy logs (7,583 videos)."),
      _release("1k", "KuaiRand-1K standard-policy logs (1,000 users)."),
      _release("27k", "KuaiRand-27K standard-policy logs (27,285 users)."),
      KuaiRandConfig(
          name="likehate_subset",
          description=("Liked-or-hated KuaiRand-27K impressions, 15-core "
                       "(processed_standard_kcore_15.csv)."),
          log_pattern="processed_standard_kcore_15.csv", sep="\t",
          is_like_column="label"),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    features = {key: np.int64 for key in _LOG_KEYS}
    features.update({
        "day": np.int64,  # local days since the earliest impression
        "hour": np.int64,
        "weekday": np.int64,  # Monday = 0
        "duration_ms": np.int64,  # -1: missing
        "play_time_ms": np.int64,
    })
    features.update({task: np.int64 for task in BINARY_TASKS})
    if self.builder_config.official_format:
      features["tab"] = np.int64
      features.update({key: tfds.features.Text() for key in USER_TEXT})
      features["user_ints"] = tfds.features.Tensor(shape=(len(USER_INTS),),
                                                   dtype=np.int64)
      features["user_counts"] = tfds.features.Tensor(
          shape=(len(USER_COUNTS),), dtype=np.int64)
      features.update({key: tfds.features.Text() for key in VIDEO_TEXT})
      features.update({key: np.int64 for key in VIDEO_INTS})
      features["video_duration_ms"] = np.int64
      features["tags"] = tfds.features.Sequence(np.int64)
    return tfds.core.DatasetInfo(
        builder=self,
        description=("KuaiRand impressions read from local files, one "
                     "example per impression, with the seven task labels "
                     "and, where present, user and basic video features. "
                     "Missing integers are -1, missing text is empty."),
        features=tfds.features.FeaturesDict(features),
        homepage="https://kuairand.com",
        citation=_CITATION,
        license="CC BY-SA 4.0",
        # Keep the files' order, so that sorting by time keeps it for ties.
        disable_shuffling=True,
        # Which feature files were found (filled in when preparing).
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    manual_dir = os.fspath(dl_manager.manual_dir)
    folder = _data_folder(manual_dir, config.log_pattern)
    logs = sorted(glob.glob(os.path.join(folder, config.log_pattern)))
    users = _optional_file(folder, config.user_features_file)
    videos = _optional_file(folder, config.video_features_file)
    self.info.metadata.update({
        "log_files": [os.path.basename(p) for p in logs],
        "user_features_file": os.path.basename(users) if users else None,
        "video_features_file": os.path.basename(videos) if videos else None,
    })
    return {"train": self._generate_examples(logs, users, videos)}

  def _generate_examples(self, logs: List[str], users: Optional[str],
                         videos: Optional[str]):
    config = self.builder_config
    frame = pd.concat([_read_log(p, config) for p in logs],
                      ignore_index=True)
    hour, weekday, day = local_calendar(frame["time_ms"].to_numpy() // 1000,
                                        TIME_ZONE)
    columns = {key: frame[key].to_numpy() for key in
               _LOG_KEYS + ("duration_ms", "play_time_ms") + BINARY_TASKS}
    columns.update(hour=hour, weekday=weekday, day=day)
    vectors = {}
    if config.official_format:
      columns["tab"] = frame["tab"].to_numpy()
      user_ids = frame["user_id"].to_numpy()
      video_ids = frame["video_id"].to_numpy()
      user_table = _read_user_features(users) if users else None
      video_table = (_read_video_features(videos, video_ids)
                     if videos else None)
      user_rows = _lookup(user_table, user_ids)
      video_rows = _lookup(video_table, video_ids)
      for key in USER_TEXT:
        columns[key] = _take(user_table, key, user_rows, MISSING_TEXT)
      vectors["user_ints"] = np.stack(
          [_take(user_table, key, user_rows, MISSING_INT)
           for key in USER_INTS], axis=1)
      vectors["user_counts"] = np.stack(
          [_take(user_table, key, user_rows, MISSING_INT)
           for key in USER_COUNTS], axis=1)
      for key in VIDEO_TEXT:
        columns[key] = _take(video_table, key, video_rows, MISSING_TEXT)
      for key in VIDEO_INTS + ("video_duration_ms",):
        columns[key] = _take(video_table, key, video_rows, MISSING_INT)
      columns["tags"] = _take(video_table, "tags", video_rows, ())
    lists = {key: list(values) for key, values in columns.items()}
    for i in range(len(frame)):
      example = {key: values[i] for key, values in lists.items()}
      for key, values in vectors.items():
        example[key] = values[i]
      yield i, example


@gin.configurable
def kuairand_source(manual_dir: str = gin.REQUIRED,
                    release: str = "pure",
                    data_dir: Optional[str] = None,
                    day_source: str = "time_ms",
                    user_buckets: int = 100_000,
                    video_buckets: int = 100_000,
                    author_buckets: int = 100_000) -> InMemorySource:
  """KuaiRand as a source: prepares the TFDS dataset and loads it.

  Ids. user_id, video_id and author_id are hashed (CRC32 of the decimal id,
  as data/files.py does) into the given numbers of buckets rather than
  mapped through a vocabulary built from the data: the id spaces are large
  (32M videos in 27K), a vocabulary would have to be built from the whole
  log, evaluation day included, and would change with the release and the
  days read, while a hash gives the same id the same row in every release
  and needs no pass over the data. The cost is collisions: raise the bucket
  counts for 1K and 27K. Small categorical features (hour, weekday, tab,
  the user feature columns, video_type, upload_type, music_type, tags) use
  a vocabulary of the values present, sorted, with id 0 for a missing value.

  Schema. Categorical user_id, video_id, hour, weekday (Beijing local);
  for an official release also tab; with its user features file the
  user's user_active_degree, follow/fans/friend_user_num_range,
  register_days_range, is_lowactive_period, is_live_streamer,
  is_video_author and onehot_feat0..17; with its basic video features file
  the video's author_id (hashed; 0 also for an unknown author), video_type,
  upload_type, music_type and multi-valued tags. Dense: duration (log1p of
  duration_ms / 1000); with the user features follow_user_num,
  fans_user_num, friend_user_num, register_days (log1p); with the video
  features video_duration (log1p of seconds). Each is normalised by the
  mean and standard deviation of the days before the last (so the default
  evaluation day does not leak into them); a missing value is set to that
  mean (0 after normalisation). Labels: is_click, long_view, is_like,
  is_comment, is_follow, is_forward (binary) and play_time (regression,
  log1p of play_time_ms / 1000).

  Args:
    manual_dir: the release's folder (or its data/ folder), or the folder
      holding the subset's file.
    release: "pure", "1k", "27k" or "likehate_subset".
    data_dir: where TFDS writes (and on later calls reuses) the prepared
      dataset; None prepares it in a temporary directory deleted afterwards.
    day_source: "time_ms" (default): days are the Beijing dates of
      time_ms; "date": days are the log's own `date` column, which is
      stamped at a coarser, hour-level time and can be a day later for
      impressions in the last minutes before midnight (0.75% of the
      subset's rows; its 9 impressions of 2022-04-07 23:44..23:59 Beijing
      time are dated 2022-04-08, so it has 15 time_ms days but 14 dates).
    user_buckets, video_buckets, author_buckets: hash buckets of the ids.

  Returns:
    An InMemorySource named "kuairand-<release>", rows sorted by day, then
    time_ms (stable: ties keep the files' order); its first_date (day 0)
    is the Beijing date of the earliest time_ms, or the earliest `date`.

  Raises:
    FileNotFoundError: manual_dir or the log files are missing.
    ValueError: a missing column, unparsable timestamp, NaN or non-binary
      label, naming the file, column and line.
  """
  if day_source not in DAY_SOURCES:
    raise ValueError(f"day_source must be one of {DAY_SOURCES}, got "
                     f"{day_source!r}.")
  with prepared_builder(KuaiRandLocal, release, manual_dir, data_dir,
                        "KuaiRand") as builder:
    return _to_source(builder, day_source, user_buckets, video_buckets,
                      author_buckets)


def _to_source(builder, day_source, user_buckets, video_buckets,
               author_buckets) -> InMemorySource:
  """Converts the prepared dataset into an InMemorySource."""
  raw = read_prepared(builder)
  if day_source == "date":
    dates = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    days = np.asarray((dates - dates.min()).days, np.int64)
    first_date = dates.min().date()
  else:
    days = raw["day"]
    # As the builder computed `day`: derived from the stored times, so
    # datasets prepared before sources had dates give it too.
    first_date = first_local_date(raw["time_ms"] // 1000, TIME_ZONE)
  order = np.lexsort((raw["time_ms"], days))
  raw = {k: v[order] for k, v in raw.items()}
  days = days[order]
  columns, categorical, dense = {}, [], []

  def add_categorical(name, ids, vocab_size, max_len=1):
    columns[name] = ids
    categorical.append(schema_lib.CategoricalFeature(name, int(vocab_size),
                                                     max_len))

  def add_vocabulary(name, values, missing):
    ids, size = _vocabulary_ids(values, missing)
    add_categorical(name, ids, size)

  def add_dense(name, values, transform):
    values = values.astype(np.float64)
    present = values >= 0
    if transform == "log1p":
      values = np.log1p(np.where(present, values, 0.0))
    columns[name], mean, std = standardize(values, days, present)
    dense.append(schema_lib.DenseFeature(name, 1, transform, mean, std))

  add_categorical("user_id", stable_hash(raw["user_id"], user_buckets),
                  user_buckets)
  add_categorical("video_id", stable_hash(raw["video_id"], video_buckets),
                  video_buckets)
  add_categorical("hour", raw["hour"], 24)
  add_categorical("weekday", raw["weekday"], 7)
  seconds = np.where(raw["duration_ms"] >= 0, raw["duration_ms"] / 1000, -1)
  add_dense("duration", seconds, "log1p")
  if builder.builder_config.official_format:
    metadata = builder.info.metadata
    add_vocabulary("tab", raw["tab"], MISSING_INT)
    if metadata.get("user_features_file"):
      for key in USER_TEXT:
        add_vocabulary(key, raw[key], MISSING_TEXT.encode())
      for i, key in enumerate(USER_INTS):
        add_vocabulary(key, raw["user_ints"][:, i], MISSING_INT)
      for i, key in enumerate(USER_COUNTS):
        add_dense(key, raw["user_counts"][:, i], "log1p")
    if metadata.get("video_features_file"):
      authors = raw["author_id"]
      add_categorical("author_id",
                      np.where(authors == MISSING_INT, 0,
                               stable_hash(authors, author_buckets)),
                      author_buckets)
      for key in VIDEO_TEXT:
        add_vocabulary(key, raw[key], MISSING_TEXT.encode())
      add_vocabulary("music_type", raw["music_type"], MISSING_INT)
      tags, size = _multivalued_vocabulary_ids(raw["tags"])
      add_categorical("tags", tags, size, tags.shape[1])
      video_seconds = np.where(raw["video_duration_ms"] >= 0,
                               raw["video_duration_ms"] / 1000, -1)
      add_dense("video_duration", video_seconds, "log1p")

  labels = []
  for task in BINARY_TASKS:
    columns[task] = raw[task].astype(np.float32)
    labels.append(schema_lib.Label(task, "binary"))
  columns[PLAY_TIME] = np.log1p(raw["play_time_ms"] / 1000).astype(np.float32)
  labels.append(schema_lib.Label(PLAY_TIME, "regression", "log1p"))
  schema = schema_lib.Schema(categorical=categorical, dense=dense,
                             labels=labels)
  return InMemorySource(schema, columns, days,
                        name=f"kuairand-{builder.builder_config.name}",
                        first_date=first_date)


def _vocabulary_ids(values: np.ndarray, missing) -> Tuple[np.ndarray, int]:
  """Ids 1..k of the sorted distinct present values, 0 for `missing`."""
  uniques, inverse = np.unique(values, return_inverse=True)
  inverse = inverse.reshape(-1)
  present = np.array([u != missing for u in uniques], bool)
  ids = np.cumsum(present) * present  # 1..k for present values, 0 missing
  return ids[inverse].astype(np.int64), int(present.sum()) + 1


def _multivalued_vocabulary_ids(values: np.ndarray
                                ) -> Tuple[np.ndarray, int]:
  """Padded id lists: ids 0..k-1 of the sorted distinct values."""
  present = values != schema_lib.PAD_ID
  uniques = np.unique(values[present])
  ids = np.full(values.shape, schema_lib.PAD_ID, np.int64)
  ids[present] = np.searchsorted(uniques, values[present])
  return ids, max(len(uniques), 1)


# Reading the raw files.


def _data_folder(manual_dir: str, log_pattern: str) -> str:
  """manual_dir, or its data/ folder when only that holds the logs."""
  for folder in (manual_dir, os.path.join(manual_dir, "data")):
    if glob.glob(os.path.join(folder, log_pattern)):
      return folder
  raise FileNotFoundError(
      f"KuaiRand: no log file matches {os.path.join(manual_dir, log_pattern)}"
      f" (nor in {os.path.join(manual_dir, 'data')}).")


def _optional_file(folder: str, name: str) -> Optional[str]:
  path = os.path.join(folder, name) if name else ""
  return path if path and os.path.isfile(path) else None


def _csv_chunks(path: str, sep: str, columns: Sequence[str],
                optional: Sequence[str] = (), text: Sequence[str] = (),
                chunksize: int = 1_000_000) -> Iterator[pd.DataFrame]:
  """Chunks of `columns` (all required) and the `optional` columns present.

  Each chunk's index is the file's line numbers (the header is line 1);
  blank lines are dropped. `text` columns are read as strings.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"KuaiRand file not found: {path}")
  try:
    header = list(pd.read_csv(path, sep=sep, nrows=0).columns)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot read {path}: {e}") from e
  missing = [c for c in columns if c not in header]
  if missing:
    raise ValueError(f"{path}: missing column(s) {missing}; it has "
                     f"{header}.")
  wanted = list(columns) + [c for c in optional if c in header]
  line = 2
  # All columns are parsed (no usecols), so that a line with too many
  # fields is an error rather than silently cut.
  try:
    for chunk in pd.read_csv(path, sep=sep,
                             dtype={c: str for c in text if c in wanted},
                             skip_blank_lines=False, chunksize=chunksize):
      chunk.index = np.arange(line, line + len(chunk))
      line += len(chunk)
      yield chunk[wanted].dropna(how="all")
  except (pd.errors.ParserError, UnicodeDecodeError) as e:
    raise ValueError(f"Cannot read {path}: {e}") from e


def _integers(frame: pd.DataFrame, path: str, column: str, what: str,
              allow_missing: bool = False,
              allowed: Optional[Sequence[int]] = None) -> np.ndarray:
  """A column as int64; a bad value raises naming file, line and column.

  Missing values become MISSING_INT where allowed.
  """
  raw = frame[column]
  values = pd.to_numeric(raw, errors="coerce")
  unparsable = (raw.notna() & values.isna()) | (values % 1 > 0)
  bad = unparsable | (raw.isna() & (not allow_missing))
  if allowed is not None:
    bad |= values.notna() & ~values.isin(allowed)
  if bad.any():
    line = bad.idxmax()
    value = raw[line]
    shown = repr(value) if isinstance(value, str) else str(value)
    if pd.isna(value):
      problem = "missing (empty or NaN)"
    elif unparsable[line]:
      problem = f"unparsable: {shown}"
    else:
      problem = f"{shown}, not one of {list(allowed)}"
    raise ValueError(f"{path}, line {line}: {what} in column {column!r} is "
                     f"{problem}.")
  return values.fillna(MISSING_INT).to_numpy(np.int64)


def _read_log(path: str, config: KuaiRandConfig) -> pd.DataFrame:
  """One log file's impressions, validated, under the standard names."""
  tasks = {task: config.is_like_column if task == "is_like" else task
           for task in BINARY_TASKS}
  required = list(_LOG_KEYS) + list(tasks.values()) + ["play_time_ms"]
  frames = []
  for frame in _csv_chunks(path, config.sep, required, _OPTIONAL_LOG_INTS):
    out = pd.DataFrame(index=frame.index)
    out["user_id"] = _integers(frame, path, "user_id", "the user id")
    out["video_id"] = _integers(frame, path, "video_id", "the video id")
    out["time_ms"] = _integers(frame, path, "time_ms", "the timestamp")
    _check(out["time_ms"] > 0, path, "the timestamp in column 'time_ms' is "
           "not a positive number of milliseconds")
    out["date"] = _integers(frame, path, "date", "the date")
    dates = pd.to_datetime(out["date"].astype(str), format="%Y%m%d",
                           errors="coerce")
    _check(dates.notna(), path,
           "the date in column 'date' is not a YYYYMMDD date")
    for task, column in tasks.items():
      out[task] = _integers(frame, path, column, f"the {task} label",
                            allowed=(0, 1))
    out["play_time_ms"] = _integers(frame, path, "play_time_ms",
                                    "the play_time label")
    _check(out["play_time_ms"] >= 0, path,
           "the play_time label in column 'play_time_ms' is negative")
    for column in _OPTIONAL_LOG_INTS:
      out[column] = (_integers(frame, path, column, column, True)
                     if column in frame else MISSING_INT)
    frames.append(out)
  frame = pd.concat(frames) if frames else pd.DataFrame()
  if frame.empty:
    raise ValueError(f"{path}: no impressions.")
  return frame.reset_index(drop=True)


def _check(ok: pd.Series, path: str, problem: str):
  if not ok.all():
    raise ValueError(f"{path}, line {(~ok).idxmax()}: {problem}.")


def _read_user_features(path: str) -> pd.DataFrame:
  """user_features_*.csv, indexed by user_id."""
  tables = []
  for frame in _csv_chunks(path, ",", ["user_id"],
                           USER_TEXT + USER_INTS + USER_COUNTS,
                           text=USER_TEXT):
    table = pd.DataFrame(index=frame.index)
    table["user_id"] = _integers(frame, path, "user_id", "the user id")
    for key in USER_TEXT:
      table[key] = (frame[key].fillna(MISSING_TEXT).astype(object)
                    if key in frame else MISSING_TEXT)
    for key in USER_INTS + USER_COUNTS:
      table[key] = (_integers(frame, path, key, key, True)
                    if key in frame else MISSING_INT)
    tables.append(table)
  return _index_by(pd.concat(tables), "user_id", path)


def _read_video_features(path: str, video_ids: np.ndarray) -> pd.DataFrame:
  """The rows of video_features_basic_*.csv of the given videos.

  Read in chunks, keeping only the logged videos: 27K's file is 2.6 GB.
  """
  wanted = np.unique(video_ids)
  tables = []
  for frame in _csv_chunks(path, ",", ["video_id"],
                           VIDEO_TEXT + VIDEO_INTS + ("video_duration", "tag"),
                           text=VIDEO_TEXT + ("tag",)):
    ids = _integers(frame, path, "video_id", "the video id")
    keep = np.isin(ids, wanted)
    frame = frame[keep]
    table = pd.DataFrame(index=frame.index)
    table["video_id"] = ids[keep]
    for key in VIDEO_TEXT:
      table[key] = (frame[key].fillna(MISSING_TEXT).astype(object)
                    if key in frame else MISSING_TEXT)
    for key in VIDEO_INTS:
      table[key] = (_integers(frame, path, key, key, True)
                    if key in frame else MISSING_INT)
    table["video_duration_ms"] = (
        pd.to_numeric(frame["video_duration"], errors="coerce")
        .round().fillna(MISSING_INT).to_numpy(np.int64)
        if "video_duration" in frame else MISSING_INT)
    tags = np.empty(len(frame), object)
    tags[:] = (_tags(frame["tag"], path) if "tag" in frame
               else [()] * len(frame))
    table["tags"] = tags
    tables.append(table)
  return _index_by(pd.concat(tables), "video_id", path)


def _tags(cells: pd.Series, path: str) -> List[Tuple[int, ...]]:
  """'12,65' -> (12, 65); an empty cell -> ()."""
  tags = []
  for line, cell in cells.items():
    text = "" if pd.isna(cell) else str(cell)
    try:
      tags.append(tuple(int(t) for t in text.split(",") if t.strip()))
    except ValueError:
      raise ValueError(f"{path}, line {line}: unparsable tag list "
                       f"{cell!r} in column 'tag'.") from None
  return tags


def _index_by(table: pd.DataFrame, key: str, path: str) -> pd.DataFrame:
  repeated = table[key].duplicated()
  if repeated.any():
    line = repeated.idxmax()
    raise ValueError(f"{path}, line {line}: {key} {table[key][line]} appears "
                     "a second time.")
  return table.set_index(key)


def _lookup(table: Optional[pd.DataFrame], keys: np.ndarray) -> np.ndarray:
  """The row of each key in the table; -1 where absent (or no table)."""
  if table is None:
    return np.full(len(keys), -1)
  return table.index.get_indexer(keys)


def _take(table: Optional[pd.DataFrame], column: str, rows: np.ndarray,
          missing) -> np.ndarray:
  """table[column] at `rows` (int64 or object), `missing` where rows is -1."""
  found = rows >= 0
  if isinstance(missing, int):
    out = np.full(len(rows), missing, np.int64)
    if table is not None:
      out[found] = table[column].to_numpy(np.int64)[rows[found]]
  else:
    out = np.empty(len(rows), object)
    out.fill(missing)
    if table is not None:
      out[found] = table[column].to_numpy(object)[rows[found]]
  return out
