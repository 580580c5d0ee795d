"""The embedded digits dataset: built locally with no network, real images, fixed split."""

import numpy as np
import tensorflow_datasets as tfds

from inception_jax.data import digits  # noqa: F401  (registers the builder)


def test_digits_builds_into_the_data_dir_without_network(tmp_path):
  builder = tfds.builder("sklearn_digits", data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.splits["test"].num_examples == 360
  test = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
  assert test["image"].shape == (360, 8, 8, 1) and test["image"].dtype == np.uint8
  assert set(np.unique(test["label"])) == set(range(10))
  assert test["image"].max() == 255 and test["image"].min() == 0
  # The same split on every build: a second data dir gets the same test images.
  again = tfds.builder("sklearn_digits", data_dir=str(tmp_path / "again"))
  again.download_and_prepare()
  np.testing.assert_array_equal(
    np.sort(tfds.as_numpy(again.as_dataset(split="test", batch_size=-1))["label"]),
    np.sort(test["label"]),
  )
