"""Which kind of sweep gin files declare: a Table 2 grid (`Sweep`,
sweeps/grid.py) or a Table 3 ablation (`Ablation`, sweeps/ablation.py),
read from the configurables they bind (through their includes), and the
loaded sweep. Apart from sweeps/__main__.py so that importing it defines no
command-line flags.
"""

import os

from gin import config_parser

from ranking import gin_files as gin_files_lib
from sweeps import ablation
from sweeps import grid

KINDS = {"Sweep": "a Table 2 grid, e.g. configs/table2_cpu.gin",
         "Ablation": "a Table 3 ablation, e.g. configs/table3_cpu.gin"}


def _bound(text: str, where: str, seen=()) -> set:
  """The configurables a gin text binds (through its includes)."""
  out = set()
  for statement in gin_files_lib.gin_statements(text, where):
    if isinstance(statement, config_parser.BindingStatement):
      out.add(statement.selector.rsplit(".", 1)[-1])
    elif isinstance(statement, config_parser.IncludeStatement):
      path = gin_files_lib.resolve(statement.filename)
      if os.path.isfile(path) and path not in seen:
        with open(path) as f:
          out |= _bound(f.read(), statement.filename, seen + (path,))
  return out


def kind_of(gin_files, gin_params) -> str:
  """'Sweep' or 'Ablation': which of the two the gin files bind.

  Raises:
    FileNotFoundError: a gin file is missing.
    ValueError: they bind neither, or both.
  """
  bound = set()
  for path in gin_files:
    if not os.path.isfile(gin_files_lib.resolve(path)):
      raise FileNotFoundError(f"Gin file not found: {path}")
    with open(gin_files_lib.resolve(path)) as f:
      bound |= _bound(f.read(), path, (gin_files_lib.resolve(path),))
  bound |= _bound("\n".join(gin_params), "--gin_param")
  kinds = [k for k in KINDS if k in bound]
  files = ", ".join(gin_files)
  if not kinds:
    raise ValueError(
        f"{files}: binds neither Sweep ({KINDS['Sweep']}) nor Ablation "
        f"({KINDS['Ablation']}); python -m sweeps runs one of them (a "
        f"single training is train.py's).")
  if len(kinds) > 1:
    raise ValueError(f"{files}: binds both Sweep and Ablation; a sweep is "
                     "one of them.")
  return kinds[0]


def load(gin_files, gin_params):
  """The grid.Sweep or ablation.Ablation the gin files declare."""
  if kind_of(gin_files, gin_params) == "Ablation":
    return ablation.load_ablation(gin_files, gin_params)
  return grid.load_sweep(gin_files, gin_params)
