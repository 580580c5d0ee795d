"""Per-image preprocessing in TensorFlow: the paper's training augmentation and the eval crop.

The photometric distortions are not here: the train step applies them on the device
(`photometric.py`).

Every random choice is a stateless op keyed by a per-example seed, so an image's augmentation is a
function of (config seed, its position in the stream) and nothing else: the same config gives the
same batches, and a resumed run sees the same images it would have seen.

Images stay uint8 in [0, 255] all the way to the device; the train step scales them there, which
moves a quarter of the bytes a float32 pipeline would.
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np
import tensorflow as tf

from inception_jax.errors import ConfigError, read_input_file

# The paper's "resize with a randomly chosen interpolation (bilinear, area, nearest, cubic)".
INTERPOLATIONS = ("bilinear", "area", "nearest", "bicubic")


def _image_shape(encoded: tf.Tensor, jpeg: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
  """(height, width, channels) of an encoded image, and the decoded image when decoding was
  needed."""
  if jpeg:
    return tf.image.extract_jpeg_shape(encoded), None
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  return tf.shape(image), image


def _decode_window(encoded: tf.Tensor, image: tf.Tensor | None, window: tf.Tensor) -> tf.Tensor:
  """The crop [y, x, height, width] of the image as uint8 RGB; JPEGs decode only the window."""
  if image is None:
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
  return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def _inception_crop_window(
  shape: tf.Tensor, seed: tf.Tensor, augment: ml_collections.ConfigDict
) -> tf.Tensor:
  """A random window covering area_range of the image with aspect ratio in aspect_ratio_range."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
    seed=seed,
    min_object_covered=augment.area_range[0],
    aspect_ratio_range=augment.aspect_ratio_range,
    area_range=augment.area_range,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _center_window(shape: tf.Tensor, fraction: float) -> tf.Tensor:
  """The central square whose side is `fraction` of the shorter side (resize-then-crop in one)."""
  side = tf.cast(fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
  return tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])


def _resize(image: tf.Tensor, size: int, method: str) -> tf.Tensor:
  """Resizes to [size, size] as float32 (antialiased when shrinking, except nearest)."""
  resized = tf.image.resize(image, [size, size], method=method, antialias=method != "nearest")
  return tf.cast(resized, tf.float32)


def _random_resize(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  choice = tf.random.stateless_uniform([], seed, maxval=len(INTERPOLATIONS), dtype=tf.int32)
  branches = [lambda method=method: _resize(image, size, method) for method in INTERPOLATIONS]
  return tf.switch_case(choice, branches)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def train_image(
  encoded: tf.Tensor,
  seed: tf.Tensor,
  image_size: int,
  augment: ml_collections.ConfigDict,
  jpeg: bool,
) -> tf.Tensor:
  """Decodes and augments one training image: uint8 [image_size, image_size, 3].

  `seed` is a per-example int64 pair; each switch in `augment` turns one distortion on or off
  (`augment.photometric` in the train step).
  """
  # Split in four, as when the fourth seed drew the photometric distortions here: the crops,
  # flips and interpolations stay those that runs of configs without them have seen.
  crop_seed, flip_seed, resize_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  shape, image = _image_shape(encoded, jpeg)
  if augment.inception_crop:
    window = _inception_crop_window(shape, crop_seed, augment)
  else:
    window = tf.stack([0, 0, shape[0], shape[1]])
  image = _decode_window(encoded, image, window)
  if augment.flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if augment.random_interpolation:
    image = _random_resize(image, image_size, resize_seed)
  else:
    image = _resize(image, image_size, "bilinear")
  return _to_uint8(image)


def eval_image(encoded: tf.Tensor, image_size: int, crop_fraction: float, jpeg: bool) -> tf.Tensor:
  """The central `crop_fraction` square, resized bilinearly: uint8 [image_size, image_size, 3]."""
  shape, image = _image_shape(encoded, jpeg)
  image = _decode_window(encoded, image, _center_window(shape, crop_fraction))
  return _to_uint8(_resize(image, image_size, "bilinear"))


def eval_image_file(path: str, image_size: int, crop_fraction: float) -> np.ndarray:
  """An image file (JPEG, PNG, GIF, BMP) as evaluation sees it: uint8 [size, size, 3]."""
  data = read_input_file(path, "image", "check the path")
  encoded = tf.constant(data)
  jpeg = data[:3] == b"\xff\xd8\xff"
  try:
    return eval_image(encoded, image_size, crop_fraction, jpeg).numpy()
  except tf.errors.OpError as error:
    reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", error.message.splitlines()[0])
    raise ConfigError(
      f"{path!r} is not an image TensorFlow can decode (JPEG, PNG, GIF, BMP, WebP): {reason}"
    ) from None
