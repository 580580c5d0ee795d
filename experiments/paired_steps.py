"""XLA options (and PyTorch) compared step by step, in turn, so that the machine's drift cancels.

On a shared 2-core machine the same process timed twice a few minutes apart moves by 10-30%, more
than most options change, and XLA reads XLA_FLAGS once per process, so options cannot be timed in
one process. Here each variant is a worker process with its own XLA_FLAGS that compiles one step
and then waits; the driver asks the workers for one step each in turn, many times over, so that
neighbouring steps of two variants ran on the same machine state. Each turn's order is a fresh
(seeded) random permutation: with the order rotated instead, the same worker always came right
after PyTorch's, and the variant listed first was the slowest in all five runs with `--torch`
(both of its processes), whichever options it had (xla_cpu_flags.md).
The report gives each variant's median images/s and, against the first variant, the median of the
paired ratios with a 95% confidence interval and a Wilcoxon signed-rank p-value (scipy).

Each variant runs in `--processes` worker processes (default 2): a process keeps its speed for
its life and two of the same program have differed by up to 5%, so one process per variant
measures that luck as much as the options. Command (2-core CPU, about 10 minutes for three
variants, two processes each, and two networks):
  python experiments/paired_steps.py --networks torchvision224,small32 --pairs 25 \\
    --variant "project defaults=" --variant "oneDNN=--xla_cpu_use_onednn=true" --torch \\
    --out experiments/results/paired_steps
With six or more workers alive, glibc's huge pages for each step's fresh block get slow (the
kernel looks for free 2 MiB pages among all their memory; host_memory.md): the images/s are then
below the bench's, and only the ratios between variants compare like with like.
`--variant LABEL=XLA_FLAGS` (empty flags: the project's defaults, inception_jax/xla_flags.py;
given twice under two labels, an A/A control: the spread of two identical variants); `--torch`
adds the PyTorch eager peer as a variant. `--checkout LABEL=PATH` runs that variant's workers on
the package in another checkout (a `git worktree` of the commit before a change), so that a change
to the code is paired like an option:
  git worktree add /tmp/before HEAD~1
  python experiments/paired_steps.py --variant "before=" --checkout before=/tmp/before \\
    --variant "after=" --variant "after, again=" --processes 1 --out runs/paired_change
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from xla_cpu_flags import write_results

from inception_jax.launch import reexecute_with_tunables

PYTORCH = "PyTorch eager"
# Between two workers' steps, for the last one's threads to go idle; the step right after
# PyTorch's still ran slower with it, hence the random order (module docstring).
PAUSE_SECONDS = 0.2


def worker(network: str, mode: str, dtype: str, batch: int, framework: str) -> None:
  """Compiles one step, says "ready", then runs a step for every line read and answers its
  seconds: the worker side of the protocol, in its own process with its own XLA_FLAGS."""
  from inception_jax.bench.cases import Case

  case = Case(network, dtype, batch, mode)
  if framework == "pytorch":
    from inception_jax.bench.theirs import time_theirs

    _, step = time_theirs(case, "eager", steps=1, warmup=1)
  else:
    from inception_jax.bench.ours import time_ours

    _, step = time_ours(case, steps=1, warmup=1)
  print("ready", flush=True)
  for _ in sys.stdin:
    start = time.perf_counter()
    step()
    print(time.perf_counter() - start, flush=True)


class Worker:
  """A worker process, driven line by line."""

  def __init__(
    self, label: str, flags: str | None, case_args: list[str], checkout: str | None = None
  ) -> None:
    framework = "pytorch" if flags is None else "ours"
    env = dict(os.environ)
    if flags is not None:
      env["XLA_FLAGS"] = flags
    if checkout is not None:  # its package first on the path, ahead of the installed one
      env["PYTHONPATH"] = os.pathsep.join([checkout, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, __file__, "--worker", *case_args, framework]
    self.label = label
    self.process = subprocess.Popen(
      command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    if self.process.stdout.readline().strip() != "ready":
      raise RuntimeError(f"worker {label!r} failed before its first step (its stderr is above)")

  def step(self) -> float:
    self.process.stdin.write("step\n")
    self.process.stdin.flush()
    return float(self.process.stdout.readline())

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def paired_ratio(base: list[float], other: list[float]) -> dict[str, float]:
  """Speed of `other` over `base` from paired step times: median ratio, its bootstrap 95%
  interval, and the Wilcoxon signed-rank p-value of the log ratios against zero."""
  ratios = np.asarray(base) / np.asarray(other)
  interval = stats.bootstrap(
    (ratios,), np.median, confidence_level=0.95, random_state=0, method="percentile"
  ).confidence_interval
  return {
    "median": float(np.median(ratios)),
    "low": float(interval.low),
    "high": float(interval.high),
    "p_value": float(stats.wilcoxon(np.log(ratios)).pvalue),
  }


def take_turns(
  steps: Sequence[Callable[[], float]], pairs: int, pause: float = PAUSE_SECONDS
) -> list[list[float]]:
  """Each of `steps` (a call that runs one step and returns its seconds) once per turn, in a
  fresh seeded random order each turn, `pairs` turns; each step's seconds, turn by turn."""
  times: list[list[float]] = [[] for _ in steps]
  order = np.random.default_rng(0)
  for _ in range(pairs):
    for index in order.permutation(len(steps)):
      time.sleep(pause)
      times[index].append(steps[index]())
  return times


