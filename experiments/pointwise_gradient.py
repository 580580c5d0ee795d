"""The 1x1 convolutions' weight gradient: XLA's kernels against PyTorch's, then in the train step.

conv_layers.md puts most of the CPU train step's gap to PyTorch in the weight gradients of the
1x1 convolutions (2-8x PyTorch's time each, alone). A 1x1 weight gradient is one matrix product
over the batch's pixels, dW = X^T dY with X (pixels x in) and dY (pixels x out) in NHWC: both
operands are contracted over their major dimension (a "TN" product). This script asks where that
loses and whether another formulation pays in the step:

1. Each distinct 1x1 layer of a bench network, its weight gradient alone (median ms, the
   formulations interleaved round by round): XLA's convolution (what autodiff of a plain nn.Conv
   gives), the TN product (`dot_general` over the pixels), the model's (a transposed copy of X,
   then the product: `layers.pointwise_convolution`), the product alone on an X already stored
   transposed (NN), the copy alone, PyTorch's `convolution_backward` and its TN `matmul`.
2. The train step with each formulation of the 1x1 convolutions (installed with
   `nn.intercept_methods` on the model's own variables), all compiled in one process and one
   step of each per turn in a seeded random order; a second copy of the model's step is the A/A
   control. Ratios as in paired_steps.py (median of paired ratios, bootstrap interval, Wilcoxon
   p).

Command (2-core CPU, about 6 minutes for small32; needs the `torch` extra):
  python experiments/pointwise_gradient.py --network small32 \\
    --out experiments/results/pointwise_gradient_small32
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from conv_layers import Layer, stride_one_layers, torch_passes, waited
from jax import lax
from paired_steps import paired_ratio, ratio_cells, take_turns
from xla_cpu_flags import write_results

from inception_jax.bench.cases import NETWORKS, Case, time_steps
from inception_jax.bench.ours import time_ours
from inception_jax.launch import reexecute_with_tunables
from inception_jax.models.layers import pointwise_convolution, with_weight_gradient
from inception_jax.training.devices import describe_line

NHWC = ("NHWC", "HWIO", "NHWC")
MAIN = "the model's: weight gradient as NN on a transposed copy"


def _convolution(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel[None, None], (1, 1), "VALID", dimension_numbers=NHWC)


def _pixels(a: jax.Array) -> jax.Array:
  return a.reshape(-1, a.shape[-1])


def _tn_product(x: jax.Array, dy: jax.Array) -> jax.Array:
  return lax.dot_general(_pixels(x), _pixels(dy), (((0,), (0,)), ((), ())))


def _tn_weight_gradient(convolve, x: jax.Array, kernel: jax.Array, dy: jax.Array) -> jax.Array:
  return _tn_product(x, dy).reshape(kernel.shape).astype(kernel.dtype)


def _model_convolution(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The model's 1x1 convolution (its weight gradient on a CPU: a transposed copy of X, then
  the product)."""
  return pointwise_convolution(x, kernel[None, None], (1, 1), "VALID", dimension_numbers=NHWC)


