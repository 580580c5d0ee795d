"""Page faults against step time: glibc's default 4 KiB pages or transparent huge pages.

glibc reads GLIBC_TUNABLES only when a process starts, so each variant is its own
`inception-jax bench` process (ours and PyTorch's steps in it, both under the variant) with its
own GLIBC_TUNABLES, the variants alternating over --rounds rounds, as this machine's speed drifts
between runs. The `inception-jax` command sets `glibc.malloc.hugetlb=1` itself
(inception_jax/launch.py) unless GLIBC_TUNABLES names it, as both variants here do.

Command (about 15 minutes on a 2-core CPU; arguments after the script's own go to the bench):
  python experiments/host_memory.py --out experiments/results/host_memory
Writes OUT.json and OUT.md; each run's bench.json/bench.md go under --runs.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import statistics
import sys
from typing import Any

from xla_cpu_flags import case_name, run_variant, write_results

from inception_jax.training.devices import describe_line

VARIANTS: dict[str, str] = {  # label -> GLIBC_TUNABLES
  "4 KiB pages (glibc's default)": "glibc.malloc.hugetlb=0",
  "transparent huge pages (the command's default)": "glibc.malloc.hugetlb=1",
}
BENCH_DEFAULTS = [
  *("--networks", "torchvision224,small32", "--dtypes", "float32", "--batch-sizes", "16"),
  *("--steps", "6", "--warmup", "1", "--torch-variants", "eager"),
]


def _by_case(rows: list[dict[str, Any]], framework: str) -> dict[str, dict[str, Any]]:
  return {case_name(row): row for row in rows if row["framework"] == framework}


def markdown(results: dict[str, Any]) -> str:
  """Each run's images/s and page faults per step, ours and PyTorch's; then each variant's
  median over the rounds."""
  runs = results["runs"]
  lines = [
    f"# Page faults and step time\n\nCommand: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}, torch {results['machine'].get('torch')}. "
    "Images/s: median of the timed steps; faults: the process's minor page faults per timed "
    "step (getrusage); both frameworks' steps in one bench process per run, under the run's "
    "GLIBC_TUNABLES.\n",
    "| round | GLIBC_TUNABLES | case | ours img/s | ours faults/step | PyTorch img/s | "
    "PyTorch faults/step | ours / PyTorch |",
    "|---:|---|---|---:|---:|---:|---:|---:|",
  ]
  medians: dict[tuple[str, str], list[tuple[float, float]]] = {}
  for run in runs:
    ours, theirs = _by_case(run["rows"], "ours"), _by_case(run["rows"], "pytorch")
    for case, row in ours.items():
      peer = theirs.get(case)
      peer_cells = (
        f"{peer['images_per_second']:.1f} | {peer['page_faults_per_step']:,.0f} | "
        f"{row['images_per_second'] / peer['images_per_second']:.2f}x"
        if peer
        else "- | - | -"
      )
      lines.append(
        f"| {run['round']} | `{run['glibc_tunables']}` | {case} | "
        f"{row['images_per_second']:.1f} | {row['page_faults_per_step']:,.0f} | {peer_cells} |"
      )
      medians.setdefault((run["glibc_tunables"], case), []).append(
        (row["images_per_second"], peer["images_per_second"] if peer else float("nan"))
      )
  lines += [
    "",
    "Medians over the rounds:\n",
    "| GLIBC_TUNABLES | case | ours img/s | PyTorch img/s | ours / PyTorch |",
    "|---|---|---:|---:|---:|",
  ]
  for (tunables, case), speeds in medians.items():
    ours_speed = statistics.median(s[0] for s in speeds)
    peer_speed = statistics.median(s[1] for s in speeds)
    lines.append(
      f"| `{tunables}` | {case} | {ours_speed:.1f} | {peer_speed:.1f} | "
      f"{ours_speed / peer_speed:.2f}x |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/host_memory", help="results: OUT.json and OUT.md")
  parser.add_argument("--runs", default="runs/host_memory_runs", help="each run's bench output")
  parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the variants")
  args, bench_args = parser.parse_known_args(argv)
  bench_args = bench_args or BENCH_DEFAULTS
  runs = []
  for round_index in range(1, args.rounds + 1):
    for index, (label, tunables) in enumerate(VARIANTS.items()):
      print(f"== round {round_index}, {label}: GLIBC_TUNABLES={tunables}", flush=True)
      out = pathlib.Path(args.runs) / f"round{round_index}_variant{index}"
      bench = run_variant("", out, bench_args, {"GLIBC_TUNABLES": tunables}, torch="auto")
      runs.append({"round": round_index, "label": label, **bench})
  results = {
    "command": shlex.join(["python", "experiments/host_memory.py", *argv]),
    "machine": runs[-1]["machine"],
    "runs": runs,
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  main(sys.argv[1:])
