"""The KuaiRand builder and source: the shared subset, an official-format
fixture with feature files, and errors.

Expected values are computed here with pandas straight from the files, not
through data/kuairand.py. The subset is read in place from
../shared/data/kuairand27k-likehate-kcore15 (KuaiRand is CC BY-SA 4.0; cite
Gao et al., CIKM 2022).
"""

import datetime
import os
import zlib

import gin
import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds

from data import kuairand
from data.window import MovingWindow
from tests.data.reference_calendar import all_rows, local_days, local_time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SUBSET_DIR = os.path.join(REPO_ROOT, "..", "shared", "data",
                          "kuairand27k-likehate-kcore15")
SUBSET_FILE = os.path.join(SUBSET_DIR, "processed_standard_kcore_15.csv")
BEIJING = "Asia/Shanghai"
TASKS = ("is_click", "long_view", "is_like", "is_comment", "is_follow",
         "is_forward")

needs_subset = pytest.mark.skipif(
    not os.path.isfile(SUBSET_FILE),
    reason=f"the KuaiRand subset is not in {SUBSET_DIR} (shared data, not in "
           "the repo)")


def _local(time_ms):
  return local_time(time_ms, "ms", BEIJING)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
  """Sources by time_ms and by date, and the file sorted like each."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  by_time = kuairand.kuairand_source(SUBSET_DIR, "likehate_subset",
                                     data_dir=data_dir)
  by_date = kuairand.kuairand_source(SUBSET_DIR, "likehate_subset",
                                     data_dir=data_dir, day_source="date")
  frame = pd.read_csv(SUBSET_FILE, sep="\t")
  frame["local"] = _local(frame["time_ms"])
  frame["day"] = local_days(frame["local"])
  dates = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d")
  frame["date_day"] = (dates - dates.min()).dt.days
  by_time_frame = frame.iloc[np.lexsort((frame["time_ms"], frame["day"]))]
  by_date_frame = frame.iloc[np.lexsort((frame["time_ms"],
                                         frame["date_day"]))]
  return (by_time, all_rows(by_time), by_time_frame.reset_index(drop=True),
          by_date, all_rows(by_date), by_date_frame.reset_index(drop=True),
          data_dir)


@needs_subset
def test_subset_rows(subset):
  source, rows, frame, _, _, _, data_dir = subset
  assert len(frame) == 41_828
  assert source.num_rows == 41_828
  builder = kuairand.KuaiRandLocal(config="likehate_subset",
                                   data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == 41_828
  assert builder.info.metadata["log_files"] == [
      "processed_standard_kcore_15.csv"]
  assert frame["user_id"].nunique() == 664
  np.testing.assert_array_equal(
      rows["user_id"],
      [zlib.crc32(str(u).encode()) % 100_000 for u in frame["user_id"]])
  np.testing.assert_array_equal(
      rows["video_id"],
      [zlib.crc32(str(v).encode()) % 100_000 for v in frame["video_id"]])


@needs_subset
def test_subset_days_from_time_ms(subset):
  source, rows, frame, _, _, _, _ = subset
  local_dates = frame["local"].dt.date.astype(str)
  # time_ms spans 2022-04-07 23:44 .. 2022-04-21 23:51 Beijing time: the
  # 14 dates 04-08..04-21 of the log's `date` column, and 9 impressions in
  # the last minutes of 04-07.
  assert local_dates.min() == "2022-04-07"
  assert local_dates.max() == "2022-04-21"
  assert (local_dates == "2022-04-07").sum() == 9
  assert local_dates.nunique() == 15 == source.num_days
  np.testing.assert_array_equal(np.diff(source.day_offsets),
                                local_dates.value_counts().sort_index())
  np.testing.assert_array_equal(rows["day"], frame["day"])
  assert np.all(np.diff(rows["day"]) >= 0)
  np.testing.assert_array_equal(rows["hour"], frame["local"].dt.hour)
  np.testing.assert_array_equal(rows["weekday"], frame["local"].dt.weekday)


@needs_subset
def test_subset_days_from_the_date_column(subset):
  _, _, _, source, rows, frame, _ = subset
  dates = frame["date"].astype(str)
  assert sorted(dates.unique()) == [f"202204{d:02d}" for d in range(8, 22)]
  assert source.num_days == 14
  np.testing.assert_array_equal(np.diff(source.day_offsets),
                                dates.value_counts().sort_index())
  np.testing.assert_array_equal(rows["day"], frame["date_day"])


@needs_subset
def test_subset_first_dates(subset):
  by_time, _, _, by_date, _, _, _ = subset
  # time_ms starts 2022-04-07 23:44 Beijing time; the `date` column at
  # 2022-04-08. Both logs end on 2022-04-21.
  assert by_time.first_date == datetime.date(2022, 4, 7)
  assert by_date.first_date == datetime.date(2022, 4, 8)
  assert by_time.date_of_day(14) == by_date.date_of_day(13) == datetime.date(
      2022, 4, 21)
  assert MovingWindow(by_time, batch_size=64,
                      eval_date="2022-04-20").eval_day == 13
  assert MovingWindow(by_date, batch_size=64,
                      eval_date="2022-04-20").eval_day == 12


@needs_subset
def test_subset_labels(subset):
  source, rows, frame, _, _, _, _ = subset
  assert source.schema.label_names == TASKS + ("play_time",)
  np.testing.assert_array_equal(rows["is_like"], frame["label"])
  assert rows["is_like"].sum() == (frame["label"] == 1).sum() == 33_745
  for task in TASKS[:2] + TASKS[3:]:
    np.testing.assert_array_equal(rows[task], frame[task])
    assert rows[task].sum() == frame[task].sum(), task
  np.testing.assert_allclose(rows["play_time"],
                             np.log1p(frame["play_time_ms"] / 1000),
                             rtol=1e-6)
  assert source.schema.label("play_time").transform == "log1p"
  spec = source.schema.dense[0]
  assert spec.name == "duration"
  seconds = np.log1p(frame["duration_ms"].to_numpy() / 1000)
  fit = frame["day"] < frame["day"].max()
  np.testing.assert_allclose(
      rows["duration"][:, 0],
      (seconds - seconds[fit].mean()) / seconds[fit].std(), atol=1e-5)
  # No feature files: only ids, time and duration.
  assert [f.name for f in source.schema.categorical] == [
      "user_id", "video_id", "hour", "weekday"]


@needs_subset
def test_subset_evaluation_day_never_in_a_training_window(subset):
  source, _, frame, _, _, _, _ = subset
  window = MovingWindow(source, batch_size=512, window_days=3)
  first_eval_row = source.day_offsets[window.eval_day]
  assert first_eval_row == (frame["day"] < frame["day"].max()).sum()
  for step in range(window.total_steps):
    rows = window.row_ids(step).numpy()
    day = window.day_of_step(step)
    assert rows.max() < first_eval_row
    assert rows.min() >= source.day_offsets[max(day - 2, 0)]


# An official-format release (KuaiRand-Pure layout), written here.

_LOG_COLUMNS = ("user_id video_id date hourmin time_ms is_click is_like "
                "is_follow is_comment is_forward is_hate long_view "
                "play_time_ms duration_ms profile_stay_time "
                "comment_stay_time is_profile_enter is_rand tab").split()


def _ms(beijing_time):
  return int(pd.Timestamp(beijing_time, tz=BEIJING).timestamp() * 1000)


def _log(rows):
  """rows: (user, video, Beijing time, click, like, play_ms, tab)."""
  out = []
  for user, video, when, click, like, play, tab in rows:
    stamp = pd.Timestamp(when)
    out.append({
        "user_id": user, "video_id": video,
        "date": int(stamp.strftime("%Y%m%d")), "hourmin": stamp.hour * 100,
        "time_ms": _ms(when), "is_click": click, "is_like": like,
        "is_follow": 0, "is_comment": like, "is_forward": 0, "is_hate": 0,
        "long_view": click, "play_time_ms": play, "duration_ms": 20_000,
        "profile_stay_time": 0, "comment_stay_time": 0,
        "is_profile_enter": 0, "is_rand": 0, "tab": tab})
  return pd.DataFrame(out, columns=_LOG_COLUMNS)


_FIRST_LOG = [(0, 10, "2022-04-08 10:00:00", 1, 1, 30_000, 1),
              (1, 11, "2022-04-08 23:59:30", 1, 0, 5_000, 1),
              (2, 12, "2022-04-09 00:00:30", 0, 0, 0, 4),
              (0, 11, "2022-04-10 12:00:00", 1, 0, 9_000, 1)]
_SECOND_LOG = [(1, 10, "2022-04-22 09:00:00", 1, 1, 60_000, 0),
               (2, 10, "2022-04-22 09:00:00", 0, 0, 100, 0)]


def _user_features():
  frame = pd.DataFrame({
      "user_id": [0, 1],
      "user_active_degree": ["high_active", "full_active"],
      "is_lowactive_period": [0, 0], "is_live_streamer": [0, 1],
      "is_video_author": [1, 0],
      "follow_user_num": [5, 120], "follow_user_num_range": ["(0,10]",
                                                             "(100,150]"],
      "fans_user_num": [312, 0], "fans_user_num_range": ["[100,1k)", "0"],
      "friend_user_num": [0, 3], "friend_user_num_range": ["0", "[1,5)"],
      "register_days": [3624, 40], "register_days_range": ["730+", "31-60"]})
  for i in range(18):
    frame[f"onehot_feat{i}"] = [i % 3, (i + 1) % 3]
  return frame


def _video_features():
  return pd.DataFrame({
      "video_id": [10, 11, 99], "author_id": [441, 7, 8],
      "video_type": ["NORMAL", "AD", "NORMAL"],
      "upload_dt": ["2020-07-08"] * 3,
      "upload_type": ["ShortImport", "Web", "Web"],
      "visible_status": [1, 1, 1], "video_duration": [17200.0, None, 1.0],
      "server_width": [720] * 3, "server_height": [1280] * 3,
      "music_id": [989206467, 0, 0], "music_type": [4, None, 9],
      "tag": ["12,65", "7", None]})


def _write_release(folder, first_log=None, with_features=True):
  data = os.path.join(folder, "data")
  os.makedirs(data, exist_ok=True)
  logs = {"log_standard_4_08_to_4_21_pure.csv":
              _log(_FIRST_LOG) if first_log is None else first_log,
          "log_standard_4_22_to_5_08_pure.csv": _log(_SECOND_LOG)}
  for name, frame in logs.items():
    if isinstance(frame, str):
      with open(os.path.join(data, name), "w") as f:
        f.write(frame)
    else:
      frame.to_csv(os.path.join(data, name), index=False)
  if with_features:
    _user_features().to_csv(os.path.join(data, "user_features_pure.csv"),
                            index=False)
    _video_features().to_csv(
        os.path.join(data, "video_features_basic_pure.csv"), index=False)
  return str(folder)


def test_official_release_joins_user_and_video_features(tmp_path):
  manual = _write_release(tmp_path / "KuaiRand-Pure")
  source = kuairand.kuairand_source(manual, "pure",
                                    data_dir=str(tmp_path / "tfds"))
  rows = all_rows(source)
  log = pd.concat([_log(_FIRST_LOG), _log(_SECOND_LOG)], ignore_index=True)
  log = log.iloc[np.argsort(log["time_ms"].to_numpy(), kind="stable")]
  days = local_days(_local(log["time_ms"]))
  np.testing.assert_array_equal(days, [0, 0, 1, 2, 14, 14])
  np.testing.assert_array_equal(rows["day"], days)
  assert source.num_days == 15 and source.day_size(13) == 0
  for task in TASKS:
    np.testing.assert_array_equal(rows[task], log[task])
  np.testing.assert_allclose(rows["play_time"],
                             np.log1p(log["play_time_ms"] / 1000), rtol=1e-6)

  schema = {f.name: f for f in source.schema.categorical}
  users = _user_features().set_index("user_id")
  user_ids = log["user_id"].to_numpy()
  for column in ("user_active_degree", "follow_user_num_range",
                 "is_live_streamer", "onehot_feat4"):
    vocab = sorted(users[column].unique())  # ids 1.., 0 = missing user
    assert schema[column].vocab_size == len(vocab) + 1, column
    want = [vocab.index(users[column][u]) + 1 if u in users.index else 0
            for u in user_ids]
    np.testing.assert_array_equal(rows[column], want, err_msg=column)
  dense = {f.name: f for f in source.schema.dense}
  counts = np.log1p(users["follow_user_num"].reindex(user_ids).to_numpy())
  fit = (days < 14) & (user_ids != 2)
  mean, std = counts[fit].mean(), counts[fit].std()
  assert dense["follow_user_num"].mean == pytest.approx(mean)
  np.testing.assert_allclose(
      rows["follow_user_num"][:, 0],
      np.where(user_ids == 2, 0.0, (counts - mean) / std), atol=1e-6)

  videos = _video_features().set_index("video_id")
  video_ids = log["video_id"].to_numpy()
  # Tags 7, 12, 65 -> ids 0, 1, 2; video 12 has no features.
  assert schema["tags"].vocab_size == 3 and schema["tags"].max_len == 2
  want_tags = {10: [1, 2], 11: [0, -1], 12: [-1, -1]}
  np.testing.assert_array_equal(rows["tags"],
                                [want_tags[v] for v in video_ids])
  np.testing.assert_array_equal(
      rows["author_id"],
      [zlib.crc32(str(videos["author_id"][v]).encode()) % 100_000
       if v in videos.index else 0 for v in video_ids])
  # video_type: AD -> 1, NORMAL -> 2, missing -> 0; music_type: only 4
  # belongs to a logged video; video 11's is empty.
  np.testing.assert_array_equal(rows["video_type"],
                                [{10: 2, 11: 1, 12: 0}[v] for v in video_ids])
  np.testing.assert_array_equal(rows["music_type"],
                                [{10: 1, 11: 0, 12: 0}[v] for v in video_ids])
  assert schema["tab"].vocab_size == 4  # tabs 0, 1, 4, and missing
  np.testing.assert_array_equal(rows["tab"],
                                [{0: 1, 1: 2, 4: 3}[t] for t in log["tab"]])

  builder = kuairand.KuaiRandLocal(config="pure",
                                   data_dir=str(tmp_path / "tfds"))
  assert builder.info.metadata["user_features_file"] == (
      "user_features_pure.csv")
  # The standard TFDS API reads it too, in the files' order.
  examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
  assert [e["time_ms"] for e in examples] == [
      _ms(row[2]) for row in _FIRST_LOG + _SECOND_LOG]
  assert examples[0]["user_active_degree"] == b"high_active"
  np.testing.assert_array_equal(examples[0]["tags"], [12, 65])
  assert examples[2]["video_type"] == b"" and examples[2]["author_id"] == -1
  np.testing.assert_array_equal(examples[2]["user_ints"], [-1] * 21)
  assert builder.info.metadata["log_files"] == [
      "log_standard_4_08_to_4_21_pure.csv",
      "log_standard_4_22_to_5_08_pure.csv"]


def test_official_release_without_feature_files(tmp_path):
  manual = _write_release(tmp_path / "KuaiRand-Pure", with_features=False)
  source = kuairand.kuairand_source(os.path.join(manual, "data"), "pure",
                                    data_dir=str(tmp_path / "tfds"))
  assert source.num_rows == 6
  assert [f.name for f in source.schema.categorical] == [
      "user_id", "video_id", "hour", "weekday", "tab"]
  assert [f.name for f in source.schema.dense] == ["duration"]


def test_official_release_through_the_shipped_gin_config(tmp_path):
  manual = _write_release(tmp_path / "KuaiRand-Pure")
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO_ROOT, "configs", "data", "kuairand.gin")],
        [f"kuairand_source.manual_dir = {os.path.join(manual, 'data')!r}"])
    source = kuairand.kuairand_source()  # "pure", a temporary data_dir
  finally:
    gin.clear_config()
  assert source.name == "kuairand-pure" and source.num_rows == 6


# Bad input.


def _prepare(manual, tmp_path):
  return kuairand.kuairand_source(manual, "pure",
                                  data_dir=str(tmp_path / "tfds"))


def test_missing_manual_dir_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    _prepare(str(tmp_path / "nowhere"), tmp_path)


def test_missing_log_file_is_named(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "README").write_text("not a log")
  with pytest.raises(FileNotFoundError,
                     match=r"empty[/\\]log_standard_\*_pure\*\.csv"):
    _prepare(str(tmp_path / "empty"), tmp_path)


def _drop_click(log):
  return log.drop(columns=["is_click"])


def _text_timestamp(log):
  log = log.astype({"time_ms": object})
  log.loc[2, "time_ms"] = "2022-04-09 00:00"
  return log


def _nan_like(log):
  log = log.astype({"is_like": float})
  log.loc[1, "is_like"] = np.nan
  return log


def _long_view_two(log):
  log.loc[3, "long_view"] = 2
  return log


# Data row r is line r + 2 (after the header).
@pytest.mark.parametrize("corrupt,message", [
    (_drop_click, r"log_standard_4_08_to_4_21_pure\.csv: missing "
                  r"column\(s\) \['is_click'\]"),
    (_text_timestamp, r"4_21_pure\.csv, line 4: the timestamp in column "
                      r"'time_ms' is unparsable: '2022-04-09 00:00'"),
    (_nan_like, r"4_21_pure\.csv, line 3: the is_like label in "
                r"column 'is_like' is missing"),
    (_long_view_two, r"line 5: the long_view label in column "
                     r"'long_view' is 2, not one of \[0, 1\]"),
], ids=["missing column", "unparsable timestamp", "NaN label",
        "non-binary label"])
def test_bad_log_values_are_named(tmp_path, corrupt, message):
  manual = _write_release(tmp_path / "r", first_log=corrupt(_log(_FIRST_LOG)))
  with pytest.raises(ValueError, match=message):
    _prepare(manual, tmp_path)


def test_malformed_line_is_named(tmp_path):
  text = _log(_FIRST_LOG).to_csv(index=False)
  lines = text.splitlines()
  lines[2] += ",1,2"  # two extra fields
  manual = _write_release(tmp_path / "r", first_log="\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"4_21_pure\.csv.*line 3"):
    _prepare(manual, tmp_path)


def test_subset_label_column_is_required(tmp_path):
  frame = _log(_FIRST_LOG).drop(columns=["is_like", "is_hate", "tab"])
  frame.to_csv(tmp_path / "processed_standard_kcore_15.csv", sep="\t",
               index=False)
  with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]"):
    kuairand.kuairand_source(str(tmp_path), "likehate_subset",
                             data_dir=str(tmp_path / "tfds"))


def test_bad_arguments():
  with pytest.raises(ValueError, match="'2k'"):
    kuairand.kuairand_source("/tmp", "2k")
  with pytest.raises(ValueError, match="day_source"):
    kuairand.kuairand_source("/tmp", "pure", day_source="hourmin")
