"""`inception-jax bench`: every case timed for us and for PyTorch in one process, then reported.

Results go to `<out>/bench.json` (every number) and `<out>/bench.md` (the command, the machine,
and one row per case with ours/PyTorch ratios and the share of the device's peak FLOP rate).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp

from inception_jax.bench.cases import MODES, NETWORKS, Case, time_steps
from inception_jax.bench.options import BenchOptions
from inception_jax.bench.ours import time_ours
from inception_jax.cost import layer_costs
from inception_jax.errors import ConfigError, choose
from inception_jax.models import build_model
from inception_jax.models.presets import DTYPES
from inception_jax.training import devices

# Dense peak FLOP/s of known accelerators (vendor datasheets); float32 means XLA's default
# TF32 tensor-core math on these GPUs. Other devices use a matmul measured in the same run.
NOMINAL_PEAKS = {
  "H100": {"bfloat16": 989.4e12, "float32": 494.7e12},
  "H200": {"bfloat16": 989.4e12, "float32": 494.7e12},
  "A100": {"bfloat16": 312e12, "float32": 156e12},
}
DEFAULT_BATCHES = {"cpu": (8, 32), "gpu": (64, 128, 256), "tpu": (64, 128, 256)}


def _peak_flops(dtype: str) -> tuple[float, str]:
  """The device's peak FLOP/s for `dtype`, and where the figure comes from."""
  kind = jax.devices()[0].device_kind
  for name, peaks in NOMINAL_PEAKS.items():
    if name in kind:
      return peaks[dtype], f"{name} datasheet"
  n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  times = []
  for _ in range(10):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    times.append(time.perf_counter() - start)
  # the fastest product: a peak is a best case, and a shared CPU's median wanders by 2x
  return 2 * n**3 / min(times) * jax.local_device_count(), "measured matmul, fastest of 10"


def _flops_per_image(case: Case) -> float:
  """2 x multiply-adds of the forward pass (aux heads in train), x3 for forward + backward."""
  model = build_model(case.model_config())
  macs = sum(
    layer.macs
    for layer in layer_costs(
      model, (case.image_size, case.image_size, 3), train=case.mode == "train"
    )
  )
  return 2 * macs * (3 if case.mode == "train" else 1)


def _torch_available(option: str) -> bool:
  choose({"auto": 0, "none": 0, "required": 0}, option, "--torch")
  installed = importlib.util.find_spec("torch") is not None
  if option == "required" and not installed:
    raise ConfigError(
      "--torch required, but PyTorch is not installed: "
      "pip install -e '.[torch]' (or --torch none for ours alone)."
    )
  return installed and option != "none"


def _check_pipeline_importable(threads: Sequence[int]) -> None:
  """Fails before any timing when the pipeline part would: it alone needs TensorFlow, which GPU
  images often lack, and it runs last."""
  if threads and importlib.util.find_spec("tensorflow") is None:
    raise ConfigError(
      f"--pipeline-threads {','.join(map(str, threads))}: timing the input pipeline needs "
      "TensorFlow, which is not installed: pip install -e . (or --pipeline-threads= to time the "
      "steps alone)."
    )


def check_options(options: BenchOptions) -> bool:
  """Raises ConfigError for what the bench could not run, before it times anything; returns
  whether the PyTorch peer runs."""
  for name in options.networks:
    choose(NETWORKS, name, "--networks entry")
  for dtype in options.dtypes:
    choose(DTYPES, dtype, "--dtypes entry")
  for mode in options.modes:
    choose(dict.fromkeys(MODES), mode, "--modes entry")
  if options.rounds < 1:
    raise ConfigError(f"--rounds {options.rounds}: needs at least 1 (1: one timing per case).")
  with_torch = _torch_available(options.torch)
  _check_pipeline_importable(options.pipeline_threads)
  if with_torch:
    from inception_jax.bench import theirs  # pylint: disable=import-outside-toplevel

    for variant in options.torch_variants:
      choose(dict.fromkeys(theirs.VARIANTS), variant, "--torch-variants entry")
  return with_torch


