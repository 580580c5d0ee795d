"""GoogLeNet (Inception-v1): stem, nine Inception modules, auxiliary heads and classifier."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.errors import ConfigError
from inception_jax.models.branch import Branch, BranchSpec, Conv
from inception_jax.models.layers import (
  BatchDropout,
  ConvUnit,
  GlobalAvgPool,
  LocalResponseNorm,
  MaxPool,
  adaptive_avg_pool,
  ceil_mode_padding,
)
from inception_jax.models.module import InceptionModule

Dtype = Any


class GoogLeNetOutput(NamedTuple):
  """Classifier logits, and the auxiliary heads' logits (empty outside training)."""

  logits: jnp.ndarray
  aux_logits: tuple[jnp.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class StemSpec:
  """The layers before the first Inception module: conv1 [pool1] [norm1] conv2 [norm2] [pool2]."""

  kernel: int
  strides: int
  pools: bool


STEMS = {
  # The paper's stem: 224x224 -> 28x28 before inception 3a (conv 7x7/2, two 3x3/2 max pools).
  "imagenet": StemSpec(kernel=7, strides=2, pools=True),
  # Small images (32x32): keep the resolution, 3x3/1 first conv, no pooling before 3a.
  "small": StemSpec(kernel=3, strides=1, pools=False),
}


def is_head(layer: str) -> bool:
  """The classifier and the aux heads (top-level layer names): what `trainable=head` trains and
  what a fine-tuned network with another num_classes initialises anew."""
  return layer == "classifier" or layer.startswith("aux_")


def stage_of(module_name: str) -> str:
  """'inception_4c' -> '4': modules of one stage share a resolution; stages are split by pools."""
  return module_name.rsplit("_", 1)[-1][:-1]


# What each network was trained to see, from RGB pixel values in [0, 255]. Computed in float32.
BVLC_MEAN_BGR = (104.0, 117.0, 123.0)  # BVLC GoogLeNet's train_val.prototxt `mean_value`s
INPUT_TRANSFORMS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
  # RGB in [-1, 1]: this project's default, and exactly what torchvision's pretrained googlenet
  # sees: its `transform_input` turns ImageNet-normalised input back into (pixels/255 - 0.5)/0.5.
  "symmetric": lambda pixels: pixels * (2.0 / 255.0) - 1.0,
  # Caffe's BVLC GoogLeNet: BGR channel order, 0..255 less the per-channel training mean.
  "caffe_bgr": lambda pixels: pixels[..., ::-1] - jnp.asarray(BVLC_MEAN_BGR, jnp.float32),
}

AUX_POOLS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
  "paper": functools.partial(nn.avg_pool, window_shape=(5, 5), strides=(3, 3)),  # 14 -> 4
  "adaptive": functools.partial(adaptive_avg_pool, output_size=4),  # torchvision
}


AUX_POOL_MIN_INPUT = {"paper": 5, "adaptive": 1}  # the smallest side each aux pool takes


