"""The `inception-jax` command: parses the command line and calls one subcommand. Nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence

import absl.logging

from inception_jax import launch
from inception_jax.bench.options import BenchOptions
from inception_jax.config import (
  load_config,
  load_ensemble_config,
  load_workdir_config,
  parse_override_args,
)
from inception_jax.errors import ConfigError, StoppedEarly
from inception_jax.weights.sources import BVLC_GOOGLENET_URL, TORCHVISION_URL

WORKDIR_CONFIG = " (default: the workdir's config.json)"
CONFIG_HELP = (
  "config file, optionally with an argument: configs/imagenet.py[:torchvision]. "
  "Override any of its fields with --config.KEY=VALUE, e.g. "
  "--config.model.module=naive --config.model.kernel_sizes=(1,3,3)"
)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="inception-jax", allow_abbrev=False, description="GoogLeNet (Inception-v1) in JAX/Flax."
  )
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  summarize = commands.add_parser(
    "summarize",
    allow_abbrev=False,
    help="per-layer output shapes, parameters, multiply-adds",
    description="A Table-1-style table of the configured network: output shape, parameters "
    "and multiply-adds per layer, with the paper's figures beside them.",
  )
  summarize.add_argument("--config", required=True, help=CONFIG_HELP)
  summarize.add_argument("--json", action="store_true", help="print the rows as a JSON list")
  summarize.add_argument(
    "--compare", action="store_true", help="naive and reduced modules side by side"
  )
  summarize.add_argument(
    "--xla", action="store_true", help="also compile the forward pass and report XLA's FLOP count"
  )
  train = commands.add_parser(
    "train",
    allow_abbrev=False,
    help="train (or resume) a run in a workdir",
    description="Trains the configured network, evaluating and checkpointing as it goes. "
    "On a workdir that holds a checkpoint it resumes from the latest one.",
  )
  train.add_argument("--config", required=True, help=CONFIG_HELP)
  train.add_argument(
    "--workdir",
    required=True,
    help="where config.json, checkpoints/, metrics.jsonl and tensorboard/ go",
  )
  evaluate = commands.add_parser(
    "eval",
    allow_abbrev=False,
    help="evaluate a checkpoint of a run, or an ensemble of runs",
    description="Evaluates the latest (or the chosen) checkpoint in a workdir on the eval split, "
    "with 1, 10 or 144 views of each image (the paper's Section 7); several workdirs are an "
    "ensemble, their softmax averaged (the paper's seven models).",
  )
  evaluate.add_argument("--config", help=CONFIG_HELP + WORKDIR_CONFIG)
  evaluate.add_argument(
    "--workdir",
    required=True,
    action="append",
    help="the run's workdir; repeat it for an ensemble of runs of one network",
  )
  evaluate.add_argument(
    "--step", type=int, default=None, help="the checkpoints' step (default: the latest)"
  )
  evaluate.add_argument(
    "--crops",
    type=int,
    default=1,
    help="views per image, softmax averaged: 1 (the centre crop), 10 (four corners and the "
    "centre, mirrored), 144 (4 scales x 3 squares x 6 crops x 2 mirrors) (default: 1)",
  )
  evaluate.add_argument(
    "--json", action="store_true", help="print the result as one JSON line (the last line)"
  )
  predict = commands.add_parser(
    "predict",
    allow_abbrev=False,
    help="classify image files with a run's checkpoint",
    description="Prints the top classes of each image (JPEG, PNG) by the checkpoint in a "
    "workdir, after the eval preprocessing; class names come from the dataset's "
    "TFDS metadata.",
  )
  predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
  predict.add_argument("--workdir", required=True, help="a run's (or an import's) workdir")
  predict.add_argument("--config", help=CONFIG_HELP + WORKDIR_CONFIG)
  predict.add_argument(
    "--step", type=int, default=None, help="the checkpoint's step (default: the latest)"
  )
  predict.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
  predict.add_argument(
    "--json",
    action="store_true",
    help='print a JSON list: {"image", "top": [{"class", "label", "probability"}, ...]} per image',
  )
  imports = commands.add_parser(
    "import-weights",
    allow_abbrev=False,
    help="a published GoogLeNet's weights as a workdir",
    description="Reads torchvision's googlenet state dict (.pth or .safetensors) or BVLC's "
    "caffemodel into our network and writes WORKDIR as a finished run leaves it "
    "(config.json, a checkpoint, metrics.jsonl) for eval, predict and fine-tuning "
    "(--config.init_from=WORKDIR).",
  )
  imports.add_argument(
    "--from",
    dest="source",
    required=True,
    choices=("torchvision", "bvlc"),
    help="torchvision: googlenet-1378be20.pth (" + TORCHVISION_URL + ") or any "
    "state dict of torchvision.models.googlenet; bvlc: "
    "bvlc_googlenet.caffemodel (" + BVLC_GOOGLENET_URL + ")",
  )
  imports.add_argument("--weights", required=True, metavar="FILE", help="the weights file")
  imports.add_argument("--workdir", required=True, help="a new directory to write")
  imports.add_argument(
    "--config",
    default=None,
    help="the network's config (default: configs/imagenet.py:torchvision or :paper, in float32)",
  )
  sweep = commands.add_parser(
    "sweep",
    allow_abbrev=False,
    help="run a grid of config overrides and report on it",
    description="Runs every point of a sweep file's grid as its own `inception-jax train` in "
    "WORKDIR/<point name> (finished points are skipped, interrupted ones resume), "
    "then writes results.csv, results.md and curves.png in WORKDIR. "
    "--config.KEY=VALUE overrides apply to every point.",
  )
  sweep.add_argument(
    "sweep_file",
    metavar="SWEEP_FILE",
    help="a sweep file: a config with get_hyper(hyper), e.g. experiments/ablation_module.py",
  )
  sweep.add_argument("--workdir", required=True, help="the sweep's directory, e.g. runs/NAME")
  sweep.add_argument(
    "--index",
    type=int,
    default=None,
    help="run only the points i with i %% COUNT == INDEX "
    "(default: $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN, else 0)",
  )
  sweep.add_argument(
    "--count",
    type=int,
    default=None,
    help="how many shares the sweep is split into (default: $SLURM_ARRAY_TASK_COUNT, else 1)",
  )
  sweep.add_argument(
    "--dry-run", action="store_true", help="print each point's train command instead of running it"
  )
  sweep.add_argument(
    "--parallel",
    type=int,
    default=1,
    metavar="N",
    help="run up to N points at once, each on its own GPUs, TPU chips or CPU cores (the "
    "machine's split evenly; default: 1)",
  )
  bench = commands.add_parser(
    "bench",
    allow_abbrev=False,
    help="time our train and eval steps against PyTorch's GoogLeNet",
    description="Times the pmapped train step and the eval forward pass of each network, dtype "
    "and batch size, then the same for PyTorch's GoogLeNet (eager and torch.compile, "
    "if torch is installed) in the same process, and the input pipeline alone. "
    "Writes OUT/bench.json and OUT/bench.md.",
  )
  bench.add_argument(
    "--networks",
    type=_names,
    default=BenchOptions.networks,
    help="comma-separated: torchvision224, small32, tiny16 (default: torchvision224,small32)",
  )
  bench.add_argument(
    "--dtypes",
    type=_names,
    default=BenchOptions.dtypes,
    help="comma-separated compute dtypes (default: float32,bfloat16)",
  )
  bench.add_argument(
    "--batch-sizes",
    type=_integers,
    default=None,
    help="comma-separated global batch sizes (default: 8,32 on CPU, 64,128,256 on GPU and TPU)",
  )
  bench.add_argument(
    "--modes",
    type=_names,
    default=BenchOptions.modes,
    help="comma-separated: train, eval (default: both)",
  )
  bench.add_argument(
    "--steps",
    type=int,
    default=BenchOptions.steps,
    help="timed steps per case; the median is reported (default: 10)",
  )
  bench.add_argument(
    "--warmup",
    type=int,
    default=BenchOptions.warmup,
    help="untimed steps after compiling (default: 2)",
  )
  bench.add_argument(
    "--rounds",
    type=int,
    default=BenchOptions.rounds,
    help="time each case's frameworks in turn this many times and report the median round: "
    "steadier ratios on a machine whose speed drifts (default: 1)",
  )
  bench.add_argument(
    "--torch",
    choices=("auto", "none", "required"),
    default="auto",
    help="the PyTorch peer: auto runs it if torch is installed (default)",
  )
  bench.add_argument(
    "--torch-variants",
    type=_names,
    default=BenchOptions.torch_variants,
    help="comma-separated: eager, compile (default: both)",
  )
  bench.add_argument(
    "--pipeline-threads",
    type=_integers,
    default=BenchOptions.pipeline_threads,
    help="comma-separated tf.data thread counts for the input pipeline, 0 = "
    "every core, empty to skip (default: 1,0)",
  )
  bench.add_argument(
    "--pipeline-seconds",
    type=float,
    default=BenchOptions.pipeline_seconds,
    help="seconds per input pipeline measurement (default: 10)",
  )
  bench.add_argument(
    "--profile-steps",
    type=int,
    default=BenchOptions.profile_steps,
    help="after timing, trace this many steps of each case (jax.profiler, torch.profiler) and "
    "report where the step's time goes, by part of the network (default: 0, none)",
  )
  bench.add_argument("--out", default="runs/bench", help="where bench.json and bench.md go")
  return parser


def _names(text: str) -> tuple[str, ...]:
  return tuple(part.strip() for part in text.split(",") if part.strip())


def _integers(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in _names(text))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def bench_options(args: argparse.Namespace) -> BenchOptions:
  """The bench's options from its parsed command line."""
  return BenchOptions(
    **{field.name: getattr(args, field.name) for field in dataclasses.fields(BenchOptions)}
  )