def ratio_cells(ratio: dict[str, float] | None) -> str:
  """Table cells of a paired ratio (speed, interval, p); the baseline's when None."""
  if ratio is None:
    return "1 | - | -"
  return f"{ratio['median']:.3f}x | {ratio['low']:.3f}-{ratio['high']:.3f} | {ratio['p_value']:.2g}"


def time_network(
  network: str, args: argparse.Namespace, variants: dict[str, str | None]
) -> dict[str, Any]:
  """Every variant's step times for one network, taken in turn, and their ratios to the first.

  Each variant runs in `args.processes` worker processes, interleaved with the other variants'
  in a random order each turn (the module's docstring says why); a turn's time of a variant is
  the mean over its processes' steps in that turn."""
  case_args = [network, args.mode, args.dtype, str(args.batch)]
  workers = [
    Worker(label, flags, case_args, args.checkouts.get(label))
    for _ in range(args.processes)
    for label, flags in variants.items()
  ]
  try:
    process_times = take_turns([worker_.step for worker_ in workers], args.pairs)
  finally:
    for worker_ in workers:
      worker_.close()
  per_variant = {
    label: [
      times for worker_, times in zip(workers, process_times, strict=True) if worker_.label == label
    ]
    for label in variants
  }
  times = {label: np.mean(runs, axis=0).tolist() for label, runs in per_variant.items()}
  base = next(iter(times.values()))
  return {
    "network": network,
    "times": times,
    "process_times": per_variant,
    "images_per_second": {
      label: args.batch / statistics.median(seconds) for label, seconds in times.items()
    },
    "process_images_per_second": {
      label: [args.batch / statistics.median(run) for run in runs]
      for label, runs in per_variant.items()
    },
    "ratio_to_first": {
      label: paired_ratio(base, seconds) for label, seconds in list(times.items())[1:]
    },
  }


def markdown(results: dict[str, Any]) -> str:
  first = next(iter(results["variants"]))
  lines = [
    f"# Paired steps\n\nCommand: `{results['command']}`\n",
    f"Machine: {results['machine']}. {results['case']}; each variant in "
    f"{results.get('processes', 1)} worker process(es), {results['pairs']} steps of each process, "
    "taken in turn; img/s from the median step (each process's own in brackets). Ratio: the "
    "median over the turns of the first variant's step time over this variant's "
    f"({first}), with its 95% bootstrap interval and the Wilcoxon signed-rank p-value.\n",
    "| network | variant | XLA_FLAGS | img/s | speed vs first | 95% interval | p |",
    "|---|---|---|---|---:|---|---:|",
  ]
  for row in results["networks"]:
    for label, flags in results["variants"].items():
      versus = ratio_cells(row["ratio_to_first"].get(label))
      shown = "PyTorch" if flags is None else f"`{flags}`" if flags else "(the project's defaults)"
      if label in results.get("checkouts", {}):
        shown += f", code at `{results['checkouts'][label]}`"
      speed = f"{row['images_per_second'][label]:.2f}"
      per_process = row.get("process_images_per_second", {}).get(label, [])
      if len(per_process) > 1:
        speed += f" [{', '.join(f'{value:.2f}' for value in per_process)}]"
      lines.append(f"| {row['network']} | {label} | {shown} | {speed} | {versus} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  if argv[:1] == ["--worker"]:
    network, mode, dtype, batch, framework = argv[1:]
    worker(network, mode, dtype, int(batch), framework)
    return
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--networks", default="torchvision224,small32")
  parser.add_argument("--mode", default="train", choices=("train", "eval"))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--pairs", type=int, default=25, help="turns: steps of each process")
  parser.add_argument(
    "--variant",
    action="append",
    default=[],
    metavar="LABEL=XLA_FLAGS",
    help="repeatable; the first is the baseline (default: the project's defaults alone)",
  )
  parser.add_argument(
    "--processes", type=int, default=2, help="worker processes per variant, interleaved"
  )
  parser.add_argument("--torch", action="store_true", help="add PyTorch eager as a variant")
  parser.add_argument(
    "--checkout",
    action="append",
    default=[],
    metavar="LABEL=PATH",
    help="repeatable; that variant runs the package in the checkout at PATH",
  )
  parser.add_argument("--out", default="runs/paired_steps")
  args = parser.parse_args(argv)
  variants: dict[str, str | None] = {}
  for item in args.variant or ["project defaults="]:
    label, separator, flags = item.partition("=")
    if not separator or not label:
      parser.error(f"--variant takes LABEL=XLA_FLAGS, got {item!r}")
    variants[label] = flags
  if args.torch:
    variants[PYTORCH] = None
  args.checkouts = {}
  for item in args.checkout:
    label, _, path = item.partition("=")
    if label not in variants or not (pathlib.Path(path) / "inception_jax").is_dir():
      parser.error(f"--checkout takes LABEL=PATH of a variant and a checkout, got {item!r}")
    args.checkouts[label] = str(pathlib.Path(path).resolve())
  if len(variants) < 2 or args.pairs < 2 or args.processes < 1:
    parser.error(
      "give at least two variants (or one and --torch), --pairs of 2 or more and --processes of"
      " 1 or more"
    )

  from inception_jax.training.devices import describe_line

  results = {
    "command": shlex.join(["python", "experiments/paired_steps.py", *argv]),
    "machine": describe_line(),
    "case": f"{args.mode} step, {args.dtype}, batch {args.batch}",
    "pairs": args.pairs,
    "processes": args.processes,
    "variants": variants,
    "checkouts": args.checkouts,
    "networks": [
      time_network(network, args, variants) for network in args.networks.split(",") if network
    ],
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  reexecute_with_tunables()
  main(sys.argv[1:])
