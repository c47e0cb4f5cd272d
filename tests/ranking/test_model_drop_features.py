"""build_model.drop_features: the model's input without some features (the
"fewer input features" ablation of paper Table 3), computed by hand."""

import numpy as np
import pytest
import tensorflow as tf

from data import schema as s
from data.synthetic import SyntheticStream
from ranking import integrity
from ranking.model import build_model
from tests.ranking.test_model import TINY
from tests.ranking.test_model import _tiny_batch

def test_a_dropped_feature_is_left_out_of_the_input():
  model = build_model(TINY, embedding_dim=2, bottom_widths=(2,),
                      drop_features=["tags"],
                      kernel_initializer=tf.keras.initializers.Constant(0.5))
  batch = _tiny_batch()  # still holds `tags`: the model ignores it
  model(batch)
  assert model.schema.feature_names == ("user", "age")
  assert sorted(model.feature_input.embeddings) == ["user"]
  model.feature_input.embeddings["user"].set_weights(
      [np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])])
  # Width 2 (user) + 1 (age) = 3, not 5.
  assert model.feature_input(batch).shape == (2, 3)
  out = {k: v.numpy() for k, v in model(batch).items()}
  # Row 0: x = [user 0: 1, 0 | age 1]; sum 2: bottom 2 units of
  #   relu(0.5 * 2) = 1; head 0.5 * (1 + 1) = 1.
  # Row 1: x = [user 2: 0, 2 | age -2]; sum 0 -> 0.
  np.testing.assert_allclose(out["click"], [1.0, 0.0])
  np.testing.assert_allclose(out["watch"], [1.0, 0.0])
  # Dense parameters: bottom 3 x 2 + 2, two heads 2 + 1 each = 14.
  assert model.non_embedding_parameters() == 14


@pytest.mark.parametrize("dropped, narrower", [
    # Embeddings 8 wide; the dense groups are 24 columns each.
    ([f"cat_{i:02d}" for i in range(11, 22)], 11 * 8),
    (["item_tags", "user_id"], 2 * 8),          # multi-valued too
    (["context_dense"], 24),
    (["cat_00", "item_dense", "user_dense"], 8 + 24 + 24),
])
def test_the_input_narrows_by_the_dropped_widths(dropped, narrower):
  stream = SyntheticStream(num_days=2, examples_per_day=4)
  batch = stream.rows(tf.range(3))
  # 22 cat_ features + user_id + item_id + item_tags embedded 8 wide, and
  # user/item/context dense 24 each: 25 x 8 + 72 = 272.
  full = build_model(stream.schema, embedding_dim=8, bottom_widths=(4,),
                     cross_layers=1)
  model = build_model(stream.schema, embedding_dim=8, bottom_widths=(4,),
                      cross_layers=1, drop_features=dropped)
  assert full.feature_input(batch).shape == (3, 272)
  assert model.feature_input(batch).shape == (3, 272 - narrower)
  assert model.feature_input.width == 272 - narrower
  model(batch)
  full(batch)
  w = 272 - narrower
  # Full-rank cross layer w x w + w, its LayerNorm 2w, bottom w x 4 + 4,
  # six heads 4 + 1.
  assert model.non_embedding_parameters() == (w * w + w) + 2 * w + (
      w * 4 + 4) + 6 * 5
  kept = {v.name.split("/")[-2] for v in model.embedding_variables}
  assert kept == {f"embedding_{f.name}" for f in stream.schema.categorical
                  if f.name not in dropped}


@pytest.mark.parametrize("dropped, message", [
    (["cat_99", "user"], r"\['cat_99'\] are not in the schema; it has "
                            r"\['user', 'tags', 'age'\]"),
    (["user", "tags", "age"], "leaves the model no input feature"),
    ("tags", "a list of feature names, not the string 'tags'"),
])
def test_bad_drops_are_named(dropped, message):
  with pytest.raises(ValueError, match=message) as raised:
    build_model(TINY, embedding_dim=2, drop_features=dropped)
  assert "build_model.drop_features" in str(raised.value)


def test_a_model_dir_recorded_before_drop_features_resumes():
  # Runs recorded before the option have no build_model.drop_features line;
  # today's operative config writes the default (). A run that drops
  # features is another training, and is refused.
  recorded = "build_model.cross_layers = 4\n"
  current = recorded + "build_model.drop_features = ()\n"
  assert integrity.config_differences(recorded, current) == []
  dropping = recorded + "build_model.drop_features = ['cat_11']\n"
  assert integrity.config_differences(recorded, dropping) == [
      "build_model.drop_features: () -> ['cat_11']"]
