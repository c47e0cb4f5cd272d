"""What a dataset holds: its features, its labels, and the day of each example.

Models build their input layer from a Schema and the trainer builds one head
per label, so a dataset is usable as soon as it declares one. Every batch is
a flat dict {name: tensor} holding each feature, each label and `day`:

  categorical id   int64 [batch]            ids in [0, vocab_size)
  multi-valued id  int64 [batch, max_len]   padded with -1
  dense            float32 [batch, dim]     normalised (see DenseFeature)
  binary label     float32 [batch]          0 or 1
  regression label float32 [batch]          transformed (see Label)
  day              int64 [batch]            0 = the dataset's first day
"""

import dataclasses
from typing import Optional, Sequence, Tuple

DAY = "day"
PAD_ID = -1
LABEL_KINDS = ("binary", "regression")
TRANSFORMS = ("none", "log1p")


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  """Sparse ids, embedded by the model.

  Attributes:
    name: key in the batch.
    vocab_size: ids are in [0, vocab_size); raw values are mapped there by the
      source (a vocabulary, or hashing into vocab_size buckets).
    max_len: 1 for one id per example; > 1 for a multi-valued feature
      (e.g. genres), padded with PAD_ID and pooled by the model.
  """
  name: str
  vocab_size: int
  max_len: int = 1

  def __post_init__(self):
    _check_name(self.name)
    if self.vocab_size < 1:
      raise ValueError(f"Feature {self.name!r}: vocab_size must be >= 1, got "
                       f"{self.vocab_size}.")
    if self.max_len < 1:
      raise ValueError(f"Feature {self.name!r}: max_len must be >= 1, got "
                       f"{self.max_len}.")

  @property
  def multivalent(self) -> bool:
    return self.max_len > 1


@dataclasses.dataclass(frozen=True)
class DenseFeature:
  """Real-valued features: x -> (transform(x) - mean) / std, per column.

  Attributes:
    name: key in the batch.
    dim: number of columns.
    transform: "none" or "log1p" (for heavy-tailed counts and durations;
      sign(x) * log1p(|x|)).
    mean, std: normalisation applied by the source after the transform.
  """
  name: str
  dim: int = 1
  transform: str = "none"
  mean: float = 0.0
  std: float = 1.0

  def __post_init__(self):
    _check_name(self.name)
    if self.dim < 1:
      raise ValueError(f"Feature {self.name!r}: dim must be >= 1.")
    _check_transform(self.name, self.transform)
    if not self.std > 0:
      raise ValueError(f"Feature {self.name!r}: std must be > 0.")


@dataclasses.dataclass(frozen=True)
class Label:
  """One task's target.

  Attributes:
    name: key in the batch, and the task's name.
    kind: "binary" (sigmoid cross-entropy, AUC) or "regression" (squared
      error, RMSE).
    transform: applied to a regression target by the source ("log1p" for
      watch time); binary labels take "none".
  """
  name: str
  kind: str
  transform: str = "none"

  def __post_init__(self):
    _check_name(self.name)
    if self.kind not in LABEL_KINDS:
      raise ValueError(f"Label {self.name!r}: kind must be one of "
                       f"{LABEL_KINDS}, got {self.kind!r}.")
    _check_transform(self.name, self.transform)
    if self.kind == "binary" and self.transform != "none":
      raise ValueError(f"Label {self.name!r}: a binary label takes no "
                       "transform.")


@dataclasses.dataclass(frozen=True)
class Schema:
  """The features and labels of a dataset."""
  categorical: Tuple[CategoricalFeature, ...] = ()
  dense: Tuple[DenseFeature, ...] = ()
  labels: Tuple[Label, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "categorical", tuple(self.categorical))
    object.__setattr__(self, "dense", tuple(self.dense))
    object.__setattr__(self, "labels", tuple(self.labels))
    names = [x.name for x in self.categorical + self.dense + self.labels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f"Schema names must be unique; repeated: {duplicates}.")
    if not self.labels:
      raise ValueError("A schema needs at least one label.")

  @property
  def feature_names(self) -> Tuple[str, ...]:
    return tuple(f.name for f in self.categorical + self.dense)

  @property
  def label_names(self) -> Tuple[str, ...]:
    return tuple(label.name for label in self.labels)

  def label(self, name: str) -> Label:
    for label in self.labels:
      if label.name == name:
        return label
    raise KeyError(f"No label {name!r} in the schema; it has "
                   f"{list(self.label_names)}.")

  def select_labels(self, names: Optional[Sequence[str]]) -> "Schema":
    """The same schema with only the named labels (None keeps all)."""
    if names is None:
      return self
    return dataclasses.replace(self,
                               labels=tuple(self.label(n) for n in names))

  def without_features(self, names: Sequence[str]) -> "Schema":
    """The same schema without the named features (labels kept).

    Raises:
      ValueError: a name that is not a feature of the schema (the known
        ones are listed).
    """
    unknown = [n for n in names if n not in self.feature_names]
    if unknown:
      raise ValueError(f"Feature(s) {unknown} are not in the schema; it has "
                       f"{list(self.feature_names)}.")
    drop = set(names)
    return dataclasses.replace(
        self, categorical=tuple(f for f in self.categorical
                                if f.name not in drop),
        dense=tuple(f for f in self.dense if f.name not in drop))


def _check_name(name):
  if not name or name == DAY:
    raise ValueError(f"Invalid feature or label name {name!r}.")


def _check_transform(name, transform):
  if transform not in TRANSFORMS:
    raise ValueError(f"{name!r}: transform must be one of {TRANSFORMS}, got "
                     f"{transform!r}.")
