"""Evaluates checkpoints of a ranking model: python eval.py --model_dir=DIR.

Evaluation comes with the training issue (#5); until it lands this entry
point says so and exits without evaluating.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_string("model_dir", None, "Directory of the run to evaluate.")


def main(argv):
  del argv
  sys.stderr.write(
      "eval.py: evaluation is not implemented yet; it comes with the "
      "training issue (#5). Nothing was evaluated.\n")
  return 2


if __name__ == "__main__":
  app.run(main)
