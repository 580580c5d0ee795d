"""Per-layer parameters and multiply-adds of any Flax module, and XLA's count to check them.

The count is structural: every `nn.Conv` and `nn.Dense` costs (output positions) x (kernel
size) multiply-adds, which is how the paper's Table 1 counts "ops"; pooling, normalisation and
activations are not counted. Rows are the module's direct children, in the order they run.
`macs_unpadded` leaves out the products with zero padding at the borders: that is what XLA's
cost analysis counts, so the two can be checked against each other exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One row of a cost table: a direct child of the analysed module."""

  name: str
  kind: str  # the child's class name, e.g. ConvUnit, InceptionModule
  patch: str  # kernel or window and stride, e.g. "7x7/2", where it has one
  output_shape: tuple[int, ...]  # without the batch dimension
  params: int
  macs: int
  macs_unpadded: int


def _patch(module: nn.Module) -> str:
  size = getattr(module, "kernel_size", None) or getattr(module, "window", None)
  strides = getattr(module, "strides", None)
  return f"{size}x{size}/{strides}" if isinstance(size, int) and isinstance(strides, int) else ""


def _taps_inside(size: int, out: int, kernel: int, stride: int, pad_before: int) -> int:
  """How many (output position, kernel tap) pairs of one spatial dimension read real input."""
  total = 0
  for o in range(out):
    start = o * stride - pad_before
    total += max(0, min(kernel, size - start) - max(0, -start))
  return total


def _unpadded_fraction(
  conv: nn.Conv, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> float:
  """Share of a conv's multiply-adds that read real input rather than zero padding."""
  sizes, outs = in_shape[1:-1], out_shape[1:-1]
  kernels = (
    conv.kernel_size
    if isinstance(conv.kernel_size, (tuple, list))
    else (conv.kernel_size,) * len(sizes)
  )
  strides = conv.strides or 1
  strides = strides if isinstance(strides, (tuple, list)) else (strides,) * len(sizes)
  if conv.padding == "VALID":
    befores = (0,) * len(sizes)
  elif conv.padding == "SAME":
    befores = tuple(
      max((o - 1) * s + k - n, 0) // 2
      for n, o, k, s in zip(sizes, outs, kernels, strides, strict=True)
    )
  elif isinstance(conv.padding, (tuple, list)):
    befores = tuple(p[0] if isinstance(p, (tuple, list)) else p for p in conv.padding)
  else:  # CIRCULAR and other modes read no zeros
    return 1.0
  fraction = 1.0
  for n, o, k, s, before in zip(sizes, outs, kernels, strides, befores, strict=True):
    fraction *= _taps_inside(n, o, k, s, before) / (o * k)
  return fraction


def layer_costs(
  module: nn.Module,
  input_shape: tuple[int, ...],
  train: bool = False,
  input_dtype: Any = jnp.float32,
) -> list[LayerCost]:
  """Cost rows of `module` applied to one input of `input_shape` (no batch dimension).

  Nothing is computed or allocated: the module is traced abstractly. With train=True, layers
  that run only in training (GoogLeNet's auxiliary heads) appear too.
  """
  calls: list[tuple[tuple[str, ...], nn.Module, tuple[int, ...], tuple[int, ...]] | None] = []

  def record(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or not context.module.path:
      return next_fun(*args, **kwargs)
    slot = len(calls)  # taken before the call, so that a layer comes before its sublayers
    calls.append(None)
    out = next_fun(*args, **kwargs)
    calls[slot] = (
      tuple(context.module.path),
      context.module,
      tuple(args[0].shape),
      tuple(getattr(out, "shape", ())),
    )
    return out

  def init(x):
    with nn.intercept_methods(record):
      return module.init(
        {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=train
      )

  x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
  params = jax.eval_shape(init, x).get("params", {})

  def subtree(path: tuple[str, ...]) -> Any:
    node = params
    for key in path:
      node = node.get(key, {}) if isinstance(node, dict) else {}
    return node

  rows: dict[str, dict[str, Any]] = {}
  for path, child, in_shape, out_shape in calls:
    if len(path) == 1 and path[0] not in rows:
      rows[path[0]] = dict(
        name=path[0],
        kind=type(child).__name__,
        patch=_patch(child),
        output_shape=out_shape[1:],
        params=sum(leaf.size for leaf in jax.tree.leaves(subtree(path))),
        macs=0,
        macs_unpadded=0,
      )
    if isinstance(child, (nn.Conv, nn.Dense)):
      macs = math.prod(out_shape[1:-1]) * subtree(path)["kernel"].size
      unpadded = (
        macs * _unpadded_fraction(child, in_shape, out_shape)
        if isinstance(child, nn.Conv)
        else macs
      )
      rows[path[0]]["macs"] += macs
      rows[path[0]]["macs_unpadded"] += round(unpadded)
  return [LayerCost(**row) for row in rows.values()]


def xla_flops(module: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> float:
  """FLOPs of the compiled inference forward pass, per image, by XLA's own cost analysis."""
  x = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
  variables = jax.eval_shape(
    lambda x: module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x), x
  )
  forward = jax.jit(lambda variables, x: module.apply(variables, x, train=False))
  analysis = forward.lower(variables, x).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"]) / batch_size
