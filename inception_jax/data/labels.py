"""Class names for predictions, from the dataset's TFDS metadata: no data needs to be prepared."""

from __future__ import annotations

import ml_collections
import tensorflow_datasets as tfds

from inception_jax.data.input_pipeline import supervised_keys
from inception_jax.errors import ConfigError, did_you_mean

IMAGENET_FIRST_WNID = "n01440764"  # tench: class 0 of ILSVRC 2012 in the standard (sorted) order


def _imagenet_names() -> list[str]:
  """ILSVRC 2012's 1,000 readable names in class order, as tensorflow-datasets ships them (its
  imagenet2012 metadata itself names classes by WordNet id only)."""
  from tensorflow_datasets.datasets.siscore import labels  # noqa: PLC0415 (only for ImageNet)

  return list(labels.IMAGENET_LABELS_LIST)


def class_names(data: ml_collections.ConfigDict) -> list[str]:
  """The names of `data.name`'s classes in label order ("0".."9" for the digits)."""
  try:
    builder = tfds.builder(data.name, data_dir=data.dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
      f"data.name={data.name!r} is not a TFDS dataset"
      f"{did_you_mean(data.name, tfds.list_builders())}, so its class names are "
      f"unknown; set --config.data.name to the dataset the run was trained on."
    ) from None
  names = builder.info.features[supervised_keys(builder)[1]].names
  if len(names) == 1000 and names[0] == IMAGENET_FIRST_WNID:
    return _imagenet_names()
  return list(names)
