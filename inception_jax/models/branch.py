"""A branch of an Inception module, built from a small spec of conv and pool steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from inception_jax.models.layers import MaxPool


@dataclasses.dataclass(frozen=True)
class Conv:
  """A kxk convolution to `features` channels (stride 1, size-preserving), then ReLU."""

  kernel: int
  features: int


@dataclasses.dataclass(frozen=True)
class Pool:
  """A window x window max pool, stride 1, size-preserving: passes every channel through."""

  window: int = 3


Step = Conv | Pool
BranchSpec = tuple[Step, ...]


class Branch(nn.Module):
  """Runs the steps of `spec` in order; `conv` builds each conv step (a ConvUnit partial)."""

  spec: BranchSpec
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, step in enumerate(self.spec):
      if isinstance(step, Conv):
        x = self.conv(step.features, step.kernel, name=f"conv{i}")(x, train)
      else:
        x = MaxPool(step.window, 1, step.window // 2, name=f"pool{i}")(x)
    return x
