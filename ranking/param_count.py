"""Prints a model's non-embedding parameter count (paper Table 1).

  python -m ranking.param_count --gin_file=configs/models/large.gin

Builds the model for the default synthetic schema (or the dataset the gin
files configure with SyntheticStream bindings) and prints the count per
part: cross stack, bottom, heads.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

from data.synthetic import SyntheticStream
from ranking import launch
from ranking.model import build_model

FLAGS = flags.FLAGS


def count_parameters(model) -> dict:
  """Non-embedding parameters per part of a built model, and the total."""
  parts = {"cross": model.cross, "bottom": model.bottom}
  counts = {name: sum(int(tf.size(v)) for v in layer.trainable_variables)
            for name, layer in parts.items() if layer is not None}
  counts["heads"] = sum(int(tf.size(v)) for head in model.heads.values()
                        for v in head.trainable_variables)
  counts["total"] = model.non_embedding_parameters()
  return counts


def main(argv):
  del argv
  launch.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  stream = SyntheticStream(num_days=2, examples_per_day=8)
  model = build_model(stream.schema)
  model(stream.rows(tf.range(2)))
  print(f"input width {model.feature_input.width}")
  for part, count in count_parameters(model).items():
    print(f"{part:>7s}: {count:>12,d} ({count / 1e6:.2f}M)")


if __name__ == "__main__":
  flags.DEFINE_multi_string("gin_file", [], "Gin files, applied in order.")
  flags.DEFINE_multi_string("gin_param", [], "Gin bindings, applied last.")
  app.run(main)
