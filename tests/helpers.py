"""What the tests share: the tiny config, its command line in a subprocess, and comparisons of the
files a run leaves."""

import hashlib
import os
import pathlib
import subprocess
import sys
import time

from inception_jax.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "tiny_config.py"
STEPS = 12  # the tiny run's length (conftest's `tiny` overrides)
TIMING = ("images_per_second", "seconds", "peak_memory_bytes")  # the only fields that may differ


def command_line(command, workdir, overrides, extra=()):
  args = [
    sys.executable,
    "-m",
    "inception_jax.main",
    command,
    "--config",
    str(TINY_CONFIG),
    "--workdir",
    str(workdir),
  ]
  return args + [f"--config.{key}={value}" for key, value in overrides.items()] + list(extra)


def tiny_config(overrides):
  return load_config(str(TINY_CONFIG), overrides)


def subprocess_env(devices=1):
  env = dict(
    os.environ,
    JAX_COMPILATION_CACHE_DIR=str(ROOT / ".pytest_cache" / "jax"),
    TF_CPP_MIN_LOG_LEVEL="2",
  )
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def run_command(command, workdir, overrides, devices=1, extra=()):
  return subprocess.run(
    command_line(command, workdir, overrides, extra),
    env=subprocess_env(devices),
    capture_output=True,
    text=True,
    timeout=600,
  )


def run_in_process(capfd, command, workdir, overrides, extra=()) -> subprocess.CompletedProcess:
  """The command run by its entry point in this process (no start-up of its own, compiled steps
  shared), with what it printed, at the file-descriptor level, as a finished process's."""
  from inception_jax.main import main  # pylint: disable=import-outside-toplevel

  capfd.readouterr()
  code = main(command_line(command, workdir, overrides, extra)[3:])
  out, err = capfd.readouterr()
  return subprocess.CompletedProcess(command, code, out, err)


def start_train(workdir, overrides):
  return subprocess.Popen(
    command_line("train", workdir, overrides),
    env=subprocess_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def wait_for(path: pathlib.Path, process: subprocess.Popen, timeout=300):
  """Waits until `path` exists and is not empty."""
  deadline = time.monotonic() + timeout
  while not (path.exists() and (path.is_dir() or path.stat().st_size)):
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def without_timing(records):
  return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


def digest(folder: pathlib.Path) -> dict[str, str]:
  return {
    str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(folder.rglob("*"))
    if path.is_file()
  }
