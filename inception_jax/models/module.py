"""The Inception module: parallel branches over one input, concatenated on channels."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from inception_jax.models.branch import Branch, BranchSpec, Conv, Pool


@dataclasses.dataclass(frozen=True)
class ModuleWidths:
  """One row of the paper's Table 1: the filter counts of one Inception module."""

  c1: int
  c3_reduce: int
  c3: int
  c5_reduce: int
  c5: int
  pool_proj: int

  def scaled(self, multiplier: float) -> ModuleWidths:
    return ModuleWidths(*(scale_width(w, multiplier) for w in dataclasses.astuple(self)))


def scale_width(width: int, multiplier: float) -> int:
  """A width times the multiplier, rounded, never below one channel."""
  return max(1, round(width * multiplier))


def reduced_branches(w: ModuleWidths, kernels: Sequence[int]) -> tuple[BranchSpec, ...]:
  """Paper Fig. 2b: 1x1 reductions before the larger convs, a 1x1 projection after the pool."""
  k1, k3, k5 = kernels
  return (
    (Conv(k1, w.c1),),
    (Conv(1, w.c3_reduce), Conv(k3, w.c3)),
    (Conv(1, w.c5_reduce), Conv(k5, w.c5)),
    (Pool(3), Conv(1, w.pool_proj)),
  )


def naive_branches(w: ModuleWidths, kernels: Sequence[int]) -> tuple[BranchSpec, ...]:
  """Paper Fig. 2a: every conv straight on the input; the pool passes all input channels."""
  k1, k3, k5 = kernels
  return (Conv(k1, w.c1),), (Conv(k3, w.c3),), (Conv(k5, w.c5),), (Pool(3),)


MODULE_KINDS: dict[str, Callable[[ModuleWidths, Sequence[int]], tuple[BranchSpec, ...]]] = {
  "reduced": reduced_branches,
  "naive": naive_branches,
}


class InceptionModule(nn.Module):
  """Any number of branches (specs) over the same input, concatenated along channels (NHWC)."""

  branches: tuple[BranchSpec, ...]
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    outputs = [
      Branch(spec, self.conv, name=f"branch{i}")(x, train) for i, spec in enumerate(self.branches)
    ]
    return jnp.concatenate(outputs, axis=-1)