def main(argv: Sequence[str] | None = None) -> int:
  if argv is None:  # run as the command, not called from Python: its process is ours to set up
    launch.set_up_command()
  args, rest = _parser().parse_known_args(argv)
  absl.logging.set_verbosity(absl.logging.ERROR)  # the libraries' notices drown the progress lines
  try:
    overrides = parse_override_args(rest)
    if args.command == "bench":
      from inception_jax.bench.run import run_bench

      run_bench(
        bench_options(args), args.out, shlex.join(["inception-jax", *(argv or sys.argv[1:])])
      )
      return 0
    if args.command == "sweep":
      from inception_jax.sweeps.run import run_sweep

      return run_sweep(
        args.sweep_file,
        args.workdir,
        overrides,
        index=args.index,
        count=args.count,
        dry_run=args.dry_run,
        parallel=args.parallel,
      )
    if args.command == "import-weights":
      from inception_jax.weights.importer import import_weights

      import_weights(args.source, args.weights, args.workdir, args.config, overrides)
      return 0
    if args.config is None and args.command == "eval":  # the config the runs themselves wrote
      config = load_ensemble_config(args.workdir, overrides)
    elif args.config is None:  # predict
      config = load_workdir_config(args.workdir, overrides)
    else:
      config = load_config(args.config, overrides)
    if args.command == "summarize":
      from inception_jax.summarize import summarize

      print(summarize(config, as_json=args.json, compare=args.compare, xla=args.xla))
    elif args.command == "train":
      from inception_jax.training.trainer import Interrupted, NonFiniteLoss, train_and_evaluate

      try:
        train_and_evaluate(config, args.workdir)
      except Interrupted as stop:
        print(
          f"inception-jax train: {signal.Signals(stop.signal).name}: saved a checkpoint at "
          f"step {stop.step}; the same command resumes from it.",
          file=sys.stderr,
        )
        return 128 + stop.signal
      except NonFiniteLoss as stop:
        kept = (
          f"The last good checkpoint, step {stop.last_checkpoint}, is kept as it was"
          if stop.last_checkpoint is not None
          else "No checkpoint had been written yet"
        )
        print(
          f"inception-jax train: error: the loss is {stop.value} at step {stop.step}; "
          f"training stopped there. {kept}. Lower the learning rate (or check the data) and "
          f"run the command again to resume.",
          file=sys.stderr,
        )
        return 1
    elif args.command == "eval":
      from inception_jax.training.reporting import eval_line
      from inception_jax.training.trainer import evaluate

      result = evaluate(config, args.workdir, args.step, args.crops)
      print(json.dumps(result) if args.json else eval_line(result["step"], result, args.crops))
    elif args.command == "predict":
      from inception_jax.predict import format_predictions, predict

      if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}.")
      print(
        format_predictions(
          predict(config, args.workdir, args.images, args.top, args.step), args.json
        )
      )
  except ConfigError as error:
    print(f"inception-jax {args.command}: error: {error}", file=sys.stderr)
    return 2
  except StoppedEarly as stop:
    print(f"inception-jax {args.command}: {stop}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + stop.signal)  # not a return: Python's exit would wait for the busy threads
  except BrokenPipeError:  # the reader of stdout left (`| head`): stop quietly, as with SIGPIPE
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
    return 128 + signal.SIGPIPE
  return 0


if __name__ == "__main__":
  sys.exit(main())
