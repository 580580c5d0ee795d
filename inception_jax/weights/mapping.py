"""Which tensor of a published GoogLeNet file fills which array of ours, converted.

Our layers are enumerated from the resolved GoogLeNet, so the mapping follows the config; each
source names them its own way (torchvision's state-dict keys, BVLC's caffemodel layer names).
Conventions converted: conv weights [out, in, kh, kw] -> kernels [kh, kw, in, out], linear
weights [out, in] -> [in, out], and the aux heads' first linear layer, which both sources feed
features flattened channel-major (C, H, W) where ours are flattened as (H, W, C).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from inception_jax.errors import ConfigError, listed
from inception_jax.models.branch import Conv
from inception_jax.models.googlenet import GoogLeNet

MAX_LISTED = 4  # per kind of problem

# Our leaf (collection, sub-path) -> the source's tensor suffix, per kind of layer.
Leaves = dict[tuple[str, ...], str]


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of ours with parameters, and its source-independent position in GoogLeNet.

  role: ("stem", i) for conv1, conv2's reduction and conv2; ("module", name, branch, step,
  steps in the branch); ("aux", k, "conv" | "fc1" | "fc2") for the k-th aux head;
  ("classifier",).
  """

  path: tuple[str, ...]
  kind: str  # "conv" (a ConvUnit) or "dense"
  role: tuple[Any, ...]


def layers(model: GoogLeNet) -> list[Layer]:
  """Every layer of `model` that holds parameters, in the order the network runs them."""
  found = [
    Layer(("conv1",), "conv", ("stem", 0)),
    Layer(("conv2", "conv0"), "conv", ("stem", 1)),
    Layer(("conv2", "conv1"), "conv", ("stem", 2)),
  ]
  for name, branches in model.inception:
    for b, spec in enumerate(branches):
      found += [
        Layer((name, f"branch{b}", f"conv{s}"), "conv", ("module", name, b, s, len(spec)))
        for s, step in enumerate(spec)
        if isinstance(step, Conv)
      ]
    if name in model.aux_from:
      head = f"aux_{name.rsplit('_', 1)[-1]}"
      k = model.aux_from.index(name)
      found += [
        Layer((head, "conv"), "conv", ("aux", k, "conv")),
        Layer((head, "fc1"), "dense", ("aux", k, "fc1")),
        Layer((head, "fc2"), "dense", ("aux", k, "fc2")),
      ]
  return found + [Layer(("classifier",), "dense", ("classifier",))]


@dataclasses.dataclass(frozen=True)
class Naming:
  """How one source names our layers and their tensors."""

  layer_name: Callable[[tuple[Any, ...]], str]
  conv_leaves: Leaves
  ignored_suffixes: tuple[str, ...] = ()  # tensors the source has and we do not need

  def keys(self, layer: Layer) -> dict[tuple[str, ...], str]:
    """Our leaf ('params' | 'batch_stats', *path, leaf) -> the source's tensor name."""
    leaves = self.conv_leaves if layer.kind == "conv" else _DENSE
    name = self.layer_name(layer.role)
    return {
      (collection, *layer.path, *rest): f"{name}{suffix}"
      for (collection, *rest), suffix in leaves.items()
    }


_DENSE = {("params", "kernel"): ".weight", ("params", "bias"): ".bias"}


def _torchvision_layer(role: tuple[Any, ...]) -> str:
  kind, *where = role
  if kind == "stem":
    return ("conv1", "conv2", "conv3")[where[0]]
  if kind == "module":
    name, branch, step, steps = where
    return f"inception{name.rsplit('_', 1)[-1]}.branch{branch + 1}" + (
      f".{step}" if steps > 1 else ""
    )
  if kind == "aux":
    return f"aux{where[0] + 1}.{where[1]}"
  return "fc"


# BVLC's deploy.prototxt names the layers of an Inception module by their kernel.
_BVLC_BRANCH_STEPS = {
  (0, 0): "1x1",
  (1, 0): "3x3_reduce",
  (1, 1): "3x3",
  (2, 0): "5x5_reduce",
  (2, 1): "5x5",
  (3, 1): "pool_proj",
}


def _bvlc_layer(role: tuple[Any, ...]) -> str:
  kind, *where = role
  if kind == "stem":
    return ("conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3")[where[0]]
  if kind == "module":
    name, branch, step, _ = where
    return f"{name}/{_BVLC_BRANCH_STEPS.get((branch, step), f'branch{branch}_step{step}')}"
  if kind == "aux":
    return f"loss{where[0] + 1}/" + {"conv": "conv", "fc1": "fc", "fc2": "classifier"}[where[1]]
  return "loss3/classifier"


