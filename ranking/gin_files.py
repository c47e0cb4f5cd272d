"""Gin files of this repository: where they resolve from, and the one
parser every entry point uses (train.py, eval.py, param_count, sweeps).

Imports nothing heavy, so the sweep runner can parse its grid without
loading TensorFlow; the configurables a file binds must be registered by
the caller (ranking.launch registers every training one).
"""

import difflib
import math
import os
import sys
import typing
from typing import List, Sequence

import gin
from gin import config as gin_config
from gin import config_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Reference:
  """A @configurable or %macro reference as written, from parsing a gin
  text without evaluating it."""

  def __init__(self, text: str):
    self.text = text

  def __eq__(self, other):
    return isinstance(other, Reference) and other.text == self.text

  def __hash__(self):
    return hash(self.text)

  def __repr__(self):
    return self.text


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_name, evaluate):
    return Reference("@" + scoped_name + ("()" if evaluate else ""))

  def macro(self, macro_name):
    return Reference("%" + macro_name)


def gin_statements(text: str, where: str) -> list:
  """The statements of a gin text (bindings, imports, includes), parsed
  without importing, including or calling anything; errors name `where`."""
  try:
    return list(config_parser.ConfigParser(text, _Delegate()))
  except SyntaxError as e:
    raise ValueError(f"{where} is not a readable gin config: {e}") from e


def _missing_includes(text: str, where: str, seen=()) -> List[str]:
  """'where line N: include X' for every include (recursively) that names
  no file."""
  missing = []
  for statement in gin_statements(text, where):
    if not isinstance(statement, config_parser.IncludeStatement):
      continue
    line = statement.location.line_num
    path = resolve(statement.filename)
    if not os.path.isfile(path):
      missing.append(f"{where} line {line}: include "
                     f"{statement.filename!r}")
    elif path in seen:
      raise ValueError(f"{where} line {line}: include "
                       f"{statement.filename!r} makes a cycle of includes "
                       f"({' -> '.join(seen + (path,))}).")
    else:
      with open(path) as f:
        missing += _missing_includes(f.read(), statement.filename,
                                     tuple(seen) + (path,))
  return missing


def resolve(path: str) -> str:
  """`path` as given if it exists, else relative to the repository root."""
  return path if os.path.isfile(path) else os.path.join(REPO, path)


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str]):
  """Parses the files (includes resolve from the repository root) and
  bindings; an unknown configurable or parameter raises here, naming it."""
  if not gin_files:
    raise ValueError("Give at least one --gin_file, e.g. "
                     "configs/large_dcn_clippy.gin.")
  missing = []
  for path in gin_files:
    if not os.path.isfile(resolve(path)):
      raise FileNotFoundError(f"Gin file not found: {path}")
    with open(resolve(path)) as f:
      missing += _missing_includes(f.read(), path, (resolve(path),))
  missing += _missing_includes("\n".join(gin_params), "--gin_param")
  if missing:
    raise FileNotFoundError("Included gin file not found: " +
                            "; ".join(missing))
  gin.add_config_file_search_path(REPO)
  gin.parse_config_files_and_bindings([resolve(p) for p in gin_files],
                                      gin_params)
  check_number_bindings()
  for line in unused_macro_warnings():
    print(line, file=sys.stderr, flush=True)


def _macro_name(value):
  """NAME of a %NAME reference, else None."""
  selector = getattr(value, "_scoped_selector", "")
  if (isinstance(value, gin_config.ConfigurableReference) and
      selector.endswith("/gin.macro")):
    return selector[:-len("/gin.macro")]
  return None


def _macros_referenced(value, found: set):
  name = _macro_name(value)
  if name is not None:
    found.add(name)
  elif isinstance(value, (list, tuple, set, frozenset)):
    for item in value:
      _macros_referenced(item, found)
  elif isinstance(value, dict):
    for item in list(value.keys()) + list(value.values()):
      _macros_referenced(item, found)


def unused_macro_warnings() -> List[str]:
  """A warning for every gin macro bound (NAME = value) that no binding
  reads (%NAME): it changes nothing, which is what a misspelt one does
  (--gin_param=LEARNIN_RATE=0.05 trains at LEARNING_RATE). A warning, not
  an error: a sweep may bind a macro for every run of its grid that only
  some of them read."""
  defined, used = set(), set()
  for (scope, selector), params in gin_config._CONFIG.items():  # pylint: disable=protected-access
    if selector == "gin.macro":
      defined.add(scope)
    for value in params.values():
      _macros_referenced(value, used)
  lines, by_upper = [], {u.upper(): u for u in used}
  for name in sorted(defined - used):
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=1)
    hint = f"; did you mean {by_upper[close[0]]}?" if close else ""
    lines.append(f"WARNING: gin macro {name} is bound but no binding reads "
                 f"%{name}, so it changes nothing{hint}")
  return lines


def _number_kinds(annotation) -> set:
  """{int, float} & the options of an annotation (Optional/Union too)."""
  options = typing.get_args(annotation) if typing.get_origin(
      annotation) is typing.Union else (annotation,)
  return {option for option in options if option in (int, float)}


def _bound_value(value):
  """A binding's value with macros followed (other references as such)."""
  for _ in range(20):
    name = _macro_name(value)
    if name is None:
      break
    macro = gin_config._CONFIG.get((name, "gin.macro"), {})  # pylint: disable=protected-access
    if "value" not in macro:
      break
    value = macro["value"]
  return value


def check_number_bindings():
  """Every binding of a parameter annotated int or float holds a finite
  number of that kind (or None): a string such as Trainer.max_steps = '100',
  1.5 steps or a learning rate of 1e400 (inf) is refused here, naming the
  binding, before any work.

  Raises:
    ValueError: the first such binding.
  """
  for (scope, selector), params in list(gin_config._CONFIG.items()):  # pylint: disable=protected-access
    if selector == "gin.macro":
      continue
    try:
      configurable = gin_config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
      wrapped = configurable.wrapped
      hints = typing.get_type_hints(
          wrapped.__init__ if isinstance(wrapped, type) else wrapped)
    except Exception:  # pylint: disable=broad-except
      continue  # an unannotated or foreign configurable: gin's own checks
    for name, raw in params.items():
      value = _bound_value(raw)
      kinds = _number_kinds(hints.get(name))
      if not kinds or value is None or isinstance(
          value, gin_config.ConfigurableReference):
        continue
      binding = "/".join(filter(None, [scope, configurable.name]))
      via = f" (via {raw!r})" if raw is not value else ""
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{binding}.{name} = {value!r}{via}: a number is "
                         f"needed, not a {type(value).__name__}.")
      if kinds == {int} and not isinstance(value, int):
        raise ValueError(f"{binding}.{name} = {value!r}{via}: a whole number "
                         "is needed.")
      if not math.isfinite(value):
        raise ValueError(f"{binding}.{name} = {value!r}{via}: a finite "
                         "number is needed.")
