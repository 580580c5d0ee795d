"""Compile-time options: the first step of configs/default.py against what they cost at run time.

A first run of the README's main job spends most of its first step compiling the train step
(XLA: HLO passes, then LLVM on every fusion). Each variant below lowers XLA's or LLVM's effort;
each runs in its own processes with its own environment and an empty compilation cache:
  - `inception-jax train --config configs/default.py` for 66 steps: the seconds to the first
    step's end (the progress line "First step done": dataset, train state and compiling, the
    last two at once since 2026-11-26) and the median train images/s;
  - `inception-jax bench` on the 224x224 float32 train step, batch 16: compile seconds and
    images/s, what the option costs where compiling is a small part of a run.
The options that pay are set by default in inception_jax/xla_flags.py; "project defaults" is
that choice.

Command (about 12 minutes on a 2-core CPU; report: experiments/results/compile_time.md):
  python experiments/compile_time.py --out experiments/results/compile_time
Writes OUT.json and OUT.md; each variant's own output goes under --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
from typing import Any

from xla_cpu_flags import run_variant, write_results

from inception_jax.training.devices import describe_line

# label -> environment: XLA_FLAGS (added to the project's defaults) and JAX options.
VARIANTS: dict[str, dict[str, str]] = {
  "project defaults": {},
  "LLVM -O1": {"XLA_FLAGS": "--xla_backend_optimization_level=1"},
  "LLVM -O0": {"XLA_FLAGS": "--xla_backend_optimization_level=0"},
  "LLVM without expensive passes": {"XLA_FLAGS": "--xla_llvm_disable_expensive_passes=true"},
  # XLA's CPU backend reads these from xla_backend_extra_options, not as flags of their own.
  "LLVM loops not unrolled": {
    "XLA_FLAGS": "--xla_backend_extra_options=xla_cpu_disable_loop_unrolling"
  },
  "LLVM optimising for size": {
    "XLA_FLAGS": "--xla_backend_extra_options=xla_cpu_optimize_for_size"
  },
  "JAX optimization level O1": {"JAX_OPTIMIZATION_LEVEL": "O1"},
  "JAX optimization level O0": {"JAX_OPTIMIZATION_LEVEL": "O0"},
  "exec-time effort -1": {"JAX_EXEC_TIME_OPTIMIZATION_EFFORT": "-1.0"},
}
TRAIN_OVERRIDES = {
  "num_train_steps": "66",
  "log_every_steps": "11",
  "eval_every_steps": "66",
  "checkpoint_every_steps": "66",
}
BENCH_ARGS = [
  "--networks",
  "torchvision224",
  "--dtypes",
  "float32",
  "--batch-sizes",
  "16",
  "--modes",
  "train",
  "--steps",
  "3",
  "--warmup",
  "1",
]
FIRST_STEP = re.compile(r"First step done ([0-9.]+)s")


def first_step(env: dict[str, str], workdir: pathlib.Path) -> dict[str, float]:
  """The digits run's first step (seconds) and median train images/s, from an empty cache."""
  command = [sys.executable, "-m", "inception_jax.main", "train", "--config", "configs/default.py"]
  command += ["--workdir", str(workdir / "run")]
  command += [f"--config.{key}={value}" for key, value in TRAIN_OVERRIDES.items()]
  env = {**env, "JAX_COMPILATION_CACHE_DIR": str(workdir / "cache")}
  output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  records = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").open()]
  speeds = [r["images_per_second"] for r in records if r["split"] == "train"][1:]
  evals = [r for r in records if r["split"] == "eval"]
  return {
    "first_step_seconds": float(FIRST_STEP.search(output).group(1)),
    "images_per_second": statistics.median(speeds),
    "top1": evals[-1]["top1"],
  }


def markdown(results: dict[str, Any]) -> str:
  """One row per variant: its environment, the digits' first step and speed, the 224 step's
  compile time and speed, each speed also as a ratio to the project defaults'."""
  base = results["variants"][0]
  lines = [
    f"# Compile time against run time\n\nCommand: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}. Each variant from an empty compilation "
    "cache. Digits: `configs/default.py`, 66 steps; 224: the bench's torchvision224 float32 "
    "train step, batch 16 (compile = lowering and compiling).\n",
    "| variant | environment | digits first step s | digits train img/s | digits top-1 at 66 "
    "| 224 compile s | 224 train img/s |",
    "|---|---|---:|---:|---:|---:|---:|",
  ]
  for variant in results["variants"]:
    digits, bench = variant["digits"], variant["bench"]
    environment = " ".join(f"{k}={v}" for k, v in variant["env"].items()) or "(none)"
    lines.append(
      f"| {variant['label']} | `{environment}` | {digits['first_step_seconds']:.1f} "
      f"| {digits['images_per_second']:.0f} "
      f"({digits['images_per_second'] / base['digits']['images_per_second']:.2f}x) "
      f"| {100 * digits['top1']:.2f}% | {bench['compile_seconds']:.1f} "
      f"| {bench['images_per_second']:.2f} "
      f"({bench['images_per_second'] / base['bench']['images_per_second']:.2f}x) |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/compile_time", help="results: OUT.json, OUT.md")
  parser.add_argument("--runs", default="runs/compile_time_runs", help="each variant's output")
  args = parser.parse_args(argv)
  variants = []
  for index, (label, env) in enumerate(VARIANTS.items()):
    print(f"== {label}: {env}", flush=True)
    workdir = pathlib.Path(args.runs) / f"variant{index}"
    if workdir.exists():
      sys.exit(f"{workdir} exists; remove it or choose another --runs (nothing was changed).")
    full_env = {**os.environ, **env}
    digits = first_step(full_env, workdir)
    (bench,) = run_variant(env.get("XLA_FLAGS", ""), workdir / "bench", BENCH_ARGS, env)["rows"]
    print(f"   digits {digits}, 224 {bench['compile_seconds']:.1f}s", flush=True)
    variants.append({"label": label, "env": env, "digits": digits, "bench": bench})
  results = {
    "command": shlex.join(["python", "experiments/compile_time.py", *argv]),
    "machine": json.loads((workdir / "bench" / "bench.json").read_text())["machine"],
    "variants": variants,
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  main(sys.argv[1:])
