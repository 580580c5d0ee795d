"""The test-time crops of the paper's Section 7: 1, 10 or 144 views of each image.

Evaluation averages the network's softmax over an image's views. Each view is a window of the
image after resizing it, recorded as (scaled height, scaled width, top, left, side, mirror): the
side x side square at (top, left) of the image resized to the scaled size, resized in turn to
image_size where side differs, and mirrored left-right where mirror is 1.

- 1: the central square covering `crop_fraction` of the shorter side, resized
  (preprocess.eval_image, which decodes only that square of a JPEG).
- 10: the shorter side resized to image_size / crop_fraction (256 for 224 at 0.875), its four
  corner crops and its centre crop, and their mirrors.
- 144: the shorter side resized to 256, 288, 320 and 352 (for 224 inputs; image_size * s / 224
  otherwise); at each scale the left, centre and right squares (top, centre, bottom for portrait
  images); from each square its four corners and centre at image_size and the whole square resized
  to image_size; all of them mirrored too: 4 x 3 x 6 x 2.
"""

from __future__ import annotations

import tensorflow as tf

CROPS = (1, 10, 144)
PAPER_SHORTER_SIDES = (256, 288, 320, 352)  # Section 7, for the paper's 224 x 224 input
PAPER_INPUT = 224


def _scaled(height: tf.Tensor, width: tf.Tensor, shorter: int) -> tuple[tf.Tensor, tf.Tensor]:
  """The size with the shorter side `shorter` and the aspect ratio kept (rounded half to even)."""
  ratio = tf.cast(tf.maximum(height, width), tf.float64) / tf.cast(
    tf.minimum(height, width), tf.float64
  )
  longer = tf.cast(tf.round(ratio * shorter), tf.int32)
  portrait = height > width
  return tf.where(portrait, longer, shorter), tf.where(portrait, shorter, longer)


def _resize(image: tf.Tensor, size: tf.Tensor | list) -> tf.Tensor:
  """Bilinear, antialiased when shrinking, as float32 (as the one-crop eval resizes)."""
  return tf.image.resize(image, size, method="bilinear", antialias=True)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _corners_and_centre(top, left, height, width, size: int) -> list:
  """(top, left) of the four size x size corners and the centre of the height x width region at
  (top, left): top-left, top-right, bottom-left, bottom-right, centre."""
  down, right = height - size, width - size
  return [
    (top, left),
    (top, left + right),
    (top + down, left),
    (top + down, left + right),
    (top + down // 2, left + right // 2),
  ]


def multi_crop(
  image: tf.Tensor, image_size: int, crops: int, crop_fraction: float
) -> tuple[tf.Tensor, tf.Tensor]:
  """The views of `image` (uint8 [h, w, 3]) as uint8 [crops, image_size, image_size, 3], and
  their windows as int32 [crops, 6] (see the module docstring), mirrors last; crops 10 or 144."""
  if crops not in CROPS[1:]:
    raise ValueError(f"crops={crops}: 10 or 144 (one crop is preprocess.eval_image)")
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  views, windows = [], []

  def view(scaled_image, scaled, top, left, side, resize: bool) -> None:
    square = scaled_image[top : top + side, left : left + side]
    views.append(_resize(square, [image_size, image_size]) if resize else square)
    windows.append(tf.stack([scaled[0], scaled[1], top, left, side]))

  if crops == 10:
    shorter = round(image_size / crop_fraction)
    scaled = _scaled(height, width, shorter)
    resized = _resize(image, tf.stack(scaled))
    for top, left in _corners_and_centre(0, 0, scaled[0], scaled[1], image_size):
      view(resized, scaled, top, left, image_size, resize=False)
  else:
    for paper_side in PAPER_SHORTER_SIDES:
      shorter = round(image_size * paper_side / PAPER_INPUT)
      scaled = _scaled(height, width, shorter)
      resized = _resize(image, tf.stack(scaled))
      slack = tf.maximum(scaled[0], scaled[1]) - shorter  # along the longer side
      portrait = scaled[0] > scaled[1]
      for offset in (0, slack // 2, slack):
        square_top = tf.where(portrait, offset, 0)
        square_left = tf.where(portrait, 0, offset)
        corners = _corners_and_centre(square_top, square_left, shorter, shorter, image_size)
        for top, left in corners:
          view(resized, scaled, top, left, image_size, resize=False)
        view(resized, scaled, square_top, square_left, shorter, resize=True)
  unmirrored = tf.stack([tf.reshape(v, [image_size, image_size, 3]) for v in views])
  views = tf.concat([unmirrored, tf.reverse(unmirrored, axis=[2])], axis=0)
  windows = tf.cast(tf.concat([tf.stack(windows)] * 2, axis=0), tf.int32)
  mirror = tf.cast(tf.range(crops) >= crops // 2, tf.int32)
  return _to_uint8(views), tf.concat([windows, mirror[:, None]], axis=1)
