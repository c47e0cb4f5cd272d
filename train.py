"""Trains a multitask ranking model: python train.py --gin_file=CONFIG.

The training loop comes with the training issue (#5); until it lands this
entry point only checks its configuration and says so, without training.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
flags.DEFINE_string("model_dir", None, "Directory for checkpoints and logs.")


def main(argv):
  del argv
  sys.stderr.write(
      "train.py: training is not implemented yet; it comes with the "
      "training issue (#5). Nothing was trained.\n")
  return 2


if __name__ == "__main__":
  app.run(main)
