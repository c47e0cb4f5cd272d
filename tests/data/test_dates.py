"""Days named by date: sources' calendars, MovingWindow.first_train_date and
eval_date, and the check of a small or one-class evaluation day.

Dates and day indices are worked out by hand in the comments.
"""

import datetime

import numpy as np
import pytest

from data import files, materialize, synthetic
from data import schema as schema_lib
from data.source import InMemorySource
from data.window import MovingWindow

# 2024 is a leap year: day 0 = 02-27, 1 = 02-28, 2 = 02-29, 3 = 03-01,
# 4 = 03-02.
FEB_27 = datetime.date(2024, 2, 27)


def _toy(day_sizes, first_date=FEB_27, labels=None):
  """A binary label `y` (default: alternating 1, 0, ...), one per row."""
  days = np.repeat(np.arange(len(day_sizes)), day_sizes)
  y = (np.arange(len(days)) % 2 == 0) if labels is None else labels
  schema = schema_lib.Schema(dense=[schema_lib.DenseFeature("x")],
                             labels=[schema_lib.Label("y", "binary"),
                                     schema_lib.Label("r", "regression")])
  return InMemorySource(schema, {
      "x": np.zeros((len(days), 1), np.float32),
      "y": np.asarray(y, np.float32), "r": np.zeros(len(days), np.float32)},
                        days, name="toy", first_date=first_date)


def test_dates_name_days_across_a_leap_day():
  source = _toy([4, 4, 4, 4, 4])
  window = MovingWindow(source, batch_size=2, first_train_date="2024-02-28",
                        eval_date="2024-03-01")
  assert window.eval_day == 3
  np.testing.assert_array_equal(window.train_days, [1, 2])
  assert window.eval_date == datetime.date(2024, 3, 1)
  assert source.date_of_day(2) == datetime.date(2024, 2, 29)
  assert source.describe_day(4) == "day 4 (2024-03-02)"
  assert source.calendar() == "days 0..4, dates 2024-02-27..2024-03-02"
  # The default evaluation day (the last) has its date too.
  assert MovingWindow(source, batch_size=2).eval_date == datetime.date(
      2024, 3, 2)


@pytest.mark.parametrize("value", ["2024/03/01", "2024-3-1", "2024-02-30",
                                   "1 March 2024", "20240301", 20240301,
                                   " 2024-03-01"])
def test_a_malformed_date_is_named(value):
  with pytest.raises(ValueError, match=f"MovingWindow.eval_date = "
                     f"{value!r} is not a date 'YYYY-MM-DD'"):
    MovingWindow(_toy([4] * 5), batch_size=2, eval_date=value)


@pytest.mark.parametrize("key,value", [("eval_date", "2024-02-26"),
                                       ("eval_date", "2024-03-03"),
                                       ("first_train_date", "2023-02-27")])
def test_a_date_outside_the_log_names_its_range(key, value):
  with pytest.raises(ValueError, match=(
      f"MovingWindow.{key} = '{value}' is outside the log of toy \\(days "
      "0..4, dates 2024-02-27..2024-03-02\\)")):
    MovingWindow(_toy([4] * 5), batch_size=2, **{key: value})


def test_a_source_without_a_calendar_points_to_the_day_index():
  with pytest.raises(ValueError, match=(
      "MovingWindow.eval_date = '2024-03-01': toy has no calendar \\(days "
      "0..4, without dates\\); name the day with MovingWindow.eval_day")):
    MovingWindow(_toy([4] * 5, first_date=None), batch_size=2,
                 eval_date="2024-03-01")


@pytest.mark.parametrize("kwargs,message", [
    (dict(eval_date="2024-03-01", eval_day=2),
     "MovingWindow.eval_date = '2024-03-01' and MovingWindow.eval_day = 2 "
     "both name the day"),
    (dict(first_train_date="2024-02-28", first_train_day=1),
     "MovingWindow.first_train_date = '2024-02-28' and "
     "MovingWindow.first_train_day = 1 both name the day"),
    # Day 3 is not before the evaluation day 3.
    (dict(first_train_date="2024-03-01", eval_date="2024-03-01"),
     "first_train_day must be in \\[0, 3\\) \\(before the evaluation day 3 "
     "\\(2024-03-01\\)\\), got day 3 \\(2024-03-01\\)"),
])
def test_conflicting_settings_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    MovingWindow(_toy([4] * 5), batch_size=2, **kwargs)


def _chicago_log(tmp_path):
  # unix s: UTC time -> America/Chicago (CST, UTC-6) local time.
  rows = ["1709258400,u1,30,1",  # 03-01 02:00 -> 02-29 20:00: Chicago day 0
          "1709294400,u2,40,0",  # 03-01 12:00 -> 03-01 06:00: day 1
          "1709359140,u3,50,1",  # 03-02 05:59 -> 03-01 23:59: day 1
          "1709359200,u4,60,0",  # 03-02 06:00 -> 03-02 00:00: day 2
          "1709467200,u5,70,1"]  # 03-03 12:00 -> 03-03 06:00: day 3
  path = tmp_path / "logs.csv"
  path.write_text("ts,user,age,click\n" + "".join(r + "\n" for r in rows))
  return str(path)


