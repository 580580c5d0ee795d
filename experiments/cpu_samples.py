"""Where each framework's train step spends the CPU, by kind of code, from Linux perf samples.

The bench's profile (results/bench_cpu.md) splits a step by the spans of XLA's ops, which overlap:
XLA runs independent ops on both cores at once, so a span's milliseconds are not CPU time, and a
kernel made faster alone may not make the step faster. This samples the process instead: one
framework's train step runs in a loop in a worker process (built as the bench builds it), `perf
record` samples it at 999 Hz with call graphs, and each sample is put down to the code it was in.
Core-milliseconds per step are the samples' CPU time over the sampled steps; on 2 busy cores, a
step's core-ms are about twice its wall-clock ms.

JIT-compiled code has no symbols: a JIT sample whose call chain goes through XLA's kernel thunks
is one of XLA's fused loops (LLVM-compiled from the step's HLO); the rest is the GEMM and
convolution micro-kernels oneDNN generates at run time (under Eigen's contractions in XLA, under
PyTorch's convolutions).

Command (about 5 minutes on a 2-core CPU; needs `perf`, permission to attach it to one's own
processes, and the `torch` extra):
  python experiments/cpu_samples.py --out experiments/results/cpu_samples
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from inception_jax.bench.cases import NETWORKS, Case
from inception_jax.launch import reexecute_with_tunables
from inception_jax.training.devices import describe, describe_line

FRAMEWORKS = ("ours", "pytorch")
SAMPLE_HZ = 999
XLA_KERNEL_CALLERS = ("Kernel::Task", "KernelThunk", "Kernel::Launch")

# (label, test on the sample's innermost frame and its whole call chain), first match wins.
KINDS: list[tuple[str, Any]] = [
  ("XLA's fused loops (JIT, its LLVM kernels)", lambda top, chain: _jit(top) and _xla(chain)),
  ("GEMM and convolution micro-kernels (JIT, oneDNN)", lambda top, chain: _jit(top)),
  (
    "Eigen: packing convolution patches for GEMM (im2col)",
    lambda top, _: "gemm_pack" in top and "TensorImagePatchOp" in top,
  ),
  ("Eigen: packing other GEMM operands", lambda top, _: "gemm_pack" in top),
  ("YNNPACK (dots, reductions)", lambda top, _: "ynn::" in top),
  ("oneDNN and MKL, compiled code", lambda top, _: "dnnl::" in top or " mkl_" in top),
  ("PyTorch's own operators (elementwise, pooling, BatchNorm)", lambda top, _: "libtorch" in top),
  ("OpenMP runtime (threads waiting for work)", lambda top, _: "libgomp" in top),
  ("Linux kernel (clearing new pages, faults)", lambda top, _: "kernel.kallsyms" in top),
  ("C library (memcpy, malloc)", lambda top, _: "libc.so" in top),
  ("XLA runtime (thunks, thread pool)", lambda top, _: "libjax_common" in top),
  ("other", lambda top, _: True),
]


def _jit(frame: str) -> bool:
  return "[JIT]" in frame or "/tmp/perf-" in frame


def _xla(chain: str) -> bool:
  return any(caller in chain for caller in XLA_KERNEL_CALLERS)


def kind_of(frames: list[str]) -> str:
  """The KINDS label of one sample, from its frames (innermost first) as `perf script` prints
  them: address, symbol, (library)."""
  top, chain = frames[0], " ".join(frames)
  return next(label for label, test in KINDS if test(top, chain))


def count_kinds(perf_script_output: str) -> collections.Counter:
  """Samples per kind in `perf script -F ip,sym,dso` output (samples separated by blank lines)."""
  kinds: collections.Counter = collections.Counter()
  for sample in perf_script_output.split("\n\n"):
    frames = [line.strip() for line in sample.splitlines() if line.strip()]
    if frames:
      kinds[kind_of(frames)] += 1
  return kinds


def worker(framework: str, network: str, batch: int, seconds: float) -> None:
  """Builds one train step as the bench does, says READY, runs it in a loop for `seconds` and
  prints its own timing as JSON."""
  case = Case(network, "float32", batch, "train")
  if framework == "ours":
    from inception_jax.bench.ours import time_ours as build
  else:
    from inception_jax.bench.theirs import time_theirs

    def build(case: Case, steps: int, warmup: int) -> Any:
      return time_theirs(case, "eager", steps, warmup)

  _, step = build(case, steps=2, warmup=1)
  print("READY", flush=True)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    step()
    steps += 1
  print(json.dumps({"steps": steps, "seconds": time.perf_counter() - start}), flush=True)


def sample(framework: str, network: str, batch: int, seconds: float) -> dict[str, Any]:
  """One worker sampled by perf for `seconds` while it runs: its core-ms per step by kind."""
  command = [sys.executable, __file__, "--worker", framework, network, str(batch), str(seconds + 4)]
  with tempfile.TemporaryDirectory() as folder:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if not any(line.startswith("READY") for line in process.stdout):
      sys.exit(
        f"The {framework} worker for {network} stopped before its loop (exit code "
        f"{process.wait()}); its error is above."
      )
    time.sleep(1)  # into the loop
    data = pathlib.Path(folder, "perf.data")
    record = subprocess.run(
      ["perf", "record", "-F", str(SAMPLE_HZ), "-g", "-p", str(process.pid), "-o", str(data)]
      + ["--", "sleep", str(seconds)],
      capture_output=True,
      text=True,
    )
    if record.returncode != 0:
      process.kill()
      sys.exit(
        f"perf record failed: {record.stderr.strip()}\nIf it is a permission problem, allow "
        "sampling one's own processes: `sysctl kernel.perf_event_paranoid=2`."
      )
    timing = json.loads(process.stdout.read().strip().splitlines()[-1])
    process.wait()
    script = subprocess.run(
      ["perf", "script", "-i", str(data), "-F", "ip,sym,dso"],
      check=True,
      capture_output=True,
      text=True,
    ).stdout
  kinds = count_kinds(script)
  ms_per_step = timing["seconds"] / timing["steps"] * 1e3
  steps_sampled = seconds * 1e3 / ms_per_step
  return {
    "framework": framework,
    "network": network,
    "batch": batch,
    "ms_per_step": ms_per_step,
    "cores_busy": sum(kinds.values()) / SAMPLE_HZ / seconds,
    "core_ms_per_step": {
      kind: count / SAMPLE_HZ * 1e3 / steps_sampled for kind, count in kinds.most_common()
    },
  }


def markdown(results: dict[str, Any]) -> str:
  """Per network: each kind's core-ms per step, ours beside PyTorch's."""
  lines = [
    "# CPU time of the train step by kind of code\n",
    f"Command: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}, torch {results['torch']}. float32 train "
    f"step, batch {results['batch']}, as `inception-jax bench` builds it, in a loop; `perf "
    f"record -F {SAMPLE_HZ} -g` on the process for {results['seconds']:g} s. Core-ms: CPU time "
    "per step (samples over steps); ms/step: the worker's own timing over its whole loop.\n",
  ]
  for network in results["networks"]:
    rows = {row["framework"]: row for row in results["rows"] if row["network"] == network}
    ours, theirs = rows["ours"], rows["pytorch"]
    kinds = [label for label, _ in KINDS]
    lines += [
      f"## {network}\n",
      f"ms/step: ours {ours['ms_per_step']:.0f}, PyTorch eager {theirs['ms_per_step']:.0f}; "
      f"cores busy: {ours['cores_busy']:.2f} and {theirs['cores_busy']:.2f}.\n",
      "| kind of code | ours core-ms | PyTorch core-ms | ours - PyTorch |",
      "|---|---:|---:|---:|",
    ]
    total = [0.0, 0.0]
    for kind in kinds:
      a, b = (row["core_ms_per_step"].get(kind, 0.0) for row in (ours, theirs))
      if a or b:
        lines.append(f"| {kind} | {a:.0f} | {b:.0f} | {a - b:+.0f} |")
        total = [total[0] + a, total[1] + b]
    lines += [f"| all | {total[0]:.0f} | {total[1]:.0f} | {total[0] - total[1]:+.0f} |", ""]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--networks", default="small32,torchvision224", help="bench networks")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seconds", type=float, default=10.0, help="sampled seconds per run")
  parser.add_argument("--out", default="runs/cpu_samples", help="writes OUT.json and OUT.md")
  parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    reexecute_with_tunables()  # the C library's settings the `inception-jax` command runs under
    framework, network, batch, seconds = args.worker
    worker(framework, network, int(batch), float(seconds))
    return
  if shutil.which("perf") is None:
    sys.exit("perf not found: install linux-tools (Debian: `apt install linux-perf`).")
  if importlib.util.find_spec("torch") is None:
    sys.exit("PyTorch is not installed: `pip install -e '.[test]'` brings the CPU wheel.")
  import torch

  networks = args.networks.split(",")
  unknown = sorted(set(networks) - set(NETWORKS))
  if unknown:
    parser.error(f"unknown networks {unknown}; choose from {sorted(NETWORKS)}")
  rows = []
  for network in networks:
    for framework in FRAMEWORKS:
      row = sample(framework, network, args.batch, args.seconds)
      print(f"{network} {framework}: {row['ms_per_step']:.0f} ms/step", flush=True)
      rows.append(row)
  results = {
    "command": shlex.join(["python", "experiments/cpu_samples.py", *argv]),
    "machine": describe(),
    "torch": torch.__version__,
    "networks": networks,
    "batch": args.batch,
    "seconds": args.seconds,
    "rows": rows,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
  out.with_suffix(".md").write_text(markdown(results))
  print(f"Results: {out.with_suffix('.md')}")


if __name__ == "__main__":
  main(sys.argv[1:])