def run_bench(
  options: BenchOptions, out: str, command: str, console: TextIO | None = None
) -> dict[str, Any]:
  """Runs every case, writes bench.json and bench.md into `out`; returns the results."""
  console = console or sys.stdout
  with_torch = check_options(options)
  out_dir = pathlib.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  batches = options.batch_sizes or DEFAULT_BATCHES.get(jax.devices()[0].platform, (32,))
  results: dict[str, Any] = {
    "command": command,
    "machine": devices.describe(),
    "rows": [],
    "pipeline": [],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
  }
  if with_torch:
    import torch  # pylint: disable=import-outside-toplevel

    from inception_jax.bench import theirs  # pylint: disable=import-outside-toplevel

    results["machine"]["torch"] = torch.__version__
    results["machine"]["torch_device"] = str(theirs.device())
  peaks = {dtype: _peak_flops(dtype) for dtype in options.dtypes}
  results["peaks"] = {dtype: {"flops": p, "source": s} for dtype, (p, s) in peaks.items()}

  for network, dtype, batch, mode in itertools.product(
    options.networks, options.dtypes, batches, options.modes
  ):
    case = Case(network, dtype, batch, mode)
    flops = _flops_per_image(case)
    runs = [
      (
        "ours",
        "jax",
        lambda case=case: time_ours(case, options.steps, options.warmup, options.profile_steps),
      )
    ]
    if with_torch:
      runs += [
        (
          "pytorch",
          variant,
          lambda case=case, variant=variant: theirs.time_theirs(
            case, variant, options.steps, options.warmup, options.profile_steps
          ),
        )
        for variant in options.torch_variants
      ]
    timed: list[tuple[dict[str, Any], Callable[[], None]]] = []  # (row, its step) that ran
    for framework, variant, measure in runs:
      row = {
        **dataclasses.asdict(case),
        "image_size": case.image_size,
        "framework": framework,
        "variant": variant,
        "flops_per_image": flops,
      }
      try:
        measured, step = measure()
        row.update(measured)
        row["peak_share"] = row["images_per_second"] * flops / peaks[dtype][0]
        timed.append((row, step))
      except Exception as error:  # pylint: disable=broad-except  # e.g. torch.compile without a compiler
        if framework == "ours":
          raise
        first_line = (str(error).splitlines() or [""])[0][:200]
        row["error"] = f"{type(error).__name__}: {first_line}"
      results["rows"].append(row)
      _write(results, out_dir)  # after every row: a run cut short keeps what it measured
      console.write(_progress(row) + "\n")
      console.flush()
    if options.rounds > 1:
      _more_rounds(timed, case.batch, options, flops / peaks[dtype][0])
      _write(results, out_dir)
      for row, _ in timed:
        console.write(_progress(row) + f", median of {options.rounds} rounds\n")
  if options.pipeline_threads:
    # TensorFlow only when the pipeline is timed: the steps need none (GPU images often lack it)
    from inception_jax.bench.pipeline import time_pipeline
  for threads in options.pipeline_threads:
    measured = time_pipeline(threads or os.cpu_count() or 1, seconds=options.pipeline_seconds)
    results["pipeline"].append(measured)
    console.write(
      f"input pipeline, {measured['threads']} thread(s): "
      f"{measured['images_per_second']:,.0f} img/s "
      f"({measured['images_per_second_per_thread']:,.0f} per thread)\n"
    )

  _write(results, out_dir)
  console.write(f"Results: {out_dir / 'bench.json'}, {out_dir / 'bench.md'}\n")
  return results


def _more_rounds(
  timed: list[tuple[dict[str, Any], Callable[[], None]]],
  batch: int,
  options: BenchOptions,
  flops_per_peak: float,
) -> None:
  """Times each framework's step again, in turn, for rounds 2..N (one warm-up step each), and
  makes each row's figures the median over its rounds: on a machine whose speed drifts, a ratio
  of two medians taken minutes apart moves with the drift, one of medians of rounds taken in
  turn much less. Each round's own figures stay in the row."""
  for row, _ in timed:
    row["rounds_seconds_per_step"] = [row["seconds_per_step"]]
    row["rounds_page_faults_per_step"] = [row["page_faults_per_step"]]
  for _ in range(options.rounds - 1):
    for row, step in timed:
      again = time_steps(step, batch, options.steps, warmup=1)
      row["rounds_seconds_per_step"].append(again["seconds_per_step"])
      row["rounds_page_faults_per_step"].append(again["page_faults_per_step"])
  for row, _ in timed:
    row["seconds_per_step"] = statistics.median(row["rounds_seconds_per_step"])
    row["page_faults_per_step"] = statistics.median(row["rounds_page_faults_per_step"])
    row["images_per_second"] = batch / row["seconds_per_step"]
    row["peak_share"] = row["images_per_second"] * flops_per_peak


