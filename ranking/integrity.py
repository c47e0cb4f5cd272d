"""Run integrity: a run's files tell the truth (../shared/DESIGN.md section 8).

  - RunLock: one training process per model_dir (an flock, so a lock left by
    a dead process is free and is taken over, saying whose it was);
  - config_differences / check_resume_config: a run resumed in a model_dir
    trains with the settings it was started with; bindings that do not
    change what is trained (RESUME_MAY_DIFFER) may differ;
  - data_fingerprint / check_resume_data: ... and on the same data (days,
    their sizes, the schema with its feature statistics), which the same
    bindings can still resolve to differently (a glob that finds a new file);
  - restore_newest_intact: resume from the newest checkpoint that restores
    whole, falling back past corrupt ones (moved aside into corrupt/) and
    refusing to start from step 0 over checkpoints that exist;
  - strict_json: summary.json and metrics.jsonl hold no bare NaN/Infinity
    (null, and the value's name under "nonfinite").
"""

import dataclasses
import datetime
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
from typing import Callable, Dict, List, Optional, Tuple

from gin import config_parser

from ranking.gin_files import Reference, gin_statements

LOCK_FILE = ".train.lock"
OPERATIVE_CONFIG = "operative_config.gin"
DATA_FINGERPRINT = "data_fingerprint.json"

# Bindings that change how a run is watched or scheduled on the host, not
# what it trains: a resumed run may change them. Everything else (model,
# optimizer, learning rate, batch, data, protocol, divergence rules) must
# match the run's recorded operative config.
RESUME_MAY_DIFFER = (
    "Trainer.max_steps", "Trainer.eval_every_steps", "Trainer.eval_every_days",
    "Trainer.checkpoint_every_steps", "Trainer.summary_every_steps",
    "Trainer.steps_per_loop", "Trainer.eval_batch_size",
    "Trainer.crash_at_step", "Trainer.crash_signal",
    "Trainer.crash_worker", "Trainer.log", "Trainer.strategy",
    "Trainer.allow_config_change", "Trainer.jit_compile", "make_strategy.*",
    "build_optimizer.record_diagnostics", "build_optimizer.diagnostics_every",
    "MovingWindow.min_eval_examples", "Trainer.min_eval_gap_steps",
    "MovingWindow.eval_cache_bytes", "MovingWindow.prefetch_bytes",
    # Measures the run (ranking/sharpness.py), writes nothing it trains on.
    "SharpnessMonitor.*",
    # What TensorBoard shows (ranking/dashboard.py).
    "Dashboard.*",
    # Where the tables live and how a prepared log is read: not what is
    # trained (its rows are checked by the data fingerprint).
    "EmbeddingPartitioner.*", "on_disk_source.path",
    "on_disk_source.max_mapped_days", "on_disk_source.verify_checksums",
)

# Bindings added after runs were recorded, with the value that does what
# those runs did: a recorded config without one counts as having this value,
# so an older model_dir still resumes (and a resumed run that sets another
# value is refused as usual).
ADDED_BINDINGS = {
    "MovingWindow.first_train_date": None,
    "MovingWindow.eval_date": None,
    "build_model.drop_features": (),
}
# Fingerprint entries added after runs were recorded: compared only when
# the recorded fingerprint has them.
ADDED_FINGERPRINT_KEYS = ("first_date",)


# -- the lock -----------------------------------------------------------------


class RunLock:
  """An exclusive lock on model_dir/.train.lock, held while training.

  flock locks die with their process, so a lock file left by a killed run
  is not locked: it is taken over (and the log says whose it was). A live
  holder makes acquire() raise, naming its pid and host.
  """

  def __init__(self, model_dir: str, log: Callable[[str], None] = print):
    self.path = os.path.join(model_dir, LOCK_FILE)
    self.log = log
    self._file = None

  def acquire(self):
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
      raise RuntimeError(f"Cannot open the run lock {self.path}: {e} (it "
                         "must be a regular file, not a link).") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      os.close(fd)
      raise RuntimeError(f"The run lock {self.path} is not a regular file.")
    handle = os.fdopen(fd, "r+")
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "unknown process"
      handle.close()
      raise RuntimeError(
          f"Another training run holds {self.path} ({holder}); two runs in "
          "one model_dir would overwrite each other's checkpoints. Wait for "
          "it to end, or use another --model_dir.") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:
      self.log(f"taking over the stale lock {self.path} ({previous}: no "
               "longer running)")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    handle.flush()
    self._file = handle
    return self

  def release(self):
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()
      self._file.close()  # closing releases the flock
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