def _pooled(side: int, window: int) -> int:
  """A ceil-mode max pool's (stride 2) output side; 0 where not even one window fits."""
  before, after = ceil_mode_padding(side, window, 2, 0)
  return max((side + before + after - window) // 2 + 1, 0)


def _too_small(model: GoogLeNet, side: int) -> str | None:
  """Why an input side of `side` pixels is too small for `model` (None if it is not): the same
  arithmetic as the layers' (stem conv, ceil-mode pools, size-preserving modules)."""
  kernel, strides = model.stem.kernel, model.stem.strides
  steps = [("conv1", lambda n: (n + 2 * (kernel // 2) - kernel) // strides + 1)]
  if model.stem.pools:
    steps += [("pool1", lambda n: _pooled(n, 3)), ("pool2", lambda n: _pooled(n, 3))]
  stage_pools = iter(model.stage_pools)
  for i, (name, _) in enumerate(model.inception):
    previous = model.inception[i - 1][0]
    if i and stage_of(name) != stage_of(previous):
      steps.append(
        (f"pool{stage_of(previous)}", functools.partial(_pooled, window=next(stage_pools)))
      )
    if name in model.aux_from:
      need = AUX_POOL_MIN_INPUT[model.aux_pool]
      steps.append(
        (
          f"{name}'s output is smaller than its aux head's {need}x{need} pool",
          lambda n, need=need: n if n >= need else 0,
        )
      )
  for what, output in steps:
    side = output(side)
    if side < 1:
      return what if " " in what else f"nothing is left of them at {what}"
  return None


def check_input_size(model: GoogLeNet, height: int, width: int) -> None:
  """A ConfigError naming the smallest image size that works where the input is too small."""
  for side in (height, width):
    reason = _too_small(model, side)
    if reason is not None:
      smallest = next(n for n in itertools.count(1) if _too_small(model, n) is None)
      raise ConfigError(
        f"images of {height}x{width} are too small for this network: {reason}. The smallest "
        f"size it takes is {smallest}x{smallest}: set --config.image_size={smallest} or more."
      )


class AuxHead(nn.Module):
  """Auxiliary classifier: pool -> 1x1 conv -> fully connected + ReLU -> dropout -> linear."""

  num_classes: int
  pool: str
  conv_features: int
  hidden: int
  dropout: float
  conv: Callable[..., nn.Module]
  batch_axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = AUX_POOLS[self.pool](x)
    x = self.conv(self.conv_features, 1, name="conv")(x, train)
    x = x.reshape((x.shape[0], -1))
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.relu(dense(self.hidden, name="fc1")(x))
    x = BatchDropout(self.dropout, self.batch_axis_name, name="dropout")(x, train)
    return dense(self.num_classes, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
  """GoogLeNet over NHWC RGB pixel values in [0, 255] (uint8 or float); every structural choice
  comes in resolved, from `build_model`.

  `input_transform` (INPUT_TRANSFORMS) maps the pixels to what the network was trained on, so an
  imported network carries its input convention with it, as torchvision's `transform_input` does.

  `inception` lists the modules in order as (name, branch specs); a max pool (3x3/2 or 2x2/2,
  `stage_pools`) goes between stages. Auxiliary heads run only in training, on the outputs of
  the modules named in `aux_from`; initialise with train=True so their parameters exist.
  """

  num_classes: int
  inception: tuple[tuple[str, tuple[BranchSpec, ...]], ...]
  stem: StemSpec = STEMS["imagenet"]
  stem_widths: tuple[int, int, int] = (64, 64, 192)
  stage_pools: tuple[int, ...] = (3, 3)
  lrn: bool = True
  batchnorm: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  batch_axis_name: str | None = None
  dropout: float = 0.4
  aux_from: tuple[str, ...] = ()
  aux_pool: str = "paper"
  aux_widths: tuple[int, int] = (128, 1024)
  aux_dropout: float = 0.7
  frozen_backbone: bool = False
  input_transform: str = "symmetric"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels: jnp.ndarray, train: bool = False) -> GoogLeNetOutput:
    check_input_size(self, *pixels.shape[1:3])
    conv = functools.partial(
      ConvUnit,
      batchnorm=self.batchnorm,
      bn_momentum=self.bn_momentum,
      bn_epsilon=self.bn_epsilon,
      batch_axis_name=self.batch_axis_name,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    x = INPUT_TRANSFORMS[self.input_transform](pixels.astype(jnp.float32)).astype(self.dtype)

    backbone_train = train and not self.frozen_backbone
    head_input = jax.lax.stop_gradient if self.frozen_backbone else (lambda features: features)
    c1, c2_reduce, c2 = self.stem_widths
    x = conv(c1, self.stem.kernel, self.stem.strides, name="conv1")(x, backbone_train)
    if self.stem.pools:
      x = MaxPool(3, 2, name="pool1")(x)
    if self.lrn:
      x = LocalResponseNorm(name="norm1")(x)
    x = Branch((Conv(1, c2_reduce), Conv(3, c2)), conv, name="conv2")(x, backbone_train)
    if self.lrn:
      x = LocalResponseNorm(name="norm2")(x)
    if self.stem.pools:
      x = MaxPool(3, 2, name="pool2")(x)

    aux_logits = []
    stage_pools = iter(self.stage_pools)
    for i, (name, branches) in enumerate(self.inception):
      if i and stage_of(name) != stage_of(self.inception[i - 1][0]):
        x = MaxPool(next(stage_pools), 2, name=f"pool{stage_of(self.inception[i - 1][0])}")(x)
      x = InceptionModule(branches, conv, name=name)(x, backbone_train)
      if train and name in self.aux_from:
        aux_logits.append(
          AuxHead(
            self.num_classes,
            self.aux_pool,
            *self.aux_widths,
            self.aux_dropout,
            conv,
            batch_axis_name=self.batch_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"aux_{name.rsplit('_', 1)[-1]}",
          )(head_input(x), train)
        )

    x = GlobalAvgPool(name="avgpool")(head_input(x))
    x = BatchDropout(self.dropout, self.batch_axis_name, name="dropout")(x, train)
    logits = nn.Dense(
      self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier"
    )(x)
    return GoogLeNetOutput(logits.astype(jnp.float32), tuple(aux_logits))
