"""XLA's CPU options, each timed by the bench on the same cases: which ones the project keeps.

XLA reads XLA_FLAGS once per process, so every variant below runs as its own
`inception-jax bench --torch none` process with its own XLA_FLAGS, and the table puts each
variant's images/s beside XLA's defaults. The options that help are set by default in
inception_jax/xla_flags.py; "project defaults" is that choice (an empty XLA_FLAGS).

Command (about 30 minutes on a 2-core CPU; arguments after the script's own go to the bench):
  python experiments/xla_cpu_flags.py --out experiments/results/xla_cpu_flags
`--variants 1,5` times only those (numbered as in VARIANTS, from 0); `--rounds N` times every
variant N times, the order rotated each round (a variant's place in the order moves its speed on a
shared 2-core machine), and reports the median of the rounds with each round's figure.
Writes OUT.json and OUT.md; each variant's bench.json/bench.md go under --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
from typing import Any

from inception_jax.training.devices import describe_line

YNN = "--xla_cpu_experimental_ynn_fusion_type"
# label -> XLA_FLAGS. XLA's defaults must name the YNN flag, or the project's default applies.
VARIANTS: dict[str, str] = {
  "XLA defaults (YNNPACK convolutions)": f"{YNN}=+individual_convolution",
  "project defaults (Eigen convolutions and dots)": "",
  "Eigen convolutions, YNNPACK dots": f"{YNN}=-individual_convolution",
  "no YNNPACK fusion at all": (
    f"{YNN}=-individual_convolution,-individual_dot,-dot,-eltwise,-reduce"
  ),
  "+ oneDNN": "--xla_cpu_use_onednn=true",
  "+ oneDNN custom calls": (
    "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
  ),
  "+ XNNPACK off": "--xla_cpu_use_xnnpack=false",
  "+ legacy fusion emitters": "--xla_cpu_use_fusion_emitters=false",
  "+ fast math (not exact: -inf, NaN)": "--xla_cpu_enable_fast_math=true",
  "+ 512-bit vectors in XLA's loops": "--xla_cpu_prefer_vector_width=512",
  "+ XNNPACK greedy graph fusion": (
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"
  ),
  "+ oneDNN elementwise fusions": "--xla_cpu_experimental_onednn_fusion_type=+eltwise",
}
BENCH_DEFAULTS = [
  "--networks",
  "torchvision224",
  "--dtypes",
  "float32,bfloat16",
  "--batch-sizes",
  "16",
  "--steps",
  "3",
  "--warmup",
  "1",
]


def run_variant(
  flags: str,
  out: pathlib.Path,
  bench_args: list[str],
  env: dict[str, str] | None = None,
  torch: str = "none",
) -> dict[str, Any]:
  """One bench process under XLA_FLAGS=flags (the project adds its defaults to what it lacks)
  and the other variables of `env` (JAX options), with the PyTorch peer as `--torch` says."""
  command = [
    sys.executable,
    "-m",
    "inception_jax.main",
    "bench",
    "--torch",
    torch,
    "--pipeline-threads",
    "",
    *bench_args,
    "--out",
    str(out),
  ]
  subprocess.run(command, env={**os.environ, **(env or {}), "XLA_FLAGS": flags}, check=True)
  return json.loads((out / "bench.json").read_text())


def case_name(row: dict[str, Any]) -> str:
  return f"{row['network']} {row['dtype']} {row['mode']} b{row['batch']}"


def speeds(variant: dict[str, Any]) -> dict[str, list[float]]:
  """Images/s per case, one figure per round (a result from before --rounds has one round)."""
  rounds = variant.get("rounds") or [variant["rows"]]
  per_round = [{case_name(row): row["images_per_second"] for row in rows} for rows in rounds]
  return {case: [speed[case] for speed in per_round] for case in per_round[0]}


def markdown(results: dict[str, Any]) -> str:
  """One row per variant: its XLA_FLAGS as the bench saw them, images/s per case (the median of
  the rounds, each round in brackets where there were several) and the ratio to the first
  variant timed."""
  variants = results["variants"]
  cases = list(speeds(variants[0]))
  baseline = {case: statistics.median(values) for case, values in speeds(variants[0]).items()}
  several = len(variants[0].get("rounds", [])) > 1
  lines = [
    f"# XLA CPU options\n\nCommand: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}. Images/s of our step (median of the timed "
    "steps"
    + (", then the median of the rounds, each round after it" if several else "")
    + f"), and the ratio to the first row ({variants[0]['label']}).\n",
    "| variant | XLA_FLAGS | " + " | ".join(cases) + " |",
    "|---|---|" + "---:|" * len(cases),
  ]
  for variant in variants:
    cells = []
    for case, values in speeds(variant).items():
      median = statistics.median(values)
      rounds = f" [{', '.join(f'{v:.2f}' for v in values)}]" if several else ""
      cells.append(f"{median:.2f} ({median / baseline[case]:.2f}x){rounds}")
    lines.append(f"| {variant['label']} | `{variant['xla_flags']}` | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_results(out: pathlib.Path, results: dict[str, Any], report: str) -> None:
  """OUT.json (the numbers) and OUT.md (the report), and the report on the console."""
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
  out.with_suffix(".md").write_text(report)
  print(report)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--out", default="runs/xla_cpu_flags", help="results go to OUT.json and OUT.md"
  )
  parser.add_argument(
    "--runs", default="runs/xla_cpu_flags_runs", help="where each variant's own bench output goes"
  )
  parser.add_argument(
    "--variants",
    default=",".join(str(index) for index in range(len(VARIANTS))),
    help="comma-separated numbers of the variants to time, from 0 in VARIANTS' order",
  )
  parser.add_argument("--rounds", type=int, default=1, help="times each variant is timed")
  args, bench_args = parser.parse_known_args(argv)
  bench_args = bench_args or BENCH_DEFAULTS
  labels = list(VARIANTS)
  try:
    chosen = [labels[int(number)] for number in args.variants.split(",")]
  except (ValueError, IndexError):
    parser.error(f"--variants takes numbers from 0 to {len(labels) - 1}, got {args.variants!r}")
  if args.rounds < 1:
    parser.error(f"--rounds must be at least 1, got {args.rounds}")
  variants = {label: {"label": label, "rounds": []} for label in chosen}
  for round_index in range(args.rounds):
    shift = round_index % len(chosen)
    for label in chosen[shift:] + chosen[:shift]:
      flags = VARIANTS[label]
      print(f"== round {round_index + 1}: {label}: XLA_FLAGS={flags!r}", flush=True)
      out = pathlib.Path(args.runs) / f"variant{labels.index(label)}_round{round_index + 1}"
      bench = run_variant(flags, out, bench_args)
      variants[label]["xla_flags"] = bench["xla_flags"]
      variants[label]["rounds"].append(bench["rows"])
  results = {
    "command": shlex.join(["python", "experiments/xla_cpu_flags.py", *argv]),
    "machine": bench["machine"],
    "variants": list(variants.values()),
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  main(sys.argv[1:])
