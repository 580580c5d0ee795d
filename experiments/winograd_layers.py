"""Every 3x3 stride-1 convolution of a bench network alone: XLA's direct convolution against
Winograd's F(4x4, 3x3) (inception_jax/models/winograd.py), and PyTorch's as the peer, per pass.

`layers.ConvUnit` sends a 3x3 float32 convolution through Winograd on a CPU when its input has
`layers.WINOGRAD_MIN_CHANNELS` channels or more; this is the per-layer evidence for that rule.
Each pass is its own jitted program, as in conv_layers.py (whose helpers this reuses), under the
process's XLA_FLAGS (the project's defaults unless set).

Command (about 4 minutes for both networks on a 2-core CPU; needs the `torch` extra):
  python experiments/winograd_layers.py --out experiments/results/winograd_layers
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shlex
import sys
from typing import Any

import numpy as np
import torch
from conv_layers import PASSES, stride_one_layers, torch_passes, xla_passes
from jax import lax
from xla_cpu_flags import write_results

from inception_jax.bench.cases import NETWORKS, time_steps
from inception_jax.launch import reexecute_with_tunables
from inception_jax.models import layers
from inception_jax.training.devices import describe, describe_line

FUNCTIONS = {"direct": lax.conv_general_dilated, "Winograd": layers.winograd_convolution}


def time_network(network: str, batch: int, steps: int, warmup: int) -> list[dict[str, Any]]:
  """Median ms of each pass of each distinct 3x3 stride-1 layer: direct, Winograd, PyTorch."""
  rng = np.random.default_rng(0)
  rows = []
  for layer, count in stride_one_layers(network, batch, 3).items():
    row: dict[str, Any] = {"layer": str(layer), "count": count}
    for label, function in FUNCTIONS.items():
      passes = xla_passes(dataclasses.replace(layer, function=function), rng)
      for name, run in passes.items():
        row[f"{label} {name} ms"] = 1e3 * time_steps(run, 1, steps, warmup)["seconds_per_step"]
    for name, run in torch_passes(layer, rng).items():
      row[f"PyTorch {name} ms"] = 1e3 * time_steps(run, 1, steps, warmup)["seconds_per_step"]
    row["Winograd now"] = layer.input_shape[-1] >= layers.WINOGRAD_MIN_CHANNELS
    rows.append(row)
    print(_cells(row), flush=True)
  return rows


def _cells(row: dict[str, Any]) -> str:
  times = [
    " / ".join(f"{row[f'{label} {name} ms']:.2f}" for label in (*FUNCTIONS, "PyTorch"))
    for name in PASSES
  ]
  chosen = "Winograd" if row["Winograd now"] else "direct"
  return f"| {row['layer']} | {row['count']} | {chosen} | " + " | ".join(times) + " |"


def markdown(results: dict[str, Any]) -> str:
  lines = [
    "# 3x3 convolutions alone: direct, Winograd F(4x4, 3x3), PyTorch\n",
    f"Command: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}, torch {results['torch']}; XLA_FLAGS "
    f"`{results['xla_flags'] or '(the project defaults)'}`. Batch {results['batch']}, float32; "
    "median ms of each pass run alone (ours: one jitted XLA program per pass; PyTorch: the "
    "operator its autograd calls, channels_last). 'Used' is what `layers.ConvUnit` picks "
    f"(Winograd from {results['min_channels']} input channels).\n",
  ]
  for network in results["networks"]:
    rows = network["rows"]
    lines += [
      f"## {network['network']}\n",
      "| layer | times in network | used | forward ms (direct / Winograd / PyTorch) | "
      "weight gradient ms | input gradient ms |",
      "|---|---:|---|---:|---:|---:|",
      *(_cells(row) for row in rows),
      "",
      "Over the network's 3x3 stride-1 layers, all passes (each layer x how often it occurs):\n",
      "| layers | direct ms | Winograd ms | as used ms | PyTorch ms |",
      "|---|---:|---:|---:|---:|",
    ]
    for title, chosen in (
      ("all", rows),
      ("used with Winograd", [r for r in rows if r["Winograd now"]]),
    ):
      sums = {
        label: sum(r[f"{label} {name} ms"] * r["count"] for r in chosen for name in PASSES)
        for label in (*FUNCTIONS, "PyTorch")
      }
      used = sum(
        r[f"{'Winograd' if r['Winograd now'] else 'direct'} {name} ms"] * r["count"]
        for r in chosen
        for name in PASSES
      )
      lines.append(
        f"| {title} | {sums['direct']:.1f} | {sums['Winograd']:.1f} | {used:.1f} | "
        f"{sums['PyTorch']:.1f} |"
      )
    lines.append("")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--networks", default="torchvision224,small32")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=10, help="timed runs per pass (the median)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default="runs/winograd_layers")
  args = parser.parse_args(argv)
  unknown = [n for n in args.networks.split(",") if n not in NETWORKS]
  if unknown:
    parser.error(f"unknown networks {unknown}; choose from {sorted(NETWORKS)}")
  results = {
    "command": shlex.join(["python", "experiments/winograd_layers.py", *argv]),
    "machine": describe(),
    "torch": torch.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "batch": args.batch,
    "min_channels": layers.WINOGRAD_MIN_CHANNELS,
    "networks": [
      {"network": n, "rows": time_network(n, args.batch, args.steps, args.warmup)}
      for n in args.networks.split(",")
    ],
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  reexecute_with_tunables()  # huge pages, as the `inception-jax` command runs
  main(sys.argv[1:])