NAMINGS = {
  # torchvision's BasicConv2d: a bias-free conv, then BatchNorm.
  "torchvision": Naming(
    _torchvision_layer,
    {
      ("params", "conv", "kernel"): ".conv.weight",
      ("params", "bn", "scale"): ".bn.weight",
      ("params", "bn", "bias"): ".bn.bias",
      ("batch_stats", "bn", "mean"): ".bn.running_mean",
      ("batch_stats", "bn", "var"): ".bn.running_var",
    },
    ignored_suffixes=(".num_batches_tracked",),
  ),
  # Caffe: a conv with a bias (blobs [weight, bias], read as LAYER.weight and LAYER.bias).
  "bvlc": Naming(
    _bvlc_layer, {("params", "conv", "kernel"): ".weight", ("params", "conv", "bias"): ".bias"}
  ),
}


def aux_prefixes(naming: Naming, count: int = 2) -> tuple[str, ...]:
  """The name prefixes of the aux heads' tensors, to tell whether a file has them."""
  return tuple(naming.layer_name(("aux", k, "conv"))[: -len("conv")] for k in range(count))


def _source_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape the source stores one of our arrays in: [out, in, kh, kw] convs, [out, in] linear."""
  if leaf == "kernel":
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
  return shape


def _convert(leaf: str, value: np.ndarray, channel_major_from: int) -> np.ndarray:
  """A source tensor (already of `_source_shape`) in our layout, float32."""
  value = np.asarray(value, np.float32)
  if leaf != "kernel":
    return value
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if channel_major_from:  # (C, H, W)-ordered inputs -> (H, W, C)
    outputs, inputs = value.shape
    side = math.isqrt(inputs // channel_major_from)
    value = value.reshape(outputs, channel_major_from, side, side).transpose(0, 2, 3, 1)
    value = value.reshape(outputs, inputs)
  return value.T


def _strip_leading_ones(value: np.ndarray, ndim: int) -> np.ndarray:
  """Caffe's legacy 4-D blobs: a linear layer's [1, 1, out, in], a bias's [1, 1, 1, out]."""
  value = np.asarray(value)
  while value.ndim > ndim and value.shape[0] == 1:
    value = value[0]
  return value


def to_variables(
  tensors: Mapping[str, np.ndarray],
  model: GoogLeNet,
  expected: Mapping[str, Any],
  naming: Naming,
  what: str,
) -> dict[str, Any]:
  """Our `params` and `batch_stats` for `model` from a source's tensors.

  `expected` is the model's variables (or their shapes). Every array of ours must be found with
  the shape it needs and every tensor of the file must be used; otherwise one ConfigError lists
  the missing, misshaped and unknown tensors, naming `what` was read.
  """
  sources = {}  # our leaf -> (the source's tensor name, channel count of channel-major inputs)
  for layer in layers(model):
    channel_major = model.aux_widths[0] if layer.role[-1:] == ("fc1",) else 0
    sources.update({path: (key, channel_major) for path, key in naming.keys(layer).items()})
  converted, used = {}, set()
  missing, misshaped = [], []
  wanted = {path: tuple(leaf.shape) for path, leaf in flatten_dict(expected).items()}
  for path in [*(p for p in sources if p in wanted), *(p for p in wanted if p not in sources)]:
    ours, shape = "/".join(path[1:]), wanted[path]  # in the network's order
    key, channel_major = sources.get(path, (None, 0))
    if key is None or key not in tensors:
      missing.append(f"{key or ours}: {_source_shape(path[-1], shape)} needed for {ours}")
      continue
    used.add(key)
    value = _strip_leading_ones(tensors[key], len(shape))
    if value.shape != _source_shape(path[-1], shape):
      misshaped.append(
        f"{key}: {tuple(np.shape(tensors[key]))} in the file, "
        f"{_source_shape(path[-1], shape)} needed for {ours}"
      )
      continue
    converted[path] = _convert(path[-1], value, channel_major)
  unknown = [
    f"{key}: {tuple(np.shape(tensors[key]))}"
    for key in sorted(tensors)
    if key not in used and not key.endswith(naming.ignored_suffixes)
  ]
  if missing or misshaped or unknown:
    groups = [
      (f"{len(misshaped)} with another shape", misshaped),
      (f"{len(missing)} of the network's {len(sources)} missing", missing),
      (f"{len(unknown)} of the file's {len(tensors)} not part of this network", unknown),
    ]
    problems = "".join(f"\n{title}:{listed(lines, MAX_LISTED)}" for title, lines in groups if lines)
    raise ConfigError(
      f"{what} does not match the configured network. Tensors{problems}\nIs it the right "
      f"file, and the config the network it holds? Nothing was written."
    )
  return unflatten_dict(converted)
