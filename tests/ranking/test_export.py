"""Export round trip: the reloaded SavedModel predicts exactly the same."""

import os

import numpy as np
import tensorflow as tf

from data.synthetic import SyntheticStream
from ranking.export import export_saved_model, serving_signature
from ranking.model import build_model


def test_reloaded_model_gives_identical_predictions(tmp_path):
  stream = SyntheticStream(num_days=2, examples_per_day=64)
  batch = stream.rows(tf.range(32))
  model = build_model(stream.schema, embedding_dim=4, bottom_widths=(16, 8),
                      cross_layers=1, bottom="mmoe", num_experts=2)
  features = {k: batch[k] for k in stream.schema.feature_names}
  before = serving_signature(model)(features)
  path = export_saved_model(model, str(tmp_path / "ranker"))
  assert not os.path.exists(path + ".tmp-export")
  serve = tf.saved_model.load(path).signatures["serving_default"]
  after = serve(**features)
  assert set(after) == set(stream.schema.label_names)
  for task in before:
    np.testing.assert_array_equal(after[task].numpy(), before[task].numpy())
  # Binary tasks are probabilities, regression tasks values.
  assert np.all((after["click"].numpy() > 0) & (after["click"].numpy() < 1))
  eager = model.predict_tasks(batch)
  np.testing.assert_allclose(eager["rating"], after["rating"], rtol=1e-5,
                             atol=1e-6)
