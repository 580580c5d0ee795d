"""Times our own pmapped train and eval steps, built exactly as `train` builds them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from inception_jax.bench.cases import Case, time_steps
from inception_jax.bench.profile import profile_jax
from inception_jax.models import build_model
from inception_jax.training import devices, optim
from inception_jax.training.defaults import base_config
from inception_jax.training.steps import (
  create_train_state,
  make_eval_step,
  make_train_step,
  stack_models,
)


def _batch(case: Case, rng: np.random.Generator, num_classes: int) -> dict[str, jax.Array]:
  """A device-resident batch of random uint8 images, as the input pipeline delivers them."""
  size = case.image_size
  batch = {
    "image": rng.integers(0, 256, (case.batch, size, size, 3), dtype=np.uint8),
    "label": rng.integers(0, num_classes, (case.batch,), dtype=np.int32),
  }
  if case.mode == "eval":  # one view of each image, as `train`'s evaluations use
    batch["image"] = batch["image"][:, None]
    batch["mask"] = np.ones((case.batch,), np.bool_)
  return devices.put_batch(batch)


def time_ours(
  case: Case, steps: int, warmup: int, profile_steps: int = 0
) -> tuple[dict[str, Any], Callable[[], None]]:
  """Median seconds per step over `steps` timed steps after `warmup` untimed ones (and the
  compile), each step waited for with block_until_ready, on one resident batch; with
  `profile_steps`, then the XLA op time of each part of the step over that many traced steps.
  Also the step itself, for timing it again in later rounds."""
  config = base_config()
  config.augment.photometric = False  # PyTorch's step is the network's alone, as ours then is
  config.model = case.model_config()
  config.image_size, config.batch_size = case.image_size, case.batch
  devices.local_batch_size(case.batch)  # the batch must divide over the devices
  model = build_model(config.model, batch_axis_name=devices.AXIS)
  schedule = optim.learning_rate_schedule(config, total_steps=10_000, steps_per_epoch=100)
  tx = optim.optimizer(config, schedule)
  state = devices.put_state(create_train_state(config, model, tx))
  batch = _batch(case, np.random.default_rng(0), config.model.num_classes)
  if case.mode == "train":
    step = devices.parallel(make_train_step(model, tx, config))
  else:
    step = devices.parallel_eval(make_eval_step(model))
    state = stack_models([state.eval_variables()])  # all that eval reads: one model's variables

  start = time.perf_counter()
  compiled, memory = devices.compile_step(step, state, batch)
  compile_seconds = time.perf_counter() - start

  def step() -> None:
    """One step, waited for; train donates the state and replaces it with the step's."""
    nonlocal state
    out = compiled(state, batch)
    if case.mode == "train":
      state, _ = out
    jax.block_until_ready(out)

  result = {
    **time_steps(step, case.batch, steps, warmup),
    "compile_seconds": compile_seconds,
    "memory_bytes": memory,
    "devices": jax.local_device_count(),
  }
  if profile_steps:
    result["profile"] = profile_jax(step, compiled.as_text(), profile_steps)
  return result, step
