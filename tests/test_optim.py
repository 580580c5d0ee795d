"""Learning-rate schedules and optimizers as the configs name them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_jax.errors import ConfigError
from inception_jax.training import optim

SPE = 10  # steps per epoch
TOTAL = 30 * SPE


def schedule(load, **overrides):
  config = load(
    "default.py",
    {
      "learning_rate": 0.1,
      "batch_size": 256,
      "lr_reference_batch": 256,
      "warmup_epochs": 0.0,
      **overrides,
    },
  )
  return optim.learning_rate_schedule(config, TOTAL, SPE)


def rates(fn, steps):
  return np.array([float(fn(step)) for step in steps])


def test_paper_schedule_drops_four_percent_every_eight_epochs(load):
  """A staircase: the rate holds for 8 whole epochs, then is multiplied by 0.96."""
  paper = schedule(load, schedule="paper")
  np.testing.assert_allclose(
    rates(paper, [0, 8 * SPE - 1, 8 * SPE, 16 * SPE - 1, 16 * SPE]),
    [0.1, 0.1, 0.096, 0.096, 0.1 * 0.96**2],
    rtol=1e-6,
  )


@pytest.mark.parametrize("name", ["paper", "cosine", "constant"])
def test_warmup_rises_linearly_from_zero_to_the_peak(load, name):
  fn = schedule(load, schedule=name, warmup_epochs=2.0)
  np.testing.assert_allclose(
    rates(fn, [0, SPE // 2, SPE, 2 * SPE]), [0.0, 0.025, 0.05, 0.1], rtol=1e-6
  )


def test_decay_starts_where_the_warmup_ends(load):
  """After warmup the chosen decay runs over the remaining steps: cosine is half way down at
  their middle and ~0 at the last step, paper drops 8 epochs after the warmup, constant holds."""
  warm = 2 * SPE
  cosine = schedule(load, schedule="cosine", warmup_epochs=2.0)
  np.testing.assert_allclose(rates(cosine, [(warm + TOTAL) // 2, TOTAL]), [0.05, 0.0], atol=1e-7)
  paper = schedule(load, schedule="paper", warmup_epochs=2.0)
  np.testing.assert_allclose(
    rates(paper, [warm + 8 * SPE - 1, warm + 8 * SPE]), [0.1, 0.096], rtol=1e-6
  )
  constant = schedule(load, schedule="constant", warmup_epochs=2.0)
  np.testing.assert_allclose(rates(constant, [warm, TOTAL // 2, TOTAL]), 0.1, rtol=1e-6)


def test_cosine_without_warmup_ends_near_zero(load):
  cosine = schedule(load, schedule="cosine")
  np.testing.assert_allclose(
    rates(cosine, [0, TOTAL // 2, TOTAL - 1, TOTAL]), [0.1, 0.05, 0.0, 0.0], atol=1e-5
  )


@pytest.mark.parametrize("batch_size, peak", [(64, 0.025), (256, 0.1), (1024, 0.4)])
def test_peak_rate_scales_linearly_with_the_batch(load, batch_size, peak):
  """learning_rate is for lr_reference_batch images (the linear scaling rule)."""
  fn = schedule(load, schedule="constant", batch_size=batch_size)
  assert float(fn(0)) == pytest.approx(peak)
  config = load(
    "default.py", {"learning_rate": 0.1, "batch_size": batch_size, "lr_reference_batch": 256}
  )
  assert optim.peak_learning_rate(config) == pytest.approx(peak)


def test_warmup_over_every_step_is_a_config_error(load):
  with pytest.raises(ConfigError, match="warmup_epochs=30.0 covers all 300 steps"):
    schedule(load, warmup_epochs=30.0)


@pytest.mark.parametrize(
  "field, value, hint, choices",
  [
    ("schedule", "cosin", "did you mean 'cosine'", "constant, cosine, paper"),
    ("optimizer", "adam", "did you mean 'adamw'", "adamw, sgd"),
  ],
)
def test_unknown_names_list_the_choices(load, field, value, hint, choices):
  config = load("default.py", {field: value})
  with pytest.raises(ConfigError, match=f"{hint}.*choose one of: {choices}"):
    optim.optimizer(config, optim.learning_rate_schedule(config, TOTAL, SPE))


def one_step(load, grads_fn, **overrides):
  """Params after one update from all-ones params with gradients grads_fn(params), at lr 0.1."""
  config = load(
    "default.py",
    {
      "schedule": "constant",
      "learning_rate": 0.1,
      "batch_size": 256,
      "lr_reference_batch": 256,
      "warmup_epochs": 0.0,
      **overrides,
    },
  )
  params = {
    "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
    "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
    "dense": {"kernel": jnp.ones((4, 10)), "bias": jnp.ones(10)},
  }
  tx = optim.optimizer(config, optim.learning_rate_schedule(config, TOTAL, SPE))
  updates, _ = tx.update(jax.tree.map(grads_fn, params), tx.init(params), params)
  return optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_kernels_only(load, name):
  """With zero gradients only decay moves a weight: kernels by lr * wd, biases and BatchNorm
  scales not at all (decaying them only fights the normalization)."""
  after = one_step(load, jnp.zeros_like, optimizer=name, weight_decay=0.01)
  for layer in ("conv", "dense"):
    np.testing.assert_allclose(after[layer]["kernel"], 1 - 0.1 * 0.01, rtol=1e-6)
    np.testing.assert_array_equal(after[layer]["bias"], 1.0)
  np.testing.assert_array_equal(after["bn"]["scale"], 1.0)
  np.testing.assert_array_equal(after["bn"]["bias"], 1.0)


@pytest.mark.parametrize("nesterov, factor", [(False, 1.0), (True, 1.9)])
def test_nesterov_looks_ahead_along_the_momentum(load, nesterov, factor):
  """The first SGD step is lr * g, or lr * (1 + momentum) * g with Nesterov's look-ahead."""
  after = one_step(
    load, jnp.ones_like, optimizer="sgd", weight_decay=0.0, momentum=0.9, nesterov=nesterov
  )
  np.testing.assert_allclose(after["dense"]["kernel"], 1 - 0.1 * factor, rtol=1e-6)
