"""The tf.data pipeline: deterministic, resumable, split across processes, every eval example once.

Most tests read the embedded digits (1,437 train / 360 test images, built once into a temporary
data dir); the last ones run the same code on TFDS catalog datasets with mocked examples.
"""

import collections
import os
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds

from inception_jax.data import input_pipeline
from inception_jax.errors import ConfigError

TRAIN, TEST = 1437, 360
NO_AUGMENT = {
  "augment.inception_crop": False,
  "augment.flip": False,
  "augment.random_interpolation": False,
}


@pytest.fixture(scope="session")
def digits(load, tmp_path_factory):
  """(config(overrides) for configs/default.py on a fresh data dir, the digits' builder)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))

  def config(overrides=None):
    return load("default.py", {"data.dir": data_dir, **(overrides or {})})

  return config, input_pipeline.prepare(config().data)


def train_batches(
  builder, config, steps, *, local_batch=128, start_step=0, process_index=0, process_count=1
):
  dataset = input_pipeline.train_dataset(
    builder,
    config,
    local_batch=local_batch,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  return list(tfds.as_numpy(dataset.take(steps)))


def eval_batches(builder, config, *, local_batch, process_index=0, process_count=1):
  dataset, num_batches = input_pipeline.eval_dataset(
    builder,
    config,
    local_batch=local_batch,
    process_index=process_index,
    process_count=process_count,
  )
  return list(tfds.as_numpy(dataset)), num_batches


def examples(batches):
  """How often each (image, label) occurs in the batches' real rows: a digit's identity."""
  return collections.Counter(
    image.tobytes() + bytes([label])
    for batch in batches
    for image, label, mask in zip(
      batch["image"], batch["label"], batch.get("mask", np.ones_like(batch["label"])), strict=True
    )
    if mask
  )


def assert_same_batches(actual, expected):
  assert len(actual) == len(expected)
  for a, b in zip(actual, expected, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_are_uint8_nhwc_with_int32_labels(digits):
  config, builder = digits
  (batch,) = train_batches(builder, config({"image_size": 12}), 1, local_batch=32)
  assert batch["image"].shape == (32, 12, 12, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert set(batch["label"]) <= set(range(10))


def test_the_config_alone_decides_the_batches(digits):
  """Two fresh streams of one config agree bit for bit, cached or not; another seed shuffles and
  augments anew."""
  config, builder = digits
  first = train_batches(builder, config(), 3)
  assert_same_batches(train_batches(builder, config(), 3), first)
  assert_same_batches(train_batches(builder, config({"data.cache": False}), 3), first)
  other = train_batches(builder, config({"seed": 1}), 3)
  assert not np.array_equal(other[0]["label"], first[0]["label"])
  assert not np.array_equal(other[0]["image"], first[0]["image"])


def test_resuming_continues_the_stream_across_epoch_boundaries(digits):
  """start_step=k yields step k onwards of the uninterrupted stream: a resumed run sees what it
  would have seen. Step 11 holds the end of epoch 0 and the start of epoch 1; step 12 starts
  inside epoch 1; steps 22-23 cross into epoch 2."""
  config, builder = digits
  stream = train_batches(builder, config(), 24)
  for start in (3, 11, 12, 22):
    assert_same_batches(
      train_batches(builder, config(), 24 - start, start_step=start), stream[start:]
    )


def test_without_augmentation_a_train_image_is_its_eval_image(digits):
  """With every switch off, training sees each example exactly as eval preprocesses it (full
  image, bilinear resize) in every epoch, and each epoch is a permutation of the split."""
  config, builder = digits
  settings = {"image_size": 12, "data.eval_split": "train", "data.eval_crop_fraction": 1.0}
  evaluated = examples(eval_batches(builder, config(settings), local_batch=500)[0])
  assert len(evaluated) == TRAIN and set(evaluated.values()) == {1}
  seen = examples(train_batches(builder, config({**settings, **NO_AUGMENT}), 23))
  # 23 * 128 = 2944 images: two whole epochs and the first 70 of the third.
  assert seen.keys() == evaluated.keys()
  assert sum(seen.values()) == 23 * 128 and set(seen.values()) == {2, 3}


@pytest.mark.parametrize(
  "switch, most_alike",
  [("inception_crop", 0.2), ("flip", 0.6), ("random_interpolation", 0.5)],
)
def test_each_augmentation_switch_changes_the_images(digits, switch, most_alike):
  """Turned on alone, each distortion moves a share of the images away from the eval version
  (a flip leaves about half unflipped; a random interpolation is bilinear a quarter of the time)."""
  config, builder = digits
  settings = {"image_size": 12, "data.eval_split": "train", "data.eval_crop_fraction": 1.0}
  evaluated = examples(eval_batches(builder, config(settings), local_batch=500)[0])
  seen = examples(
    train_batches(builder, config({**settings, **NO_AUGMENT, f"augment.{switch}": True}), 3)
  )
  alike = sum(count for key, count in seen.items() if key in evaluated)
  assert alike < most_alike * 3 * 128


def test_an_example_is_augmented_differently_in_each_epoch(digits):
  """The augmentation seed is the example's position in the stream, not the example."""
  config, builder = digits
  seen = examples(
    train_batches(builder, config({**NO_AUGMENT, "augment.inception_crop": True}), 22)
  )
  assert len(seen) > 1.5 * TRAIN  # 2,816 images of 1,437 digits, rarely the same crop twice


