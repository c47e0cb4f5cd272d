"""What every benchmark writes: the machine line and the report files."""

import json
import os
import platform


def machine(tf_version: str) -> str:
  return (f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, "
          f"TensorFlow {tf_version}.")


def write(output: str, report: str, raw) -> None:
  """Writes the Markdown report and the raw numbers (.json) beside it,
  atomically, and prints the report."""
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  for path, text in ((output, report),
                     (os.path.splitext(output)[0] + ".json",
                      json.dumps(raw, indent=1))):
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  print(report)
  print(f"wrote {output}")
