"""The photometric distortions in tf.data (until 2026-12-05) or in the train step on the device.

Two costs: the host pipeline's images/s per thread count with the distortions there (the removed
code, rebuilt below from tf.image's stateless ops as it was) and without them (`train_image`
now), alternating rounds as this machine's speed drifts; and the distortions on the device alone,
`photometric.distort` jitted over a batch at 224x224, which the train step adds to its work.

Command (about 3 minutes on a 2-core CPU):
  python experiments/photometric_on_device.py --out experiments/results/photometric
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import statistics
import sys
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from xla_cpu_flags import write_results

from inception_jax.bench.cases import time_steps
from inception_jax.bench.pipeline import time_pipeline
from inception_jax.data import photometric
from inception_jax.data.preprocess import train_image
from inception_jax.training.defaults import base_config
from inception_jax.training.devices import describe, describe_line


def host_distorted(jpeg: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The training image as tf.data made it before: the same ranges, drawn by stateless tf.image
  ops on the host, after the crop, flip and interpolation."""
  image = tf.cast(train_image(jpeg, seed, 224, base_config().augment, jpeg=True), tf.float32)
  photometric_seed = tf.random.experimental.stateless_split(seed, 4)[3]
  seeds = tf.random.experimental.stateless_split(photometric_seed, 4)
  ranges = photometric.RANGES
  image = tf.image.stateless_random_brightness(image / 255.0, ranges["brightness"][1], seeds[0])
  image = tf.image.stateless_random_saturation(image, *ranges["saturation"], seeds[1])
  image = tf.image.stateless_random_hue(image, ranges["hue"][1], seeds[2])
  image = tf.image.stateless_random_contrast(image, *ranges["contrast"], seeds[3])
  return tf.cast(tf.round(255.0 * tf.clip_by_value(image, 0.0, 1.0)), tf.uint8)


PIPELINES = {"distortions in tf.data (before)": host_distorted, "in the train step (now)": None}


def time_device(batch: int, repeats: int) -> dict[str, float]:
  """`photometric.distort` alone on this machine's default device: median ms per batch."""
  distort = jax.jit(photometric.distort)
  images = jax.device_put(
    np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
  )
  factors = photometric.random_factors(jax.random.key(0), batch)
  timed = time_steps(lambda: distort(images, factors).block_until_ready(), batch, repeats, 1)
  return {
    "batch": batch,
    "ms_per_batch": 1e3 * timed["seconds_per_step"],
    "images_per_second": timed["images_per_second"],
  }


def markdown(results: dict[str, Any]) -> str:
  lines = [
    "# The photometric distortions: tf.data or the train step\n",
    f"Command: `{results['command']}`\n",
    f"Machine: {describe_line(results['machine'])}. Generated photo-like JPEGs "
    "(`inception_jax/bench/pipeline.py`), the paper's crop, flip and random interpolation to "
    "224x224, batches of 128, each figure over about "
    f"{results['seconds']:g} s of batches.\n",
    "| round | pipeline | tf.data threads | img/s |",
    "|---:|---|---:|---:|",
  ]
  for run in results["pipeline"]:
    lines.append(
      f"| {run['round']} | {run['pipeline']} | {run['threads']} | {run['images_per_second']:,.0f} |"
    )
  lines += ["", "Medians over the rounds:", "", "| tf.data threads | before | now | now / before |"]
  lines.append("|---:|---:|---:|---:|")
  for threads in sorted({run["threads"] for run in results["pipeline"]}):
    before, now = (
      statistics.median(
        r["images_per_second"]
        for r in results["pipeline"]
        if r["threads"] == threads and r["pipeline"] == name
      )
      for name in PIPELINES
    )
    lines.append(f"| {threads} | {before:,.0f} | {now:,.0f} | {now / before:.2f}x |")
  lines += [
    "",
    f"The distortions on the device alone ({results['device']}, `photometric.distort` jitted, "
    "uint8 224x224 in, float32 out; median of the repeats):",
    "",
    "| batch | ms per batch | img/s |",
    "|---:|---:|---:|",
  ]
  lines += [
    f"| {d['batch']} | {d['ms_per_batch']:.1f} | {d['images_per_second']:,.0f} |"
    for d in results["device_alone"]
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/photometric", help="results: OUT.json and OUT.md")
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the pipelines")
  parser.add_argument("--threads", default="1,2", help="tf.data thread counts")
  parser.add_argument("--seconds", type=float, default=8.0, help="of batches per measurement")
  parser.add_argument("--batches", default="16,128", help="batch sizes of the device timing")
  args = parser.parse_args(argv)
  pipeline = []
  for round_index in range(1, args.rounds + 1):
    for name, preprocess in PIPELINES.items():
      for threads in map(int, args.threads.split(",")):
        run = time_pipeline(threads, seconds=args.seconds, preprocess=preprocess)
        pipeline.append({"round": round_index, "pipeline": name, **run})
        print(
          f"round {round_index} | {name} | {threads} thread(s) | "
          f"{run['images_per_second']:,.0f} img/s",
          flush=True,
        )
  results = {
    "command": shlex.join(["python", "experiments/photometric_on_device.py", *argv]),
    "machine": describe(),
    "seconds": args.seconds,
    "pipeline": pipeline,
    "device": str(jax.devices()[0].device_kind),
    "device_alone": [time_device(int(b), repeats=10) for b in args.batches.split(",")],
  }
  write_results(pathlib.Path(args.out), results, markdown(results))


if __name__ == "__main__":
  main(sys.argv[1:])
