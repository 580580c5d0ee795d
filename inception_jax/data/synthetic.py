"""Generated photo-like JPEGs as an ImageNet-shaped TFDS dataset: the real input pipeline at full
size without a download.

Each image is low-frequency noise upsampled to a random ImageNet-like size (300-500 x 375-640)
plus grain, encoded at quality 90, so it decodes and crops like a photo; labels are uniform over
1,000 classes. What it measures is speed (the tf.data pipeline, the train step, checkpoints); there
is nothing to learn. Importing this module registers the builder:

  inception-jax train --config configs/imagenet.py:torchvision \
      --config.data.name=synthetic_jpegs/small --workdir runs/synthetic

The first use writes the TFRecords into the data dir (`small`: ~25 s on one core).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

NUM_CLASSES = 1000


def photo_like_jpegs(count: int, rng: np.random.Generator) -> list[bytes]:
  """`count` JPEGs of random ImageNet-like sizes: smooth random colour fields with grain."""
  images = []
  for _ in range(count):
    height, width = int(rng.integers(300, 500)), int(rng.integers(375, 640))
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], (height, width), method="bicubic")[0]
    image = tf.cast(
      tf.clip_by_value(image + rng.normal(0, 8, (height, width, 3)), 0, 255), tf.uint8
    )
    images.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return images


@dataclasses.dataclass
class SyntheticJpegsConfig(tfds.core.BuilderConfig):
  train_size: int = 0
  validation_size: int = 0


class SyntheticJpegs(tfds.core.GeneratorBasedBuilder):
  """Generated JPEGs with ImageNet's image sizes and 1,000 classes, in two sizes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    SyntheticJpegsConfig(
      name="small", description="1,024 train, 256 validation.", train_size=1024, validation_size=256
    ),
    SyntheticJpegsConfig(
      name="tiny",
      description="16 train, 8 validation: for tests.",
      train_size=16,
      validation_size=8,
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    return {
      "train": self._generate_examples(config.train_size, seed=0),
      "validation": self._generate_examples(config.validation_size, seed=1),
    }

  def _generate_examples(self, count: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, count)
    for index, jpeg in enumerate(photo_like_jpegs(count, rng)):
      yield index, {"image": jpeg, "label": int(labels[index])}
