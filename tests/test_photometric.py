"""The photometric distortions the train step applies on the device: TensorFlow's, per image, and
the same for an image wherever the batch is split."""

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from helpers import tiny_config

from inception_jax.data import photometric
from inception_jax.models import build_model
from inception_jax.training import devices, optim, steps
from inception_jax.training.devices import AXIS
from inception_jax.training.steps import create_train_state, make_train_step


def tensorflow_distortion(image: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """tf.image's brightness, saturation, hue and contrast adjustments, as the Inception pipelines
  apply them, then clipped: the reference on values in [0, 255]."""
  brightness, saturation, hue, contrast = (float(f) for f in factors)
  x = tf.constant(image, tf.float32) / 255.0
  x = tf.image.adjust_brightness(x, brightness)
  x = tf.image.adjust_saturation(x, saturation)
  x = tf.image.adjust_hue(x, hue)
  x = tf.image.adjust_contrast(x, contrast)
  return 255.0 * tf.clip_by_value(x, 0.0, 1.0).numpy()


def test_each_image_is_distorted_as_tensorflow_distorts_it():
  images = np.random.default_rng(0).integers(0, 256, (6, 16, 12, 3), dtype=np.uint8)
  factors = np.asarray(photometric.random_factors(jax.random.key(1), len(images)))
  ours = np.asarray(photometric.distort(jnp.asarray(images), jnp.asarray(factors)))
  expected = np.stack([tensorflow_distortion(i, f) for i, f in zip(images, factors, strict=True)])
  assert ours.dtype == np.float32 and ours.min() >= 0 and ours.max() <= 255
  np.testing.assert_allclose(ours, expected, atol=2e-3)  # on [0, 255]: float32 rounding
  assert np.abs(ours - images).mean() > 5  # and the images did change


def test_factors_cover_the_ranges():
  factors = np.asarray(photometric.random_factors(jax.random.key(0), 20_000))
  for column, (low, high) in enumerate(photometric.RANGES.values()):
    drawn = factors[:, column]
    assert low <= drawn.min() < low + 0.01 * (high - low)
    assert high - 0.01 * (high - low) < drawn.max() < high


def on_devices(images: jax.Array, step: int, count: int) -> np.ndarray:
  """The train step's distortion of `images` split over `count` devices (vmap standing in for
  pmap)."""
  rng = jax.random.key(3)
  split = images.reshape(count, -1, *images.shape[1:])
  distorted = jax.vmap(lambda part: steps._photometric(part, rng, step), axis_name=AXIS)(split)
  return np.asarray(distorted).reshape(images.shape)


def test_a_distortion_follows_the_images_place_in_the_global_batch_and_the_step():
  """As dropout's masks: the device count changes nothing; the step draws new factors."""
  images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8))
  one = on_devices(images, 5, 1)
  np.testing.assert_array_equal(one, on_devices(images, 5, 2))
  np.testing.assert_array_equal(one, on_devices(images, 5, 4))
  assert not np.allclose(one, on_devices(images, 6, 1))
  assert not np.allclose(one[:4], one[4:])  # a different draw for each image


def test_the_switch_turns_the_distortions_on_in_the_train_step():
  """One real train step of a tiny GoogLeNet on grey images: the loss moves only when on."""
  losses = {}
  for switch in (False, True):
    config = tiny_config({"model.width_multiplier": 0.125, "augment.photometric": switch})
    model = build_model(config.model, batch_axis_name=AXIS)
    tx = optim.optimizer(config, optim.learning_rate_schedule(config, 100, 10))
    state = devices.put_state(create_train_state(config, model, tx))
    batch = devices.put_batch(
      {"image": np.full((4, 32, 32, 3), 128, np.uint8), "label": np.arange(4, dtype=np.int32)}
    )
    losses[switch] = float(devices.parallel(make_train_step(model, tx, config))(state, batch)[1])
  assert np.isfinite(losses[True]) and losses[True] != losses[False]
