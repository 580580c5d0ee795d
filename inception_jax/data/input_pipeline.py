"""TFDS datasets as tf.data streams of uint8 NHWC batches for one process.

The training stream is a pure function of (config, step): epoch `e` is the split shuffled with a
seed made from the config seed and `e`, epochs follow one another without a gap, and example `i`
of the global stream is augmented with the seed (config seed, i). Resuming at step `s` therefore
starts the stream at example `s * batch` with the same shuffles and the same augmentations, which
is what makes a resumed run continue exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import signal
import socket
import urllib.parse
import urllib.request
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from inception_jax.data import (
  digits,  # noqa: F401  (registers sklearn_digits with TFDS)
  preprocess,
  synthetic,  # noqa: F401  (registers synthetic_jpegs with TFDS)
)
from inception_jax.data.crops import CROPS, multi_crop
from inception_jax.errors import ConfigError, StoppedEarly, did_you_mean

# Keeps shuffle seeds of different epochs and config seeds apart: seed * EPOCH_STRIDE + epoch.
EPOCH_STRIDE = 1_000_003
MANUAL_HINT = {
  "imagenet2012": "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
  "https://image-net.org (an account is needed) into that folder",
}


def _without_autotune_model(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Turns off tf.data's autotuning model (AUTOTUNE maps run on one thread per core, prefetch
  buffers still grow): deleting an iterator waits for the model's optimisation thread, whose
  wait is not always cut short: it held `train` 21-32 s after its last evaluation in 5 of 8 runs
  of configs/default.py (2-core AMD EPYC, TF 2.21); without it, 2 s in 3 of 3, training as fast."""
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def _prepare_elsewhere(name: str) -> str:
  return (
    f"Without network here, prepare it on a machine with network access (tfds build {name} "
    f"--data_dir=DIR) and set --config.data.dir=DIR."
  )


def _prepare_error(
  name: str, builder: tfds.core.DatasetBuilder, manual_dir: str, error: Exception
) -> ConfigError:
  """One message for a dataset that could not be built: what is missing and how to provide it."""
  text = str(error)
  if "manual" in text.lower():
    folder = manual_dir or str(builder.data_path.parent.parent / "downloads" / "manual")
    how = MANUAL_HINT.get(name, "put the files the dataset's TFDS page lists in that folder")
    return ConfigError(
      f"dataset {name!r} needs files you download yourself, and {folder} does not hold them: "
      f"{how}, or point --config.data.manual_dir at the folder that does. "
      f"(TFDS said: {text.splitlines()[0]})"
    )
  return ConfigError(
    f"dataset {name!r} is not prepared in {builder.data_dir!r} and could not be downloaded "
    f"({type(error).__name__}: {text.splitlines()[0] if text else ''}). "
    f"{_prepare_elsewhere(name)}"
  )


def _offline_error(builder: tfds.core.DatasetBuilder) -> ConnectionError | None:
  """Why the dataset cannot be downloaded from here, found in a moment: none of the hosts of its
  registered download URLs resolves, and no proxy would resolve them instead. TFDS would retry
  each download 10 times, its waits doubling to 102 s: 3 min 24 s before the same failure."""
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS or not builder.url_infos or urllib.request.getproxies():
    return None
  failures = []
  for host in sorted({urllib.parse.urlsplit(url).hostname or "" for url in builder.url_infos}):
    try:
      socket.getaddrinfo(host, None)
      return None  # one host that resolves: let TFDS try
    except OSError as error:
      failures.append(f"{host}: {error.strerror or error}")
  return ConnectionError(f"no download host resolves ({'; '.join(failures)}): no network here?")


