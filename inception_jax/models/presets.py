"""Model configs (the paper's, torchvision's) and the one function that turns a config into a
model."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from inception_jax.errors import ConfigError, choose
from inception_jax.models.googlenet import AUX_POOLS, INPUT_TRANSFORMS, STEMS, GoogLeNet, stage_of
from inception_jax.models.module import MODULE_KINDS, ModuleWidths, scale_width

# Paper Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
TABLE1_WIDTHS = {
  "inception_3a": (64, 96, 128, 16, 32, 32),
  "inception_3b": (128, 128, 192, 32, 96, 64),
  "inception_4a": (192, 96, 208, 16, 48, 64),
  "inception_4b": (160, 112, 224, 24, 64, 64),
  "inception_4c": (128, 128, 256, 24, 64, 64),
  "inception_4d": (112, 144, 288, 32, 64, 64),
  "inception_4e": (256, 160, 320, 32, 128, 128),
  "inception_5a": (256, 160, 320, 32, 128, 128),
  "inception_5b": (384, 192, 384, 48, 128, 128),
}

# Each norm choice: (LRN after the stem's first and second conv, BatchNorm after every conv).
NORMS = {"lrn": (True, False), "batchnorm": (False, True), "none": (False, False)}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_MODULE_NAME = re.compile(r"inception_\d+[a-z]")


def _paper() -> dict[str, Any]:
  # The fields' comments line up as a table.
  # fmt: off
  return dict(
    module="reduced",            # reduced (Fig. 2b) | naive (Fig. 2a)
    norm="lrn",                  # lrn (paper) | batchnorm | none
    kernel_sizes=(1, 3, 5),      # kernels of the three conv branches; the paper's "5x5" is last
    widths=dict(TABLE1_WIDTHS),  # per module: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
    stem="imagenet",             # imagenet (224x224 -> 28x28) | small (32x32 images)
    stem_widths=(64, 64, 192),   # conv1, conv2's 1x1 reduction, conv2's 3x3
    stage_pools=(3, 3),          # max pool windows (stride 2) after stage 3 and stage 4
    aux_heads=True,              # the two auxiliary classifiers (training only)
    aux_from=("inception_4a", "inception_4d"),
    aux_pool="paper",            # paper (5x5/3 average) | adaptive (to 4x4, torchvision)
    aux_widths=(128, 1024),      # aux head's 1x1 conv and fully connected widths
    dropout=0.4,
    aux_dropout=0.7,
    num_classes=1000,
    width_multiplier=1.0,        # scales every width except the classes
    bn_momentum=0.9,             # BatchNorm only (PyTorch's momentum 0.1)
    bn_epsilon=1e-3,
    dtype="float32",             # compute dtype: float32 | bfloat16; parameters stay float32
    input_transform="symmetric",  # pixels -> network input: symmetric (RGB in [-1, 1]) |
                                  # caffe_bgr (BGR minus BVLC's mean: the imported BVLC network)
  )
  # fmt: on


def _torchvision() -> dict[str, Any]:
  """torchvision.models.googlenet: BatchNorm, 3x3 in the "5x5" branch, 2x2/2 last pool."""
  return dict(
    _paper(),
    norm="batchnorm",
    kernel_sizes=(1, 3, 3),
    stage_pools=(3, 2),
    aux_pool="adaptive",
    dropout=0.2,
  )


def _small() -> dict[str, Any]:
  """The paper's modules for 32x32 images: small stem, BatchNorm, aux heads pooled adaptively."""
  return dict(_paper(), stem="small", norm="batchnorm", aux_pool="adaptive", num_classes=10)


PRESETS = {"paper": _paper, "torchvision": _torchvision, "small": _small}


def model_config(preset: str = "paper") -> ml_collections.ConfigDict:
  """The model fields of a config, as one of the named presets."""
  return ml_collections.ConfigDict(choose(PRESETS, preset, "model preset")())


def _positive_ints(value: Any, count: int, field: str) -> tuple[int, ...]:
  value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if len(value) != count or not all(isinstance(v, int) and v > 0 for v in value):
    raise ConfigError(f"{field} must be {count} positive integers, got {value!r}.")
  return value


def _check_range(value: float, low: float, high: float, field: str) -> None:
  if not low <= value < high:
    raise ConfigError(f"{field} must be in [{low}, {high}), got {value!r}.")


