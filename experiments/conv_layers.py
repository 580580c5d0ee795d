"""Every convolution of a bench network timed alone, ours (XLA) against PyTorch's, per pass.

The bench's profile (results/bench_cpu.md) puts most of the train step's gap to PyTorch in the
convolutions. This times each distinct convolution of the network in isolation, each pass as its
own program (XLA) or operator (PyTorch, channels_last as the bench's peer): the forward pass, the
weight gradient and the input gradient, on one core count and one batch. Summed over the layers
(times how often each occurs), it says whether the kernels themselves are behind, or the way the
step puts them together (XLA's layout copies, its running independent ops at once).

The layers are the network's nn.Conv calls (train mode: the aux heads' too), each timed with the
function the model computes it with; the first convolution's input gradient is left out, as
neither train step computes it.

Command (about 5 minutes for torchvision224 on a 2-core CPU; needs the `torch` extra):
  python experiments/conv_layers.py --out experiments/results/conv_layers
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import pathlib
import shlex
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

from inception_jax.bench.cases import NETWORKS, time_steps
from inception_jax.models import build_model, init_variables
from inception_jax.training.devices import describe, describe_line

PASSES = ("forward", "weight gradient", "input gradient")


@dataclasses.dataclass(frozen=True)
class Layer:
  """One convolution: NHWC input and HWIO kernel shapes, strides, (before, after) padding, and
  the function the model computes it with (nn.Conv's `conv_general_dilated`)."""

  input_shape: tuple[int, ...]
  kernel_shape: tuple[int, ...]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], ...]
  function: Callable[..., jax.Array]

  def __str__(self) -> str:
    n, h, w, c = self.input_shape
    kh, kw, _, out = self.kernel_shape
    stride = f" /{self.strides[0]}" if self.strides != (1, 1) else ""
    return f"{kh}x{kw} {c}->{out} at {h}x{w}{stride}"

  @property
  def flops(self) -> float:
    """Multiply-adds x 2 of one pass (each pass does the same number)."""
    n, h, w, _ = self.input_shape
    kh, kw, c, out = self.kernel_shape
    out_h, out_w = (
      (size + sum(pad) - k) // s + 1
      for size, pad, k, s in zip((h, w), self.padding, (kh, kw), self.strides, strict=True)
    )
    return 2.0 * n * out_h * out_w * kh * kw * c * out


def network_layers(network: str, batch: int) -> tuple[collections.Counter, Layer]:
  """Each distinct convolution of the network's train-mode forward pass and how often it occurs,
  and the first one (whose input is the image): every nn.Conv call, as the model makes it."""
  config = NETWORKS[network].model()
  size = NETWORKS[network].image_size
  model = build_model(config)
  layers = []

  def record(call, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Conv) and context.method_name == "__call__":
      x = args[0]
      layers.append(
        Layer(
          tuple(x.shape),
          (*module.kernel_size, x.shape[-1], module.features),
          tuple(module.strides),
          tuple(tuple(pad) for pad in module.padding),
          module.conv_general_dilated or lax.conv_general_dilated,
        )
      )
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (size, size, 3)))
  layers = [
    dataclasses.replace(layer, input_shape=(batch, *layer.input_shape[1:])) for layer in layers
  ]
  return collections.Counter(layers), layers[0]


def stride_one_layers(network: str, batch: int, kernel: int) -> collections.Counter:
  """The network's distinct stride-1 kernel x kernel convolutions, each with how often it occurs."""
  counts, _ = network_layers(network, batch)
  return collections.Counter(
    {
      layer: count
      for layer, count in counts.items()
      if layer.kernel_shape[:2] == (kernel, kernel) and layer.strides == (1, 1)
    }
  )


def xla_passes(layer: Layer, rng: np.random.Generator) -> dict[str, Callable[[], None]]:
  """Each pass of the layer as its own jitted program, as the train step's autodiff writes it."""
  x = jnp.asarray(rng.standard_normal(layer.input_shape, np.float32))
  kernel = jnp.asarray(rng.standard_normal(layer.kernel_shape, np.float32))

  def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return layer.function(
      x, kernel, layer.strides, layer.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  grad = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, kernel).shape, np.float32))
  programs = {
    "forward": (jax.jit(conv), (x, kernel)),
    "weight gradient": (
      jax.jit(lambda x, g: jax.vjp(lambda k: conv(x, k), kernel)[1](g)),
      (x, grad),
    ),
    "input gradient": (
      jax.jit(lambda k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)),
      (kernel, grad),
    ),
  }
  return waited(programs)


def waited(
  programs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]],
) -> dict[str, Callable[[], None]]:
  """Each jitted program with its arguments, as a call to time that waits for the result."""
  return {
    name: (lambda f=f, args=args: jax.block_until_ready(f(*args)))
    for name, (f, args) in programs.items()
  }


