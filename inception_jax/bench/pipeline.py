"""Images/s of the training input pipeline alone: JPEG decoding fused with the Inception crop.

Generated JPEGs (data/synthetic.py: ImageNet-like sizes, content that compresses like photos) go
through the same `train_image` the trainer maps over TFDS records, batched as in training.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from inception_jax.data.preprocess import train_image
from inception_jax.data.synthetic import photo_like_jpegs
from inception_jax.training.defaults import base_config


def time_pipeline(
  threads: int,
  image_size: int = 224,
  batch: int = 128,
  images: int = 256,
  seconds: float = 10.0,
  preprocess: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
) -> dict[str, float]:
  """Training-pipeline images/s with `threads` CPU threads for tf.data, over ~`seconds`.

  By default each image goes through `train_image` with the paper's augmentation (crop, flip,
  interpolation; the photometric distortions run in the train step); `preprocess(jpeg, seed)`
  stands in for it, to time other preprocessing the same way."""
  if preprocess is None:
    augment = base_config().augment
    preprocess = functools.partial(train_image, image_size=image_size, augment=augment, jpeg=True)
  encoded = photo_like_jpegs(images, np.random.default_rng(0))
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  # Fixed thread counts: nothing for tf.data's autotuning to tune, and no thread to wait on.
  options.autotune.enabled = False
  dataset = (
    tf.data.Dataset.from_tensor_slices(encoded)
    .repeat()
    .enumerate()
    .map(
      lambda index, jpeg: preprocess(jpeg, tf.stack([index, 0])),
      num_parallel_calls=threads,
      deterministic=True,
    )
    .batch(batch, drop_remainder=True)
    .prefetch(2)
    .with_options(options)
  )
  iterator = iter(dataset)
  next(iterator)  # builds the pipeline and fills the prefetch buffer
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch
  elapsed = time.perf_counter() - start
  return {
    "threads": threads,
    "images_per_second": count / elapsed,
    "images_per_second_per_thread": count / elapsed / threads,
  }