def test_processes_read_disjoint_shares_of_the_train_split(digits):
  """process_count=2: each process's epoch is its own half (718 examples, the 1,437th dropped)."""
  config, builder = digits
  unaugmented = config(NO_AUGMENT)
  shares = []
  for index in range(2):
    batches = train_batches(
      builder, unaugmented, 11, local_batch=64, process_index=index, process_count=2
    )
    assert all(batch["image"].shape == (64, 8, 8, 3) for batch in batches)
    shares.append(examples(batches))
    assert len(shares[-1]) == 11 * 64  # one epoch of 718 holds 11 batches, no repeats
  assert not shares[0].keys() & shares[1].keys()


@pytest.mark.parametrize("process_count, local_batch", [(1, 100), (2, 128), (2, 100), (7, 16)])
def test_eval_sees_every_example_once_in_equal_batch_counts(digits, process_count, local_batch):
  """Padded rows carry mask 0 and zeros; every process yields the same number of full-size
  batches (pmapped eval steps must stay in lockstep) even when the shares differ (7 x 51.4)."""
  config, builder = digits
  everything, _ = eval_batches(builder, config(), local_batch=TEST)
  together = collections.Counter()
  counts = set()
  for index in range(process_count):
    batches, num_batches = eval_batches(
      builder, config(), local_batch=local_batch, process_index=index, process_count=process_count
    )
    assert len(batches) == num_batches
    counts.add(num_batches)
    for batch in batches:
      assert batch["image"].shape == (local_batch, 1, 8, 8, 3)  # one view of each image
      assert batch["mask"].shape == (local_batch,)
      padding = batch["mask"] == 0
      assert not batch["image"][padding].any() and not batch["label"][padding].any()
    assert sum(batch["mask"].sum() for batch in batches) in (
      TEST // process_count,
      -(-TEST // process_count),
    )
    together.update(examples(batches))
  assert len(counts) == 1
  assert together == examples(everything) and len(together) == TEST


def test_unknown_dataset_and_split_are_config_errors(digits):
  config, builder = digits
  with pytest.raises(ConfigError, match="did you mean 'sklearn_digits'"):
    input_pipeline.prepare(config({"data.name": "sklearn_digit"}).data)
  with pytest.raises(ConfigError, match="no split 'nonexistent_split'.*splits are: train, test"):
    input_pipeline.num_examples(builder, "nonexistent_split")
  with pytest.raises(ConfigError, match="fewer than one batch"):
    train_batches(builder, config(), 1, local_batch=1000, process_count=2)


def test_a_dataset_no_download_host_of_which_resolves_is_refused_at_once(
  load, tmp_path, monkeypatch
):
  """Without network TFDS retries each download for minutes: when none of the dataset's download
  hosts resolves, the message comes at once; behind a proxy, which resolves for us, TFDS tries."""

  def no_name_resolves(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

  tries = []

  def download_and_prepare(builder, **kwargs):
    tries.append(builder.name)
    raise RuntimeError("the network is down")

  monkeypatch.setattr(socket, "getaddrinfo", no_name_resolves)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
  for variable in [name for name in os.environ if name.lower().endswith("_proxy")]:
    monkeypatch.delenv(variable)
  data = load("cifar10.py", {"data.dir": str(tmp_path)}).data
  with pytest.raises(
    ConfigError, match=r"host resolves \(www.cs.toronto.edu: Name or serv.*tfds build"
  ):
    input_pipeline.prepare(data)
  assert not tries
  monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
  with pytest.raises(
    ConfigError, match=r"could not be downloaded \(RuntimeError: the network is down"
  ):
    input_pipeline.prepare(data)
  assert tries == ["cifar10"]


MOCKED = 12  # examples in every split of a mocked dataset


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory):
  """A data dir with metadata (features, splits of MOCKED examples) for two catalog datasets.

  tfds.testing.mock_data needs a dataset_info.json to know the splits, and TFDS ships none;
  the builders' own code describes the features offline, so the metadata is written from it.
  """
  data_dir = tmp_path_factory.mktemp("catalog")
  for name, splits in (("cifar10", ("train", "test")), ("imagenette", ("train", "validation"))):
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(
      tfds.core.SplitDict(
        [
          tfds.core.SplitInfo(
            name=split,
            shard_lengths=[MOCKED],
            num_bytes=0,
            filename_template=tfds.core.ShardedFileTemplate(
              data_dir=builder.data_path, dataset_name=name, split=split, filetype_suffix="tfrecord"
            ),
          )
          for split in splits
        ]
      )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
  return str(data_dir)


@pytest.mark.parametrize("name, eval_split", [("cifar10", "test"), ("imagenette", "validation")])
def test_any_tfds_image_dataset_flows_through(load, catalog_dir, name, eval_split):
  """PNGs of one size (cifar10) and JPEGs of random sizes (imagenette, decoded window only) both
  come out as fixed-size uint8 batches; the mock gives every split the same random examples."""
  config = load(
    "default.py",
    {"data.name": name, "data.eval_split": eval_split, "data.dir": catalog_dir, "image_size": 16},
  )
  with tfds.testing.mock_data(
    num_examples=MOCKED, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=catalog_dir
  ):
    builder = input_pipeline.prepare(config.data)
    assert input_pipeline.num_classes(builder) == 10
    first = train_batches(builder, config, 4, local_batch=5)  # 20 images: into epoch 1
    assert_same_batches(train_batches(builder, config, 2, local_batch=5, start_step=2), first[2:])
    assert first[0]["image"].shape == (5, 16, 16, 3) and first[0]["image"].dtype == np.uint8
    batches, num_batches = eval_batches(builder, config, local_batch=5)
  assert num_batches == 3 and sum(batch["mask"].sum() for batch in batches) == MOCKED


def test_generated_jpegs_are_an_imagenet_shaped_dataset(load, tmp_path):
  """synthetic_jpegs: photo-sized JPEGs, 1,000 classes, train and validation splits, built
  offline and read like any TFDS dataset (the GPU run's data)."""
  config = load(
    "imagenet.py",
    {
      "data.name": "synthetic_jpegs/tiny",
      "data.dir": str(tmp_path),
      "image_size": 24,
      "model.dtype": "float32",
    },
  )
  builder = input_pipeline.prepare(config.data)
  assert input_pipeline.num_classes(builder) == 1000
  assert input_pipeline.num_examples(builder, "train") == 16
  raw = next(iter(tfds.as_numpy(builder.as_dataset(split="validation[:1]"))))["image"]
  assert raw.shape[0] in range(300, 500) and raw.shape[1] in range(375, 640)
  (batch,) = train_batches(builder, config, 1, local_batch=8)
  assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].std() > 10
  batches, num_batches = eval_batches(builder, config, local_batch=4)
  assert num_batches == 2 and sum(batch["mask"].sum() for batch in batches) == 8