def torch_passes(layer: Layer, rng: np.random.Generator) -> dict[str, Callable[[], None]]:
  """The operators PyTorch's autograd calls for each pass, on channels_last tensors."""
  n, h, w, c = layer.input_shape
  kh, kw, _, out = layer.kernel_shape
  (top, bottom), (left, right) = layer.padding
  assert top == bottom and left == right, "PyTorch pads symmetrically"
  x = torch.from_numpy(rng.standard_normal((n, c, h, w), np.float32))
  x = x.to(memory_format=torch.channels_last)
  weight = torch.from_numpy(rng.standard_normal((out, c, kh, kw), np.float32))
  weight = weight.to(memory_format=torch.channels_last)
  options = {"stride": list(layer.strides), "padding": [top, left], "dilation": [1, 1]}
  y = torch.nn.functional.conv2d(x, weight, **options)
  grad = torch.randn_like(y)

  def backward(mask: list[bool]) -> Callable[[], None]:
    return lambda: torch.ops.aten.convolution_backward(
      grad,
      x,
      weight,
      None,
      **options,
      transposed=False,
      output_padding=[0, 0],
      groups=1,
      output_mask=mask,
    )

  def forward() -> None:
    with torch.no_grad():
      torch.nn.functional.conv2d(x, weight, **options)

  return {
    "forward": forward,
    "weight gradient": backward([False, True, False]),
    "input gradient": backward([True, False, False]),
  }


def time_layers(network: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
  """Median milliseconds of each pass of each distinct layer, ours and PyTorch's."""
  counts, first = network_layers(network, batch)
  rng = np.random.default_rng(0)
  rows = []
  for layer, count in counts.items():
    row = {
      "layer": str(layer),
      "ours computes": _name(layer.function),
      "count": count,
      "gflop": layer.flops / 1e9,
      "first": layer == first,
    }
    for framework, passes in (("ours", xla_passes), ("pytorch", torch_passes)):
      for name, run in passes(layer, rng).items():
        if name == "input gradient" and layer == first:
          continue
        row[f"{framework} {name} ms"] = 1e3 * time_steps(run, 1, steps, warmup)["seconds_per_step"]
    rows.append(row)
    print(_cells(row), flush=True)
  return {"network": network, "batch": batch, "threads": torch.get_num_threads(), "rows": rows}


def _name(function: Callable[..., Any]) -> str:
  if function is lax.conv_general_dilated:
    return "lax.conv_general_dilated"
  return f"{function.__module__}.{function.__name__}"


def _cells(row: dict[str, Any]) -> str:
  times = [
    " / ".join(f"{row[f'{framework} {name} ms']:.2f}" for framework in ("ours", "pytorch"))
    if f"ours {name} ms" in row
    else "-"
    for name in PASSES
  ]
  return (
    f"| {row['layer']} | `{row['ours computes']}` | {row['count']} | {row['gflop']:.2f} | "
    + " | ".join(times)
    + " |"
  )


def markdown(results: dict[str, Any]) -> str:
  """Per-layer table (ours / PyTorch ms per pass) and the totals over the network's layers."""
  rows = results["rows"]
  lines = [
    f"# Convolutions alone: ours against PyTorch's\n\nCommand: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}, torch {results['torch']} "
    f"({results['threads']} threads). {results['network']}, batch {results['batch']}, float32; "
    "median ms of each pass run alone (ours: one jitted XLA program per pass; PyTorch: the "
    "operator its autograd calls, channels_last). The first layer's input gradient is not "
    "computed by either train step.\n",
    "| layer | ours computes it with | times in network | GFLOP per pass | forward ms (ours / "
    "PyTorch) | weight gradient ms | input gradient ms |",
    "|---|---|---:|---:|---:|---:|---:|",
    *(_cells(row) for row in rows),
    "",
    "Over the network (each layer's time x how often it occurs):\n",
    "| pass | ours ms | PyTorch ms | ours / PyTorch time |",
    "|---|---:|---:|---:|",
  ]
  totals = {"ours": 0.0, "pytorch": 0.0}
  for name in PASSES:
    sums = {
      framework: sum(row.get(f"{framework} {name} ms", 0.0) * row["count"] for row in rows)
      for framework in totals
    }
    ratio = sums["ours"] / sums["pytorch"]
    lines.append(f"| {name} | {sums['ours']:.1f} | {sums['pytorch']:.1f} | {ratio:.2f} |")
    totals = {framework: totals[framework] + sums[framework] for framework in totals}
  lines.append(
    f"| all | {totals['ours']:.1f} | {totals['pytorch']:.1f} | "
    f"{totals['ours'] / totals['pytorch']:.2f} |"
  )
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--network", default="torchvision224", choices=sorted(NETWORKS))
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=10, help="timed runs per pass (the median)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default="runs/conv_layers", help="results go to OUT.json and OUT.md")
  args = parser.parse_args(argv)
  results = {
    "command": shlex.join(["python", "experiments/conv_layers.py", *argv]),
    "machine": describe(),
    "torch": torch.__version__,
    **time_layers(args.network, args.batch, args.steps, args.warmup),
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
  report = markdown(results)
  out.with_suffix(".md").write_text(report)
  print(report)


if __name__ == "__main__":
  main(sys.argv[1:])