def _tn_convolution(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """XLA's convolution, with the weight gradient as the TN product."""
  convolve = functools.partial(
    lax.conv_general_dilated, window_strides=(1, 1), padding="VALID", dimension_numbers=NHWC
  )
  return with_weight_gradient(convolve, _tn_weight_gradient, x, kernel[None, None])


def _as_product(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The whole 1x1 convolution as a product over the pixels, every pass by autodiff."""
  return lax.dot_general(x, kernel, (((3,), (0,)), ((), ())))


# Each formulation computes a 1x1, stride-1 convolution from x (NHWC) and its kernel (in x out);
# None is the model's own (layers.pointwise_convolution).
FORMULATIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array] | None] = {
  MAIN: None,
  "XLA's convolution, gradient by autodiff (before)": _convolution,
  "weight gradient as the TN product": _tn_convolution,
  "whole convolution as a product": _as_product,
}


def _interceptor(formulation: Callable[[jax.Array, jax.Array], jax.Array]):
  """Computes every 1x1, stride-1 nn.Conv call with `formulation` on the module's own
  variables (so checkpoints and initialisation are the model's)."""

  def intercept(call, args, kwargs, context):
    module = context.module
    pointwise = (
      isinstance(module, nn.Conv)
      and context.method_name == "__call__"
      and tuple(module.kernel_size) == (1, 1)
      and tuple(module.strides or (1, 1)) == (1, 1)
      and not module.is_initializing()
    )
    if not pointwise:
      return call(*args, **kwargs)
    kernel = module.get_variable("params", "kernel")[0, 0]
    y = formulation(args[0].astype(module.dtype), kernel.astype(module.dtype))
    if module.use_bias:
      y = y + module.get_variable("params", "bias").astype(module.dtype)
    return y

  return intercept


def _kernels(layer: Layer, rng: np.random.Generator) -> dict[str, Callable[[], None]]:
  """The layer's weight gradient in each formulation, XLA's and PyTorch's, as calls to time."""
  n, h, w, c_in = layer.input_shape
  c_out = layer.kernel_shape[-1]
  x = rng.standard_normal(layer.input_shape, np.float32)
  dy = rng.standard_normal((n, h, w, c_out), np.float32)
  kernel = jnp.zeros((c_in, c_out), jnp.float32)
  x_stored_transposed = jnp.asarray(np.ascontiguousarray(x.reshape(-1, c_in).T))
  jx, jdy = jnp.asarray(x), jnp.asarray(dy)

  def weight_gradient(pointwise):
    return jax.jit(lambda x, dy: jax.vjp(lambda k: pointwise(x, k), kernel)[1](dy)[0])

  xla = {
    "XLA convolution": (weight_gradient(_convolution), (jx, jdy)),
    "XLA TN product": (jax.jit(_tn_product), (jx, jdy)),
    "XLA transposed copy + NN (the model's)": (weight_gradient(_model_convolution), (jx, jdy)),
    "XLA NN on X stored transposed": (
      jax.jit(lambda xt, dy: xt @ _pixels(dy)),
      (x_stored_transposed, jdy),
    ),
    "XLA transposed copy alone": (jax.jit(lambda x: lax.optimization_barrier(_pixels(x).T)), (jx,)),
  }
  calls = waited(xla)
  calls["PyTorch convolution_backward"] = torch_passes(layer, rng)["weight gradient"]
  px, pdy = torch.from_numpy(x.reshape(-1, c_in)), torch.from_numpy(dy.reshape(-1, c_out))
  calls["PyTorch TN matmul"] = lambda: px.T @ pdy
  return calls


def time_kernels(network: str, batch: int, steps: int, rounds: int) -> list[dict[str, Any]]:
  """Median ms of each weight-gradient call per distinct 1x1 layer, the calls interleaved:
  each round times every call `steps` times, the figure is the median of the rounds'."""
  rng = np.random.default_rng(0)
  rows = []
  for layer, count in stride_one_layers(network, batch, 1).items():
    calls = _kernels(layer, rng)
    per_round: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
      for name, call in calls.items():
        per_round[name].append(1e3 * time_steps(call, 1, steps, 1)["seconds_per_step"])
    row = {"layer": str(layer), "count": count, "gflop": layer.flops / 1e9}
    row.update({name: statistics.median(times) for name, times in per_round.items()})
    rows.append(row)
    print(row, flush=True)
  return rows


def time_formulations(network: str, batch: int, pairs: int) -> dict[str, Any]:
  """The train step with each formulation, and the model's a second time (the A/A control),
  compiled in this process and stepped in turn in a seeded random order."""
  case = Case(network, "float32", batch, "train")
  steps = {}
  for label, formulation in {**FORMULATIONS, "the model's again (A/A)": None}.items():
    if formulation is None:
      _, steps[label] = time_ours(case, steps=1, warmup=1)
    else:
      with nn.intercept_methods(_interceptor(formulation)):
        _, steps[label] = time_ours(case, steps=1, warmup=1)

  def timed(step: Callable[[], None]) -> Callable[[], float]:
    def run() -> float:
      start = time.perf_counter()
      step()
      return time.perf_counter() - start

    return run

  # No pause between steps: one process, one thread pool, nothing to settle.
  turns = take_turns([timed(step) for step in steps.values()], pairs, pause=0.0)
  times = dict(zip(steps, turns, strict=True))
  return {
    "images_per_second": {label: batch / statistics.median(t) for label, t in times.items()},
    "ratio_to_main": {
      label: paired_ratio(times[MAIN], t) for label, t in times.items() if label != MAIN
    },
    "times": times,
  }


def markdown(results: dict[str, Any]) -> str:
  rows = results["kernels"]
  names = [key for key in rows[0] if key not in ("layer", "count", "gflop")]
  lines = [
    f"# The 1x1 convolutions' weight gradient\n\nCommand: `{results['command']}`\n",
    f"Machine: {results['machine']}; torch {results['torch']} ({results['threads']} threads). "
    f"{results['network']}, batch {results['batch']}, float32.\n",
    "## Alone: each distinct 1x1 layer's weight gradient, median ms\n",
    "| layer | times | " + " | ".join(names) + " |",
    "|---|---:|" + "---:|" * len(names),
    *(
      f"| {row['layer']} | {row['count']} | "
      + " | ".join(f"{row[name]:.2f}" for name in names)
      + " |"
      for row in rows
    ),
    "| **over the network** | | "
    + " | ".join(f"**{sum(row[name] * row['count'] for row in rows):.1f}**" for name in names)
    + " |",
    "",
    f"## In the train step: {results['pairs']} steps of each, in turn\n",
    "| formulation of the 1x1 convolutions | img/s | speed vs main | 95% interval | p |",
    "|---|---:|---:|---|---:|",
  ]
  step = results["step"]
  for label, speed in step["images_per_second"].items():
    lines.append(f"| {label} | {speed:.2f} | {ratio_cells(step['ratio_to_main'].get(label))} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--network", default="small32", choices=sorted(NETWORKS))
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=10, help="timed calls per kernel and round")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the kernels")
  parser.add_argument("--pairs", type=int, default=20, help="train steps of each formulation")
  parser.add_argument("--out", default="runs/pointwise_gradient")
  args = parser.parse_args(argv)
  results = {
    "command": shlex.join(["python", "experiments/pointwise_gradient.py", *argv]),
    "machine": describe_line(),
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "network": args.network,
    "batch": args.batch,
    "pairs": args.pairs,
    "kernels": time_kernels(args.network, args.batch, args.steps, args.rounds),
    "step": time_formulations(args.network, args.batch, args.pairs),
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  reexecute_with_tunables()
  main(sys.argv[1:])
