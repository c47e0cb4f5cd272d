"""Schema declarations reject what models could not use."""

import pytest

from data import schema as s


def test_a_valid_schema_lists_its_names():
  schema = s.Schema(
      categorical=[s.CategoricalFeature("user", 10),
                   s.CategoricalFeature("genres", 19, max_len=6)],
      dense=[s.DenseFeature("age", 1, transform="log1p")],
      labels=[s.Label("rating", "regression"), s.Label("liked", "binary")])
  assert schema.feature_names == ("user", "genres", "age")
  assert schema.label_names == ("rating", "liked")
  assert schema.categorical[1].multivalent
  assert schema.select_labels(["liked"]).label_names == ("liked",)
  with pytest.raises(KeyError, match="'clicked'.*rating"):
    schema.select_labels(["clicked"])


@pytest.mark.parametrize("make,message", [
    (lambda: s.CategoricalFeature("x", 0), "vocab_size must be >= 1"),
    (lambda: s.CategoricalFeature("x", 5, max_len=0), "max_len"),
    (lambda: s.DenseFeature("x", transform="sqrt"), "transform"),
    (lambda: s.DenseFeature("x", std=0.0), "std must be > 0"),
    (lambda: s.Label("y", "ordinal"), "kind must be one of"),
    (lambda: s.Label("y", "binary", "log1p"), "takes no transform"),
    (lambda: s.Label("day", "binary"), "Invalid feature or label name"),
    (lambda: s.Schema(labels=[]), "at least one label"),
    (lambda: s.Schema(categorical=[s.CategoricalFeature("y", 3)],
                      labels=[s.Label("y", "binary")]), "repeated: \\['y'\\]"),
])
def test_bad_declarations_raise(make, message):
  with pytest.raises(ValueError, match=message):
    make()
