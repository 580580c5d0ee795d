"""The paper's photometric distortions, applied to a batch on the accelerator inside the train step.

Brightness, saturation, hue and contrast jitter, in TensorFlow's Inception order and ranges. On
the host they were a third of the training pipeline's time per image (two RGB-HSV round trips in
tf.data: 379 against 588 img/s on one thread of a 2-core AMD EPYC, medians in photometric.md), and
on a GPU the step waits for that pipeline (bench_gpu.md); on the device they are a few elementwise
passes over the batch. dm-pix supplies the colour operations, each the equivalent of TensorFlow's.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

# (low, high) of each image's uniform draw, for images scaled to [0, 1]: brightness and hue are
# added, saturation and contrast multiply (tf.image's random_brightness, ..., random_contrast).
RANGES = {
  "brightness": (-32 / 255, 32 / 255),
  "saturation": (0.5, 1.5),
  "hue": (-0.2, 0.2),
  "contrast": (0.5, 1.5),
}


def random_factors(key: jax.Array, count: int) -> jax.Array:
  """`count` images' factors, float32 [count, 4] in RANGES' order, from one key."""
  low, high = (jnp.asarray(bounds, jnp.float32) for bounds in zip(*RANGES.values(), strict=True))
  return jax.random.uniform(key, (count, len(RANGES)), jnp.float32, low, high)


def distort(images: jax.Array, factors: jax.Array) -> jax.Array:
  """NHWC RGB images with values in [0, 255] (uint8 or float), each jittered by its row of
  `factors` and clipped to the range: float32 in [0, 255]."""

  def one(image: jax.Array, factor: jax.Array) -> jax.Array:
    brightness, saturation, hue, contrast = factor
    image = pix.adjust_brightness(image, brightness)
    image = pix.adjust_saturation(image, saturation)
    image = pix.adjust_hue(image, hue)
    image = pix.adjust_contrast(image, contrast)
    return jnp.clip(image, 0.0, 1.0)

  scaled = images.astype(jnp.float32) / 255.0
  return 255.0 * jax.vmap(one)(scaled, factors)
