"""scikit-learn's handwritten digits as a TFDS dataset: real data that needs no network.

1,797 8x8 grayscale images of the digits 0-9 (UCI's optical recognition set, shipped inside
scikit-learn). A seeded permutation holds out 360 images (20%) as `test`; the other 1,437 are
`train`. Pixel values 0..16 are scaled to 0..255. Importing this module registers the builder,
so `tfds.builder("sklearn_digits", data_dir=...)` finds it; the first use writes the TFRecords
into the data dir, which takes a second.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

TEST_SIZE = 360
SPLIT_SEED = 0


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """The 8x8 handwritten digits from scikit-learn, split into train and test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: 1,437 train and 360 test images."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(8, 8, 1)),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    from sklearn.datasets import load_digits  # ships its data; no download

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return {
      "train": self._generate_examples(images, digits.target, train),
      "test": self._generate_examples(images, digits.target, test),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
    for index in indices:
      yield int(index), {"image": images[index], "label": int(labels[index])}