def build_model(
  cfg: ml_collections.ConfigDict, batch_axis_name: str | None = None, frozen_backbone: bool = False
) -> GoogLeNet:
  """Validates the model fields of a config and builds the GoogLeNet they describe.

  `batch_axis_name` is the pmap axis over which BatchNorm averages its batch statistics and
  dropout draws its masks. `frozen_backbone` trains the heads only (GoogLeNet.frozen_backbone).
  """
  branches_of = choose(MODULE_KINDS, cfg.module, "model.module")
  lrn, batchnorm = choose(NORMS, cfg.norm, "model.norm")
  kernels = _positive_ints(cfg.kernel_sizes, 3, "model.kernel_sizes")
  if any(k % 2 == 0 for k in kernels):
    raise ConfigError(f"model.kernel_sizes must be odd (size-preserving padding), got {kernels}.")
  _check_range(cfg.dropout, 0.0, 1.0, "model.dropout")
  _check_range(cfg.aux_dropout, 0.0, 1.0, "model.aux_dropout")
  if cfg.width_multiplier <= 0:
    raise ConfigError(f"model.width_multiplier must be positive, got {cfg.width_multiplier}.")
  if cfg.num_classes < 1:
    raise ConfigError(f"model.num_classes must be at least 1, got {cfg.num_classes}.")
  choose(AUX_POOLS, cfg.aux_pool, "model.aux_pool")
  choose(INPUT_TRANSFORMS, cfg.input_transform, "model.input_transform")

  names = sorted(cfg.widths)
  if not names:
    raise ConfigError("model.widths is empty: the network needs at least one Inception module.")
  for name in names:
    if not _MODULE_NAME.fullmatch(name):
      raise ConfigError(
        f"model.widths.{name}: module names look like 'inception_4c' "
        "(stage number, then a letter for the order within the stage)."
      )
  stage_count = len({stage_of(name) for name in names})
  stage_pools = ()
  if stage_count > 1:  # one pool between each two stages
    stage_pools = _positive_ints(cfg.stage_pools, stage_count - 1, "model.stage_pools")
  unknown_aux = set(cfg.aux_from) - set(names)
  if cfg.aux_heads and unknown_aux:
    raise ConfigError(
      f"model.aux_from names modules that do not exist: {sorted(unknown_aux)}; modules are {names}."
    )

  def scale(width: int) -> int:
    return scale_width(width, cfg.width_multiplier)

  inception = tuple(
    (
      name,
      branches_of(
        ModuleWidths(*_positive_ints(cfg.widths[name], 6, f"model.widths.{name}")).scaled(
          cfg.width_multiplier
        ),
        kernels,
      ),
    )
    for name in names
  )
  return GoogLeNet(
    num_classes=cfg.num_classes,
    inception=inception,
    stem=choose(STEMS, cfg.stem, "model.stem"),
    stem_widths=tuple(map(scale, _positive_ints(cfg.stem_widths, 3, "model.stem_widths"))),
    stage_pools=stage_pools,
    lrn=lrn,
    batchnorm=batchnorm,
    bn_momentum=cfg.bn_momentum,
    bn_epsilon=cfg.bn_epsilon,
    batch_axis_name=batch_axis_name,
    dropout=cfg.dropout,
    aux_from=tuple(cfg.aux_from) if cfg.aux_heads else (),
    aux_pool=cfg.aux_pool,
    aux_widths=tuple(map(scale, _positive_ints(cfg.aux_widths, 2, "model.aux_widths"))),
    aux_dropout=cfg.aux_dropout,
    frozen_backbone=frozen_backbone,
    input_transform=cfg.input_transform,
    dtype=choose(DTYPES, cfg.dtype, "model.dtype"),
    param_dtype=jnp.float32,
  )


def variable_shapes(model: GoogLeNet, image_size: int) -> dict[str, Any]:
  """The shapes and dtypes of `init_variables`' result for square images, without computing it:
  what a checkpoint or a weights file must fit."""
  return jax.eval_shape(
    lambda: init_variables(model, jax.random.key(0), (image_size, image_size, 3))
  )


def init_variables(
  model: GoogLeNet, rng: jax.Array, image_shape: tuple[int, int, int]
) -> dict[str, Any]:
  """Initial `params` (and `batch_stats`), aux heads included: initialised in training mode.

  Jitted: op-by-op initialisation of GoogLeNet takes tens of seconds on a CPU. The classic
  (non-partitionable) threefry compiles 2.5x faster here (11 s against 25 s on a 2-core CPU for
  the ~170 initialisers) and initialisation is never sharded, so it uses that one.
  """
  params_rng, dropout_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  with jax.threefry_partitionable(False):
    init = jax.jit(lambda rngs, x: model.init(rngs, x, train=True))
    return dict(init({"params": params_rng, "dropout": dropout_rng}, dummy))