# -- the configuration of a resumed run ------------------------------------


def gin_bindings(text: str, where: str) -> Dict[str, object]:
  """{'[scope/]Configurable.param': value} of a gin text, macros resolved
  (a macro 'NAME' is kept too, under its own name)."""
  bindings, macros = {}, {}
  for statement in gin_statements(text, where):
    if not isinstance(statement, config_parser.BindingStatement):
      continue
    name = "/".join(filter(None, [statement.scope, statement.selector]))
    if statement.arg_name:
      bindings[f"{name}.{statement.arg_name}"] = statement.value
    else:
      macros[name] = statement.value

  def resolve(value, depth=0):
    if isinstance(value, Reference) and value.text.startswith("%"):
      name = value.text[1:]
      if name in macros and depth < 20:
        return resolve(macros[name], depth + 1)
    if isinstance(value, (list, tuple)):
      return type(value)(resolve(v, depth) for v in value)
    if isinstance(value, dict):
      return {k: resolve(v, depth) for k, v in value.items()}
    return value

  out = {k: resolve(v) for k, v in bindings.items()}
  out.update(macros)
  return out


def _may_differ(key: str) -> bool:
  plain = key.rsplit("/", 1)[-1]
  return any(plain == allowed or (allowed.endswith(".*") and
                                  plain.startswith(allowed[:-1]))
             for allowed in RESUME_MAY_DIFFER)


def config_differences(recorded: str, current: str,
                       where: str = OPERATIVE_CONFIG) -> List[str]:
  """Lines 'binding: recorded -> now' for every binding that differs and
  changes the training (RESUME_MAY_DIFFER excepted), sorted."""
  old = gin_bindings(recorded, where)
  new = gin_bindings(current, "the current configuration")
  missing = object()
  lines = []
  for key in sorted(set(old) | set(new)):
    a = old.get(key, ADDED_BINDINGS.get(key.rsplit("/", 1)[-1], missing))
    b = new.get(key, missing)
    if a == b or _may_differ(key):
      continue
    shown = ["(unset)" if v is missing else repr(v) for v in (a, b)]
    lines.append(f"{key}: {shown[0]} -> {shown[1]}")
  return lines


def has_checkpoints(model_dir: str) -> bool:
  return bool(checkpoint_candidates(os.path.join(model_dir, "checkpoints")))


def check_resume_config(model_dir: str, current: str,
                        allow_change: bool = False,
                        log: Callable[[str], None] = print):
  """Refuses to resume a run in `model_dir` with other settings.

  Returns:
    The recorded config's text when `allow_change` let differences
    through on a run with checkpoints: it then describes the steps trained
    so far (see keep_superseded_config); else None.

  Raises:
    ValueError: the recorded operative config differs in a binding that
      changes the training (listed), is unreadable, or is missing while
      checkpoints exist; unless `allow_change` (then the differences are
      logged).
  """
  path = os.path.join(model_dir, OPERATIVE_CONFIG)
  resuming = has_checkpoints(model_dir)
  if not os.path.exists(path):
    if resuming and not allow_change:
      raise ValueError(f"{model_dir} has checkpoints but no {OPERATIVE_CONFIG}"
                       ": its settings cannot be checked. " + _HINT)
    return None
  try:
    with open(path) as f:
      recorded = f.read()
    if not gin_bindings(recorded, path):
      raise ValueError("it holds no bindings")
    differences = config_differences(recorded, current, path)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    if allow_change or not resuming:
      log(f"cannot read {path} ({e}); "
          + ("resuming anyway" if resuming else "no checkpoint: starting "
             "afresh"))
      return None
    raise ValueError(f"Cannot read the recorded config {path}: {e}. "
                     + _HINT) from e
  if differences and not resuming:
    log(f"{model_dir} has no checkpoint, so nothing trained with its "
        f"recorded settings is resumed: starting afresh with the new ones "
        f"(recorded -> now):\n  " + "\n  ".join(differences))
    return None
  _refuse_unless_allowed(model_dir, differences, "with other settings",
                         "with changed settings", allow_change, log)
  return recorded if differences else None


