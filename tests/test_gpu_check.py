"""experiments/gpu_check.sh: the commands it would time on a lent GPU, checked against the CLI
and the configs here, so that a rare device session does not find them broken."""

import os
import pathlib
import shlex
import subprocess

import pytest
import tensorflow_datasets as tfds

from inception_jax.bench.run import check_options
from inception_jax.config import load_config, parse_override_args
from inception_jax.data import input_pipeline  # noqa: F401  (registers the datasets)
from inception_jax.main import _parser, bench_options
from inception_jax.training.trainer import check_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands(*flags: str) -> list[list[str]]:
  printed = subprocess.run(
    ["bash", ROOT / "experiments" / "gpu_check.sh", "commands", *flags],
    env={**os.environ, "PYTHON": "python3"},
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  commands = [shlex.split(line) for line in printed.splitlines()]
  assert {tuple(command[:3]) for command in commands} == {("python3", "-m", "inception_jax.main")}
  return [command[3:] for command in commands]


@pytest.mark.parametrize("flags", [(), ("--tiny",)], ids=["gpu", "tiny"])
def test_the_prepared_gpu_commands_are_valid_commands(flags, monkeypatch):
  monkeypatch.chdir(ROOT)  # the script runs them from the repository's root
  commands = _commands(*flags)
  assert [argv[0] for argv in commands] == ["bench", "train", "bench", "bench", "bench", "bench"]
  for argv in commands:
    args, rest = _parser().parse_known_args(argv)  # a bad flag or value: SystemExit
    if args.command == "bench":
      assert rest == []
      check_options(bench_options(args))
    else:
      config = load_config(args.config, parse_override_args(rest))
      check_config(config)
      tfds.builder(config.data.name)  # a dataset that exists (not built here)
