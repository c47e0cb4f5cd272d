"""results/claims.md: the verdicts of several sweeps side by side."""

import json
import os

from sweeps import claims_by_dataset


def write(directory, sweep, verdicts):
  os.makedirs(directory)
  with open(os.path.join(directory, "claims.json"), "w") as f:
    json.dump({"sweep": sweep, "primary_auc": "click/auc", "claims": [
        {"claim": f"claim {i}", "verdict": v, "numbers": f"{sweep} n{i}"}
        for i, v in enumerate(verdicts, 1)]}, f)


def test_verdicts_per_dataset_and_a_missing_one(tmp_path):
  write(tmp_path / "a", "table2_a", ["HOLDS", "FAILS"])
  write(tmp_path / "b", "table2_b", ["FAILS", "UNDECIDED"])
  text = claims_by_dataset.markdown([
      ("synthetic", str(tmp_path / "a")), ("real", str(tmp_path / "b")),
      ("none", str(tmp_path / "c"))])
  lines = text.splitlines()
  assert "| Claim | synthetic | real | none |" in lines
  assert "| 1. claim 1 | **HOLDS** | **FAILS** | missing |" in lines
  assert "| 2. claim 2 | **FAILS** | UNDECIDED | missing |" in lines
  assert "2. **UNDECIDED**: table2_b n2." in lines
  assert any(line.startswith("No results yet:") and "c/claims.json" in line
             for line in lines)


def test_main_needs_output_and_datasets(capsys):
  assert claims_by_dataset.main([]) == 2
  assert "Give --output" in capsys.readouterr().err
  assert claims_by_dataset.main(["--bogus"]) == 2