def keep_superseded_config(model_dir: str, step: int, recorded: str,
                           log: Callable[[str], None] = print) -> str:
  """Keeps `recorded`, the operative config that an allowed change of
  settings is about to replace, as operative_config.until-step-<step>.gin:
  the settings the run's steps up to `step` trained with. An existing one
  is kept (no step trained since it was written, so it is still the
  settings of those steps). Returns its path."""
  kept = os.path.join(model_dir, OPERATIVE_CONFIG.replace(
      ".gin", f".until-step-{step}.gin"))
  if not os.path.exists(kept):
    write_text_atomically(kept, recorded)
  log(f"the settings of steps 1..{step} are kept in {kept}")
  return kept


_HINT = ("Use a new --model_dir, or bind Trainer.allow_config_change=True "
         "to resume with the new settings anyway.")


def _refuse_unless_allowed(model_dir, differences, started, changed,
                           allow_change, log):
  """Nothing if no differences; logs them if allowed; else refuses,
  listing them (recorded -> now)."""
  if not differences:
    return
  listing = "\n  ".join(differences)
  if allow_change:
    log(f"resuming {model_dir} {changed} (allowed):\n  {listing}")
    return
  raise ValueError(f"{model_dir} was started {started}; refusing to resume "
                   f"it. The differences (recorded -> now):\n  {listing}\n"
                   + _HINT)


def data_fingerprint(window) -> Dict:
  """What a resumed run must see again: the source, its days and their
  sizes, the date of day 0 (None: no calendar), the evaluation day, and a
  hash of the schema (features, vocabulary sizes, labels, and the dense
  features' normalisation statistics, which change with the rows); for a
  prepared log, the digest of its rows."""
  schema = json.dumps(dataclasses.asdict(window.source.schema),
                      sort_keys=True, default=str)
  fingerprint = {
      "source": window.source.name,
      "day_sizes": [window.source.day_size(d)
                    for d in range(window.source.num_days)],
      "eval_day": int(window.eval_day),
      "first_date": (window.source.first_date.isoformat()
                     if window.source.first_date else None),
      "schema_sha256": hashlib.sha256(schema.encode()).hexdigest(),
  }
  content = getattr(window.source, "fingerprint", None)
  if content is not None:  # a prepared log (data/on_disk.py): its rows too
    fingerprint["content_sha256"] = content
  return fingerprint


def check_resume_data(model_dir: str, window, allow_change: bool = False,
                      log: Callable[[str], None] = print):
  """Refuses to resume on other data than the run started with.

  Raises:
    ValueError: model_dir has checkpoints and a recorded fingerprint that
      differs (listed), unless `allow_change`.
  """
  path = os.path.join(model_dir, DATA_FINGERPRINT)
  if not (has_checkpoints(model_dir) and os.path.exists(path)):
    return
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    recorded = {"unreadable": str(e)}
  current = data_fingerprint(window)
  differences = []
  for key in sorted(set(recorded) | set(current)):
    a, b = recorded.get(key), current.get(key)
    if a == b or (key in ADDED_FINGERPRINT_KEYS and key not in recorded):
      continue
    if key == "day_sizes" and isinstance(a, list):
      changed = [f"day {d}: {x} -> {y}" for d, (x, y) in enumerate(
          zip(a + [None] * len(b), b + [None] * len(a))) if x != y]
      differences.append("examples per day: " + ", ".join(changed[:8]) + (
          f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""))
    elif key == "schema_sha256":
      differences.append("the schema or the dense features' statistics")
    else:
      differences.append(f"{key}: {a!r} -> {b!r}")
  _refuse_unless_allowed(model_dir, differences, f"on other data ({path})",
                         "on changed data", allow_change, log)


# -- checkpoints ---------------------------------------------------------------

_CKPT = re.compile(r"^(ckpt-(\d+))\.(index|data-\d+-of-\d+)$")


