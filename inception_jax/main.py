"""The `inception-jax` command: parses the command line and calls one subcommand. Nothing else."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import absl.logging

from inception_jax.config import load_config, parse_override_args
from inception_jax.errors import ConfigError

CONFIG_HELP = ("config file, optionally with an argument: configs/imagenet.py[:torchvision]. "
               "Override any of its fields with --config.KEY=VALUE, e.g. "
               "--config.model.module=naive --config.model.kernel_sizes=(1,3,3)")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="inception-jax", allow_abbrev=False,
      description="GoogLeNet (Inception-v1) in JAX/Flax.")
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  summarize = commands.add_parser(
      "summarize", allow_abbrev=False, help="per-layer output shapes, parameters, multiply-adds",
      description="A Table-1-style table of the configured network: output shape, parameters "
                  "and multiply-adds per layer, with the paper's figures beside them.")
  summarize.add_argument("--config", required=True, help=CONFIG_HELP)
  summarize.add_argument("--json", action="store_true", help="print the rows as a JSON list")
  summarize.add_argument("--compare", action="store_true",
                         help="naive and reduced modules side by side")
  summarize.add_argument("--xla", action="store_true",
                         help="also compile the forward pass and report XLA's FLOP count")
  train = commands.add_parser(
      "train", allow_abbrev=False, help="train (or resume) a run in a workdir",
      description="Trains the configured network, evaluating and checkpointing as it goes. "
                  "On a workdir that holds a checkpoint it resumes from the latest one.")
  train.add_argument("--config", required=True, help=CONFIG_HELP)
  train.add_argument("--workdir", required=True,
                     help="where config.json, checkpoints/, metrics.jsonl and tensorboard/ go")
  evaluate = commands.add_parser(
      "eval", allow_abbrev=False, help="evaluate a checkpoint of a run",
      description="Evaluates the latest (or the chosen) checkpoint in a workdir on the eval split.")
  evaluate.add_argument("--config", required=True, help=CONFIG_HELP)
  evaluate.add_argument("--workdir", required=True, help="the run's workdir")
  evaluate.add_argument("--step", type=int, default=None,
                        help="the checkpoint's step (default: the latest)")
  sweep = commands.add_parser(
      "sweep", allow_abbrev=False, help="run a grid of config overrides and report on it",
      description="Runs every point of a sweep file's grid as its own `inception-jax train` in "
                  "WORKDIR/<point name> (finished points are skipped, interrupted ones resume), "
                  "then writes results.csv, results.md and curves.png in WORKDIR. "
                  "--config.KEY=VALUE overrides apply to every point.")
  sweep.add_argument("sweep_file", metavar="SWEEP_FILE",
                     help="a sweep file: a config with get_hyper(hyper), e.g. "
                          "experiments/ablation_module.py")
  sweep.add_argument("--workdir", required=True, help="the sweep's directory, e.g. runs/NAME")
  sweep.add_argument("--index", type=int, default=None,
                     help="run only the points i with i %% COUNT == INDEX "
                          "(default: $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN, else 0)")
  sweep.add_argument("--count", type=int, default=None,
                     help="how many shares the sweep is split into "
                          "(default: $SLURM_ARRAY_TASK_COUNT, else 1)")
  sweep.add_argument("--dry-run", action="store_true",
                     help="print each point's train command instead of running it")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args, rest = _parser().parse_known_args(argv)
  absl.logging.set_verbosity(absl.logging.ERROR)  # the libraries' notices drown the progress lines
  try:
    overrides = parse_override_args(rest)
    if args.command == "sweep":
      from inception_jax.sweeps.run import run_sweep
      return run_sweep(args.sweep_file, args.workdir, overrides, index=args.index,
                       count=args.count, dry_run=args.dry_run)
    config = load_config(args.config, overrides)
    if args.command == "summarize":
      from inception_jax.summarize import summarize
      print(summarize(config, as_json=args.json, compare=args.compare, xla=args.xla))
    elif args.command == "train":
      from inception_jax.training.trainer import Interrupted, train_and_evaluate
      try:
        train_and_evaluate(config, args.workdir)
      except Interrupted as stop:
        print(f"inception-jax train: SIGTERM: saved a checkpoint at step {stop.step}; "
              f"the same command resumes from it.", file=sys.stderr)
        return 128 + signal.SIGTERM
    elif args.command == "eval":
      from inception_jax.training.trainer import evaluate
      evaluate(config, args.workdir, args.step)
  except ConfigError as error:
    print(f"inception-jax {args.command}: error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
