"""Preparing a local-files TFDS builder, and reading its split back fast."""

import contextlib
import os
import tempfile
from typing import Dict, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import schema as schema_lib


def read_prepared(builder: tfds.core.DatasetBuilder, split: str = "train"
                  ) -> Dict[str, np.ndarray]:
  """All examples of a prepared split as numpy arrays, in stored order.

  Parses the split's TFRecord shards in large batches with the builder's
  own serialized feature spec, which is much faster than
  `builder.as_dataset`'s example-by-example decoding (100K MovieLens
  ratings: under 1 s instead of over 10 s); it applies to features stored as
  they decode (numbers and strings of fixed shape, integer sequences; e.g.
  np.int64, Text, ClassLabel, Sequence(ClassLabel)).

  Args:
    builder: a prepared builder with such features only.
    split: the split to read.

  Returns:
    {feature: array}: fixed-shape features as [n, *shape] arrays; sequences
    as [n, max_len] int64 arrays padded with PAD_ID (max_len >= 1).
  """
  spec = {}
  for key, info in builder.info.features.get_serialized_info().items():
    if None not in info.shape:
      spec[key] = tf.io.FixedLenFeature(info.shape, info.tf_dtype)
    elif info.shape == (None,) and info.tf_dtype == tf.int64:
      spec[key] = tf.io.RaggedFeature(tf.int64)
    else:
      raise ValueError(f"{builder.name}: feature {key!r} ({info}) cannot be "
                       "read in batches.")
  files = [os.fspath(p) for p in builder.info.splits[split].filepaths]
  parts = []
  for serialized in tf.data.TFRecordDataset(files).batch(1 << 18):
    # Shards are read in order, so the files' order is kept.
    parsed = tf.io.parse_example(serialized, spec)
    parts.append({k: v.to_tensor(schema_lib.PAD_ID).numpy()
                  if isinstance(v, tf.RaggedTensor) else v.numpy()
                  for k, v in parsed.items()})
  if not parts:
    raise ValueError(f"{builder.name}: split {split!r} has no examples.")
  arrays = {}
  for key in spec:
    if isinstance(spec[key], tf.io.RaggedFeature):
      width = max([p[key].shape[1] for p in parts] + [1])
      arrays[key] = np.concatenate([
          np.pad(p[key], ((0, 0), (0, width - p[key].shape[1])),
                 constant_values=schema_lib.PAD_ID) for p in parts])
    else:
      arrays[key] = np.concatenate([p[key] for p in parts])
  expected = builder.info.splits[split].num_examples
  read = len(next(iter(arrays.values())))
  if read != expected:
    raise ValueError(f"{builder.name}: read {read} examples of split "
                     f"{split!r}, which has {expected}.")
  return arrays


@contextlib.contextmanager
def prepared_builder(builder_cls, config: str, manual_dir: str,
                     data_dir: Optional[str], what: str
                     ) -> Iterator[tfds.core.DatasetBuilder]:
  """A builder prepared from files in `manual_dir` (nothing is downloaded).

  Args:
    builder_cls: a GeneratorBasedBuilder reading `dl_manager.manual_dir`.
    config: the name of one of its BUILDER_CONFIGS.
    manual_dir: the folder of raw files.
    data_dir: where TFDS writes the prepared dataset; None: a temporary
      folder removed when the context ends (read what you need inside it).
    what: the dataset's name in messages.

  Raises:
    ValueError: an unknown config.
    FileNotFoundError: manual_dir is not a folder.
  """
  configs = [c.name for c in builder_cls.BUILDER_CONFIGS]
  if config not in configs:
    raise ValueError(f"Unknown {what} release {config!r}; expected one of "
                     f"{configs}.")
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"{what} {config}: manual_dir {manual_dir} is not "
                            "a directory.")
  with contextlib.ExitStack() as stack:
    if data_dir is None:
      data_dir = stack.enter_context(tempfile.TemporaryDirectory(
          prefix=f"{builder_cls.name}_"))
    builder = builder_cls(config=config, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    yield builder
