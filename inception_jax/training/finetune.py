"""Fine-tuning: a run that starts from another run's (or an imported network's) weights.

`config.init_from` names the source workdir (`DIR` or `DIR:STEP`). The new run takes the
source's evaluated weights and BatchNorm statistics with a fresh optimizer at step 0. The heads
(classifier, aux heads) may differ, e.g. with a new num_classes: those layers are initialised
anew. The backbone must be the source's, or the weights would mean nothing: a config whose
backbone differs is refused with the differences listed.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from inception_jax.config import load_workdir_config
from inception_jax.errors import ConfigError, listed
from inception_jax.models.googlenet import is_head
from inception_jax.training import devices
from inception_jax.training.checkpoints import Checkpoints

# The model fields that decide what the backbone's weights mean.
BACKBONE_FIELDS = (
  "module",
  "norm",
  "kernel_sizes",
  "widths",
  "stem",
  "stem_widths",
  "stage_pools",
  "width_multiplier",
  "bn_epsilon",
  "input_transform",
)
MAX_LISTED = 8


def source_of(init_from: str) -> tuple[pathlib.Path, int | None]:
  """'runs/tv:5004' -> (runs/tv, 5004); 'runs/tv' -> (runs/tv, None): the latest checkpoint."""
  path, colon, step = init_from.rpartition(":")
  if colon and step.isdigit():
    return pathlib.Path(path), int(step)
  return pathlib.Path(init_from), None


def _plain(value: Any) -> Any:
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _refuse(
  config: ml_collections.ConfigDict, source: pathlib.Path, what: str, lines: list[str]
) -> ConfigError:
  return ConfigError(
    f"init_from={config.init_from!r}: {what}:{listed(lines, MAX_LISTED)}\n"
    f"Fine-tuning keeps the source's backbone; only the classifier and aux heads may differ "
    f"(e.g. num_classes). Use the source's model settings (its config.json in {source}). "
    f"Nothing was written."
  )


def start_variables(
  config: ml_collections.ConfigDict, fresh: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
  """The params and batch_stats a fine-tuning run starts from, and what to tell the user.

  `fresh` is this config's own initialisation, which the heads fall back to where the source's
  shapes differ or the source has none.
  """
  source, step = source_of(config.init_from)
  if not (source / "checkpoints").is_dir():
    raise ConfigError(
      f"init_from={config.init_from!r}: {source} holds no checkpoints; name a "
      f"run's workdir or an imported one (inception-jax import-weights)."
    )
  source_model = load_workdir_config(source).model
  differences = [
    f"model.{field}: {_plain(source_model.get(field))!r} in the source, "
    f"{_plain(config.model.get(field))!r} here"
    for field in BACKBONE_FIELDS
    if _plain(source_model.get(field)) != _plain(config.model.get(field))
  ]
  if differences:
    raise _refuse(config, source, "the backbone differs from the source's", differences)
  with Checkpoints(source, read_only=True) as checkpoints:
    saved, saved_step = checkpoints.restore_variables(devices.checkpoint_sharding(), step)
  saved, fresh = flatten_dict(jax.device_get(saved)), flatten_dict(jax.device_get(dict(fresh)))

  start, renewed, mismatched = {}, [], []
  for path, value in fresh.items():
    taken = saved.get(path)
    if taken is not None and np.shape(taken) == np.shape(value):
      start[path] = taken
    elif is_head(path[1]):
      start[path] = value
      renewed.append(path)
    else:
      mismatched.append(
        f"{'/'.join(path)}: {np.shape(taken) if taken is not None else 'absent'} "
        f"in the source, {np.shape(value)} here"
      )
  mismatched += [
    f"{'/'.join(path)}: only in the source"
    for path in sorted(saved.keys() - fresh.keys())
    if not is_head(path[1])
  ]
  if mismatched:
    raise _refuse(config, source, "the backbone's arrays differ from the source's", mismatched)

  unused = sorted({path[1] for path in saved.keys() - fresh.keys()})
  lines = [
    f"Fine-tuning from {source} (its checkpoint at step {saved_step}): "
    f"{len(start) - len(renewed)} of {len(start)} arrays taken, "
    f"trainable={config.trainable}."
  ]
  if renewed:  # by layer: 'aux_4a/fc2', 'classifier'
    layers = sorted({"/".join(path[1:-1]) for path in renewed})
    lines.append(
      f"Initialised anew (shapes differ from the source's, or it has none): {', '.join(layers)}."
    )
  if unused:
    lines.append(f"Not used (this config has no such layer): {', '.join(unused)}.")
  return unflatten_dict(start), lines