def _write(results: dict[str, Any], out_dir: pathlib.Path) -> None:
  (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
  (out_dir / "bench.md").write_text(markdown(results))


def _progress(row: dict[str, Any]) -> str:
  name = (
    f"{row['network']} {row['dtype']} batch {row['batch']} {row['mode']} "
    f"{row['framework']}/{row['variant']}"
  )
  if "error" in row:
    return f"{name}: failed: {row['error']}"
  return (
    f"{name}: {row['images_per_second']:,.1f} img/s, {1e3 * row['seconds_per_step']:.1f} "
    f"ms/step, compile {row['compile_seconds']:.1f}s"
  )


def _case_key(row: dict[str, Any]) -> tuple:
  return row["network"], row["dtype"], row["batch"], row["mode"]


def _mib(value: float | None) -> str:
  return "" if value is None else f"{value / 2**20:,.0f}"


def _profile_sections(rows: list[dict[str, Any]]) -> list[str]:
  """Per profiled case: each part's share of the profiled time, as milliseconds of the timed
  step, ours beside each PyTorch variant's."""
  lines = []
  for case_key, group in itertools.groupby(rows, _case_key):
    profiled = [r for r in group if "profile" in r]
    if not profiled:
      continue
    scaled = {}
    for row in profiled:
      total = sum(row["profile"].values())
      scaled[row["variant"]] = {
        part: 1e3 * row["seconds_per_step"] * seconds / total
        for part, seconds in row["profile"].items()
      }
    names = {
      r["variant"]: "ours" if r["framework"] == "ours" else f"PyTorch {r['variant']}"
      for r in profiled
    }
    parts = sorted(
      {part for parts in scaled.values() for part in parts},
      key=lambda part: -max(parts.get(part, 0.0) for parts in scaled.values()),
    )
    ours = scaled.get("jax")
    peers = [v for v in scaled if v != "jax"] if ours else []  # ours minus each of them
    header = ["part of the step", *(f"{names[v]} ms" for v in scaled)]
    header += [f"ours - {v} ms" for v in peers]
    lines += [
      "",
      f"Where the time goes: {' '.join(map(str, case_key))} (ms of the timed step, each "
      f"part's share of the profiled op time):",
      "",
      "| " + " | ".join(header) + " |",
      "|---|" + "---:|" * (len(header) - 1),
    ]
    for part in parts:
      cells = [part, *(f"{parts_ms.get(part, 0.0):,.1f}" for parts_ms in scaled.values())]
      cells += [f"{ours.get(part, 0.0) - scaled[v].get(part, 0.0):+,.1f}" for v in peers]
      lines.append("| " + " | ".join(cells) + " |")
    busy = ", ".join(
      f"{names[r['variant']]} {sum(r['profile'].values()) / r['seconds_per_step']:.2f}"
      for r in profiled
    )
    lines += ["", f"Profiled op time over the timed step (threads busy at once): {busy}."]
  return lines


def markdown(results: dict[str, Any]) -> str:
  """The results as a markdown report: ours against each PyTorch variant, one row per case."""
  m = results["machine"]
  rows = results["rows"]
  variants = list(dict.fromkeys(r["variant"] for r in rows if r["framework"] == "pytorch"))
  lines = [
    "# inception-jax bench",
    "",
    "Produced by:",
    "",
    "```bash",
    results["command"],
    "```",
    "",
    f"Machine: {devices.describe_line(m)}"
    + (
      f", torch {m['torch']} on {m['torch_device']}"
      if "torch" in m
      else "; PyTorch not installed, so ours alone"
    )
    + "."
    + "".join(
      f" {variable}={results[key]}."
      for key, variable in (("xla_flags", "XLA_FLAGS"), ("glibc_tunables", "GLIBC_TUNABLES"))
      if results.get(key)
    ),
    "",
  ]
  peers = {(r["network"], r["peer"], r["parameters"]) for r in rows if "peer" in r}
  lines += [
    f"PyTorch on {network}: {peer} ({parameters:,} parameters)."
    for network, peer, parameters in sorted(peers)
  ]
  lines += [""] if peers else []
  peak_text = ", ".join(
    f"{d}: {p['flops'] / 1e12:,.2f} TFLOP/s ({p['source']})" for d, p in results["peaks"].items()
  )
  lines += [
    "Images/s are the global batch over the median of timed steps (after warm-up, on "
    "device-resident data, each step waited for)"
    + (
      "; with --rounds, each case's frameworks were timed in turn that many times and the "
      "figure is the median of the rounds' medians (each round's in bench.json)"
      if any("rounds_seconds_per_step" in row for row in rows)
      else ""
    )
    + f". Train = forward, backward and SGD "
    f"update with the aux heads; eval = forward. % peak = FLOPs (2 x multiply-adds, x3 "
    f"for training) per second over the device's peak ({peak_text}). Memory: ours is "
    f"XLA's count for the compiled step (arguments + outputs + temporaries); PyTorch's is "
    f"the CUDA allocator's peak.",
    "",
  ]
  header = [
    "network",
    "dtype",
    "batch",
    "mode",
    "ours img/s",
    "ours % peak",
    "compile s",
    "memory MiB",
  ]
  for variant in variants:
    header += [f"PyTorch {variant} img/s", f"ours / {variant}"]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]
  for case_key, group in itertools.groupby(rows, _case_key):
    group = list(group)
    ours = next(r for r in group if r["framework"] == "ours")
    cells = [
      *map(str, case_key),
      f"{ours['images_per_second']:,.1f}",
      f"{100 * ours['peak_share']:.1f}%",
      f"{ours['compile_seconds']:.1f}",
      _mib(ours["memory_bytes"]),
    ]
    for variant in variants:
      theirs = next((r for r in group if r["variant"] == variant), None)
      if theirs is None or "error" in theirs:
        cells += ["failed" if theirs else "", ""]
      else:
        cells += [
          f"{theirs['images_per_second']:,.1f}",
          f"{ours['images_per_second'] / theirs['images_per_second']:.2f}x",
        ]
    lines.append("| " + " | ".join(cells) + " |")
  failures = [r for r in rows if "error" in r]
  if failures:
    lines += [
      "",
      "Failed: "
      + "; ".join(
        f"{r['variant']} on {r['network']} {r['dtype']} "
        f"batch {r['batch']} {r['mode']}: {r['error']}"
        for r in failures
      ),
    ]
  lines += _profile_sections(rows)
  if results["pipeline"]:
    lines += [
      "",
      "Input pipeline (JPEG decode fused with the Inception crop, flip, random "
      "interpolation to 224x224; batches of 128; the photometric distortions run in the "
      "train step):",
      "",
      "| tf.data threads | img/s | img/s per thread |",
      "|---:|---:|---:|",
    ]
    lines += [
      f"| {p['threads']} | {p['images_per_second']:,.0f} | "
      f"{p['images_per_second_per_thread']:,.0f} |"
      for p in results["pipeline"]
    ]
    lines += _pipeline_share(rows, results["pipeline"])
  return "\n".join(lines) + "\n"


def _pipeline_share(rows: list[dict[str, Any]], pipeline: list[dict[str, Any]]) -> list[str]:
  """Whether the input pipeline keeps up with our fastest 224x224 train step of this run: the
  share of a training step spent waiting for input, and the threads that would feed it."""
  steps = [
    r
    for r in rows
    if r["framework"] == "ours"
    and r["mode"] == "train"
    and r["image_size"] == 224
    and "error" not in r
  ]
  if not steps:
    return []
  step = max(steps, key=lambda r: r["images_per_second"])
  best = max(pipeline, key=lambda p: p["images_per_second"])
  needed = math.ceil(step["images_per_second"] / best["images_per_second_per_thread"])
  waiting = max(0.0, 1 - best["images_per_second"] / step["images_per_second"])
  return [
    "",
    f"Our fastest 224x224 train step here ({step['network']} {step['dtype']} batch "
    f"{step['batch']}) runs {step['images_per_second']:,.0f} img/s; the pipeline's "
    f"{best['threads']} thread(s) give {best['images_per_second']:,.0f}, so training would wait "
    f"for input {waiting:.0%} of the time. At {best['images_per_second_per_thread']:,.0f} img/s "
    f"per thread, {needed} thread(s) keep up.",
  ]