def checkpoint_candidates(directory: str) -> List[Tuple[int, str]]:
  """[(step, prefix)] of every checkpoint with any file in `directory`,
  newest first; the state file is not trusted."""
  if not os.path.isdir(directory):
    return []
  found = {}
  for name in os.listdir(directory):
    match = _CKPT.match(name)
    if match:
      found[int(match.group(2))] = os.path.join(directory, match.group(1))
  return sorted(found.items(), reverse=True)


def checkpoint_files(prefix: str) -> List[str]:
  directory, base = os.path.split(prefix)
  if not os.path.isdir(directory or "."):
    return []
  # A bare name ('ckpt-120', '120') is in the working directory.
  return sorted(os.path.join(directory, n)
                for n in os.listdir(directory or ".")
                if n.startswith(base + ".") and _CKPT.match(n))


def _record_state(directory: str, prefixes: List[str]):
  """Rewrites the `checkpoint` state file: newest last."""
  # What tf.train.CheckpointManager writes, without the deprecated
  # tf.compat.v1 wrapper (which logs a deprecation warning on first use).
  from tensorflow.python.checkpoint import checkpoint_management  # pylint: disable=g-import-not-at-top
  if not prefixes:
    state = os.path.join(directory, "checkpoint")
    if os.path.exists(state):
      os.remove(state)
    return
  checkpoint_management.update_checkpoint_state_internal(
      directory, os.path.basename(prefixes[-1]),
      all_model_checkpoint_paths=[os.path.basename(p) for p in prefixes])


def save_checkpoint(checkpoint, directory: str, step: int, keep: int,
                    every: int) -> str:
  """Writes `checkpoint` as `directory`/ckpt-`step` and prunes: kept are the
  newest `keep` checkpoints whose step is a multiple of `every` (the
  periodic ones, which are also restore points) and this one, the newest
  (where a preempted run resumes), which the state file names. Returns the
  prefix written."""
  os.makedirs(directory, exist_ok=True)
  prefix = os.path.join(directory, f"ckpt-{step}")
  for path in checkpoint_files(prefix):  # a rollback can come back to it
    os.remove(path)
  checkpoint.write(prefix)
  candidates = checkpoint_candidates(directory)
  periodic = [p for s, p in candidates if s % every == 0][:keep]
  kept = set(periodic) | {prefix}
  for _, old in candidates:
    if old not in kept:
      for path in checkpoint_files(old):
        os.remove(path)
  _record_state(directory, [p for _, p in reversed(candidates)
                            if p in kept and p != prefix] + [prefix])
  return prefix


def discard_checkpoints_after(directory: str, step: int) -> List[str]:
  """Removes the checkpoints of steps after `step` (a rolled-back future);
  returns their prefixes."""
  candidates = checkpoint_candidates(directory)
  gone = [p for s, p in candidates if s > step]
  for prefix in gone:
    for path in checkpoint_files(prefix):
      os.remove(path)
  _record_state(directory, [p for s, p in reversed(candidates) if s <= step])
  return gone


def clean_temporaries(model_dir: str, log: Callable[[str], None] = print):
  """Removes what a killed save leaves: checkpoints/*_temp* and *.tmp."""
  for directory in (model_dir, os.path.join(model_dir, "checkpoints")):
    if not os.path.isdir(directory):
      continue
    for name in sorted(os.listdir(directory)):
      path = os.path.join(directory, name)
      in_checkpoints = directory.endswith("checkpoints")
      if (in_checkpoints and ("_temp" in name or
                              name.startswith("checkpoint.tmp"))) or (
                                  name.endswith(".tmp")):
        log(f"removing {path}, left by an interrupted write")
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)


def unrestorable(path: str, error: BaseException) -> str:
  """Why checkpoint `path` cannot be restored, naming its files."""
  files = ", ".join(checkpoint_files(path)) or "no files"
  return (f"checkpoint {path} cannot be restored ({files}): "
          f"{describe_error(error)}")