def _read(path, time_zone):
  return files.file_source(paths=[path], timestamp_column="ts",
                           labels={"click": "binary"},
                           categorical={"user": 10}, dense={"age": "none"},
                           time_zone=time_zone)


def test_file_dates_are_local_dates_of_the_time_zone(tmp_path):
  path = _chicago_log(tmp_path)
  chicago, utc = _read(path, "America/Chicago"), _read(path, "UTC")
  # Chicago: 02-29 (1 row), 03-01 (2), 03-02 (1), 03-03 (1).
  assert chicago.first_date == datetime.date(2024, 2, 29)
  np.testing.assert_array_equal(np.diff(chicago.day_offsets), [1, 2, 1, 1])
  # UTC: 03-01 (2 rows), 03-02 (2), 03-03 (1).
  assert utc.first_date == datetime.date(2024, 3, 1)
  np.testing.assert_array_equal(np.diff(utc.day_offsets), [2, 2, 1])
  # The same date is another day, holding other rows.
  local = MovingWindow(chicago, batch_size=2, eval_date="2024-03-02")
  assert local.eval_day == 2 and chicago.day_size(2) == 1
  assert MovingWindow(chicago, batch_size=2, first_train_date="2024-03-01",
                      eval_date="2024-03-02").train_days.tolist() == [1]
  universal = MovingWindow(utc, batch_size=2, eval_date="2024-03-02")
  assert universal.eval_day == 1 and utc.day_size(1) == 2
  with pytest.raises(ValueError, match="'2024-02-29' is outside the log of "
                     ".*dates 2024-03-01..2024-03-03"):
    MovingWindow(utc, batch_size=2, eval_date="2024-02-29")


def test_the_synthetic_stream_has_the_dates_of_its_files():
  stream = synthetic.SyntheticStream(num_days=6, examples_per_day=10)
  assert stream.first_date == datetime.date(2022, 4, 15)
  assert MovingWindow(stream, batch_size=2,
                      eval_date="2022-04-19").eval_day == 4
  # data/materialize.py stamps day 0 at 2022-04-15 00:00 UTC:
  # 19097 days after 1970-01-01.
  assert materialize.EPOCH == 19097 * 86_400 == 1_649_980_800


# -- the evaluation day's size and classes -----------------------------------


def test_a_small_evaluation_day_is_a_warning_naming_day_size_threshold():
  # Day 4 holds rows 16..20: y = 1, 0, 1, 0, 1 (even rows are positive).
  source = _toy([4, 4, 4, 4, 5])
  lines = []
  counts = MovingWindow(source, batch_size=2).check_eval_day(log=lines.append)
  assert counts == {"y": (3, 2)}
  assert lines == [
      "WARNING: the evaluation day 4 (2024-03-02) has 5 examples, fewer than "
      "MovingWindow.min_eval_examples = 1,000; y: 3 positives, 2 negatives: "
      "its AUCs are noisy; evaluate a larger day (MovingWindow.eval_day or "
      "eval_date)."]
  lines = []
  MovingWindow(source, batch_size=2, min_eval_examples=5).check_eval_day(
      log=lines.append)
  assert lines == ["evaluation day 4 (2024-03-02): 5 examples; y: 3 "
                   "positives, 2 negatives"]


@pytest.mark.parametrize("positive,message", [
    (0.0, "y has 0 positive and 4 negative examples"),
    (1.0, "y has 4 positive and 0 negative examples")])
def test_a_one_class_evaluation_day_is_an_error_naming_the_task(positive,
                                                                message):
  labels = np.r_[np.arange(8) % 2, np.full(4, positive)]
  window = MovingWindow(_toy([4, 4, 4], labels=labels), batch_size=2)
  with pytest.raises(ValueError, match=(
      f"toy: on the evaluation day 2 \\(2024-02-29\\) \\(4 examples\\), "
      f"{message}: an AUC needs both classes")):
    window.check_eval_day(log=lambda _: None)
  # A task the model does not train is not evaluated: no error.
  lines = []
  assert window.check_eval_day(["r"], lines.append) == {}
  assert lines[0].startswith("WARNING: the evaluation day 2 (2024-02-29) has "
                             "4 examples")


def test_a_one_class_evaluation_day_from_files(tmp_path):
  # The last Chicago day (03-03) holds one click.
  window = MovingWindow(_read(_chicago_log(tmp_path), "America/Chicago"),
                        batch_size=2)
  with pytest.raises(ValueError, match="day 3 \\(2024-03-03\\) \\(1 "
                     "examples\\), click has 1 positive and 0 negative"):
    window.check_eval_day(log=lambda _: None)


def test_min_eval_examples_must_be_a_count():
  with pytest.raises(ValueError, match="MovingWindow.min_eval_examples must "
                     "be >= 0 \\(0: no warning\\), got -1"):
    MovingWindow(_toy([4] * 3), batch_size=2, min_eval_examples=-1)