def prepare(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The dataset's builder, downloaded and prepared into `data.dir` if it is not there yet.
  Ctrl-C meanwhile raises StoppedEarly."""
  try:
    builder = tfds.builder(data.name, data_dir=data.dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    suggestion = did_you_mean(data.name, tfds.list_builders())
    raise ConfigError(
      f"data.name={data.name!r} is not a TFDS dataset{suggestion}; "
      f"use any image classification dataset from https://www.tensorflow.org/datasets/catalog "
      f"(e.g. cifar10, imagenet2012, imagenette), the embedded sklearn_digits or the generated "
      f"synthetic_jpegs/small."
    ) from None
  if not builder.is_prepared():
    offline = _offline_error(builder)
    if offline:
      raise _prepare_error(data.name, builder, data.manual_dir, offline)
    config = tfds.download.DownloadConfig(manual_dir=data.manual_dir or None)
    try:
      builder.download_and_prepare(download_config=config)
    except KeyboardInterrupt:
      raise StoppedEarly(
        f"stopped while TFDS prepared dataset {data.name!r} in {builder.data_dir!r}; nothing "
        f"of the run was written, and the same command prepares it again. "
        f"{_prepare_elsewhere(data.name)}",
        signal.SIGINT,
      ) from None
    except Exception as error:  # TFDS raises anything from AssertionError to network errors
      # Another process preparing the same folder (an array task) may have finished first.
      builder = tfds.builder(data.name, data_dir=data.dir or None)
      if not builder.is_prepared():
        raise _prepare_error(data.name, builder, data.manual_dir, error) from error
  supervised_keys(builder)
  return builder


def supervised_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  features = builder.info.features
  if (
    not keys
    or len(keys) != 2
    or not isinstance(features[keys[0]], tfds.features.Image)
    or not isinstance(features[keys[1]], tfds.features.ClassLabel)
  ):
    raise ConfigError(
      f"dataset {builder.name!r} is not an image classification dataset "
      f"(its supervised keys are {keys}); choose one with (image, label) pairs."
    )
  return keys


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
  return builder.info.features[supervised_keys(builder)[1]].num_classes


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Examples in a split (any TFDS split string, e.g. 'train[:90%]'); a bad split is a
  ConfigError."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as error:
    raise ConfigError(
      f"dataset {builder.name!r} has no split {split!r} ({error}); its splits "
      f"are: {', '.join(builder.info.splits)}."
    ) from None


def _examples(builder: tfds.core.DatasetBuilder, split: str, seed: int) -> tf.data.Dataset:
  """(encoded image, label) pairs in a fixed order: the files shuffled once by `seed`."""
  image_key, label_key = supervised_keys(builder)
  read_config = tfds.ReadConfig(
    shuffle_seed=seed, shuffle_reshuffle_each_iteration=False, try_autocache=False
  )
  dataset = builder.as_dataset(
    split=split,
    shuffle_files=True,
    read_config=read_config,
    decoders={image_key: tfds.decode.SkipDecoding()},
  )
  return dataset.map(lambda example: (example[image_key], tf.cast(example[label_key], tf.int32)))


def _is_jpeg(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.info.features[supervised_keys(builder)[0]].encoding_format == "jpeg"


def train_dataset(
  builder: tfds.core.DatasetBuilder,
  config: ml_collections.ConfigDict,
  *,
  local_batch: int,
  start_step: int,
  process_index: int,
  process_count: int,
) -> tf.data.Dataset:
  """This process's endless stream of training batches from `start_step` on.

  Yields {"image": uint8 [local_batch, size, size, 3], "label": int32 [local_batch]}.
  """
  data = config.data
  split = tfds.split_for_jax_process(
    data.train_split, process_index=process_index, process_count=process_count, drop_remainder=True
  )
  size = num_examples(builder, split)
  if size < local_batch:
    raise ConfigError(
      f"{data.train_split!r} has {size} examples per process, fewer than one "
      f"batch of {local_batch}; lower --config.batch_size."
    )
  examples = _examples(builder, split, config.seed)
  if data.cache:
    examples = examples.cache()
  shuffle_buffer = min(data.shuffle_buffer, size)

  def epoch(index: tf.Tensor) -> tf.data.Dataset:
    return examples.shuffle(
      shuffle_buffer, seed=config.seed * EPOCH_STRIDE + index, reshuffle_each_iteration=False
    )

  position = start_step * local_batch
  first_epoch, offset = divmod(position, size)
  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  stream = stream.skip(offset).enumerate(start=position)
  global_batch = local_batch * process_count
  jpeg = _is_jpeg(builder)

  def augment(local_position: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]) -> dict[str, Any]:
    step, within = local_position // local_batch, local_position % local_batch
    index = step * global_batch + process_index * local_batch + within
    seed = tf.stack([tf.constant(config.seed, tf.int64), index])
    image = preprocess.train_image(example[0], seed, config.image_size, config.augment, jpeg)
    return {"image": image, "label": example[1]}

  stream = stream.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return _without_autotune_model(
    stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  )


def eval_dataset(
  builder: tfds.core.DatasetBuilder,
  config: ml_collections.ConfigDict,
  *,
  local_batch: int,
  process_index: int,
  process_count: int,
  crops: int = 1,
) -> tuple[tf.data.Dataset, int]:
  """This process's share of the eval split, every example once, and the number of batches.

  Each example's "image" holds its `crops` views (data.crops: 1, 10 or 144), uint8
  [crops, size, size, 3]. Batches carry a "mask" (1 real, 0 padding): the last batch is padded to
  full size, and every process yields the same number of batches so the pmapped eval steps stay
  in lockstep.
  """
  if crops not in CROPS:
    raise ConfigError(f"crops={crops}: choose one of {', '.join(map(str, CROPS))}.")
  data = config.data
  split = tfds.split_for_jax_process(
    data.eval_split, process_index=process_index, process_count=process_count
  )
  per_process = math.ceil(num_examples(builder, data.eval_split) / process_count)
  num_batches = math.ceil(per_process / local_batch)
  jpeg = _is_jpeg(builder)

  def views(encoded: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    if crops == 1:
      image = preprocess.eval_image(encoded, config.image_size, data.eval_crop_fraction, jpeg)
      image = image[None]
    else:
      decoded = tf.io.decode_image(encoded, channels=3, expand_animations=False)
      image = multi_crop(decoded, config.image_size, crops, data.eval_crop_fraction)[0]
    return {"image": image, "label": label, "mask": tf.constant(1, tf.int32)}

  def pad(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    missing = local_batch - tf.shape(batch["label"])[0]
    return {
      key: tf.pad(value, [[0, missing]] + [[0, 0]] * (len(value.shape) - 1))
      for key, value in batch.items()
    }

  batches = _examples(builder, split, config.seed).map(
    views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  batches = batches.batch(local_batch).map(pad)
  empty = tf.data.Dataset.from_tensors(
    {
      key: tf.zeros([local_batch, *spec.shape[1:]], spec.dtype)
      for key, spec in batches.element_spec.items()
    }
  ).repeat()
  batches = batches.concatenate(empty).take(num_batches)
  if data.cache:
    batches = batches.cache()
  return _without_autotune_model(batches.prefetch(tf.data.AUTOTUNE)), num_batches
