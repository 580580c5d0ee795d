"""Learning-rate schedules and optimizers, each a small registry keyed by its config name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import optax

from inception_jax.errors import ConfigError, choose
from inception_jax.models.googlenet import is_head

# The paper: "decreasing the learning rate by 4% every 8 epochs".
PAPER_DECAY_RATE = 0.96
PAPER_DECAY_EPOCHS = 8


def _paper(peak: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  return optax.exponential_decay(
    peak,
    transition_steps=PAPER_DECAY_EPOCHS * steps_per_epoch,
    decay_rate=PAPER_DECAY_RATE,
    staircase=True,
  )


def _cosine(peak: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  return optax.cosine_decay_schedule(peak, decay_steps=max(total_steps, 1))


def _constant(peak: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  return optax.constant_schedule(peak)


SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
  "paper": _paper,
  "cosine": _cosine,
  "constant": _constant,
}


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """The configured rate is for `lr_reference_batch` images; it scales linearly with the batch."""
  return config.learning_rate * config.batch_size / config.lr_reference_batch


def learning_rate_schedule(
  config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
  """The schedule named by config.schedule, after `warmup_epochs` of linear warm-up from 0."""
  decay = choose(SCHEDULES, config.schedule, "schedule")
  peak = peak_learning_rate(config)
  warmup = round(config.warmup_epochs * steps_per_epoch)
  if warmup >= total_steps > 0:
    raise ConfigError(
      f"warmup_epochs={config.warmup_epochs} covers all {total_steps} steps; "
      f"lower it below {total_steps / steps_per_epoch:.2f}."
    )
  if not warmup:
    return decay(peak, total_steps, steps_per_epoch)
  return optax.join_schedules(
    [optax.linear_schedule(0.0, peak, warmup), decay(peak, total_steps - warmup, steps_per_epoch)],
    [warmup],
  )


def _decay_mask(params: optax.Params) -> optax.Params:
  """Weight decay on conv and dense kernels only, not on biases or BatchNorm scales."""
  return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def _sgd(
  config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  if config.nesterov and not config.momentum:
    raise ConfigError(
      "nesterov=True needs momentum > 0; set --config.momentum=0.9 or --config.nesterov=False."
    )
  return optax.chain(
    optax.add_decayed_weights(config.weight_decay, _decay_mask),
    optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov),
  )


def _adamw(
  config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  return optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask)


OPTIMIZERS: dict[
  str, Callable[[ml_collections.ConfigDict, optax.Schedule], optax.GradientTransformation]
] = {"sgd": _sgd, "adamw": _adamw}


def _head_labels(params: optax.Params) -> optax.Params:
  """'train' for the classifier's and aux heads' parameters, 'freeze' for the backbone's."""
  return {
    layer: _labelled(tree, "train" if is_head(layer) else "freeze")
    for layer, tree in params.items()
  }


def _labelled(tree: optax.Params, label: str) -> optax.Params:
  """`tree` with `label` in place of every leaf."""
  return jax.tree.map(lambda _: label, tree)


# config.trainable: everything, or the classifier and aux heads only (the backbone frozen).
FROZEN_BACKBONE = {"all": False, "head": True}


def frozen_backbone(config: ml_collections.ConfigDict) -> bool:
  return choose(FROZEN_BACKBONE, config.trainable, "trainable")


def optimizer(
  config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """config.optimizer's update; with a frozen backbone, the backbone gets none (no weight decay
  either), so its parameters stay exactly as they were."""
  tx = choose(OPTIMIZERS, config.optimizer, "optimizer")(config, schedule)
  if frozen_backbone(config):
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, _head_labels)
  return tx