def restore_newest_intact(restore: Callable[[str], None], directory: str,
                          log: Callable[[str], None] = print,
                          repair: bool = True) -> Optional[str]:
  """Restores the newest checkpoint in `directory` that reads back whole.

  Args:
    restore: restores one checkpoint prefix; raises if it is unreadable
      (truncated data, missing index, bad checksum, non-finite values).
    directory: the checkpoints directory.
    log: where fallbacks are reported.
    repair: move corrupt checkpoints newer than the one restored into
      `directory`/corrupt/ and rewrite the state file (the trainer); False
      leaves every file as it is (eval.py, beside a running trainer).

  Returns:
    The prefix restored, or None when there is no checkpoint at all.

  Raises:
    ValueError: checkpoints exist but none restores; names their files.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  candidates = checkpoint_candidates(directory)
  if not candidates:
    return None
  state = tf.train.get_checkpoint_state(directory)
  recorded = os.path.basename(state.model_checkpoint_path) if (
      state and state.model_checkpoint_path) else None
  if os.path.exists(os.path.join(directory, "checkpoint")) and not recorded:
    log(f"{os.path.join(directory, 'checkpoint')} is unreadable; choosing "
        "among the checkpoint files themselves")
  failures = []
  for step, prefix in candidates:
    try:
      restore(prefix)
    except Exception as e:  # pylint: disable=broad-except
      files = checkpoint_files(prefix)
      failures.append((prefix, files, describe_error(e)))
      log(f"checkpoint {prefix} is unreadable ({failures[-1][2]}); "
          "trying an older one")
      continue
    if failures:
      log(f"{'resuming from' if repair else 'using'} {prefix} (step {step}), "
          f"the newest intact checkpoint; {len(failures)} newer one(s) are "
          "corrupt")
    if repair and (failures or recorded != os.path.basename(prefix)):
      _set_aside(directory, failures, log)
      kept = [p for s, p in candidates if s <= step and os.path.exists(
          p + ".index")]
      tf.compat.v1.train.update_checkpoint_state(
          directory, os.path.basename(prefix),
          all_model_checkpoint_paths=[os.path.basename(p)
                                      for p in reversed(kept)])
    return prefix
  listing = "\n  ".join(f"{p} ({', '.join(files) or 'no files'}): {why}"
                        for p, files, why in failures)
  consequence = (" so the run cannot resume (and will not restart from step "
                 "0 over them)" if repair else "")
  raise ValueError(f"No checkpoint in {directory} can be restored,"
                   f"{consequence}:\n  {listing}" + (
                       "\nMove them away to start afresh." if repair else ""))


def describe_error(error: Exception) -> str:
  """'Type: first line' of an error, without TensorFlow's node prefix."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text)
  return f"{type(error).__name__}: {text[:400]}"


def _set_aside(directory, failures, log):
  if not failures:
    return
  target = os.path.join(directory, "corrupt")
  os.makedirs(target, exist_ok=True)
  for _, files, _ in failures:
    for path in files:
      os.replace(path, os.path.join(target, os.path.basename(path)))
  log(f"moved {sum(len(f) for _, f, _ in failures)} file(s) of corrupt "
      f"checkpoints to {target}")


# -- strict JSON -----------------------------------------------------------------


def strict_json(value, path: str = "") -> Tuple[object, Dict[str, str]]:
  """(value with every non-finite float replaced by None, {path: 'nan' |
  'inf' | '-inf'} of what was replaced), for json.dumps(allow_nan=False)."""
  reasons: Dict[str, str] = {}

  def clean(v, where):
    if isinstance(v, float) and not math.isfinite(v):
      reasons[where] = str(v)
      return None
    if isinstance(v, dict):
      return {k: clean(x, f"{where}/{k}" if where else str(k))
              for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [clean(x, f"{where}/{i}") for i, x in enumerate(v)]
    return v

  return clean(value, path), reasons


def dumps_strict(record: Dict, **kwargs) -> str:
  """json.dumps of a record, non-finite floats as null with their names
  under "nonfinite"."""
  clean, reasons = strict_json(record)
  if reasons:
    clean["nonfinite"] = reasons
  return json.dumps(clean, allow_nan=False, **kwargs)


def write_text_atomically(path: str, text: str):
  """Writes via path.tmp, so a reader sees the old file or the new one (a
  killed write leaves only the .tmp, which clean_temporaries removes)."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def write_json_atomically(path: str, record: Dict) -> Dict:
  """Writes the record as strict JSON, atomically; returns what was
  written."""
  text = dumps_strict(record, indent=1)
  write_text_atomically(path, text)
  return json.loads(text)
