"""Careless input and faults end in one clear message and a non-zero exit, and lose nothing:
config and sweep files that do not run, images too small for the network, a loss gone NaN."""

import json
import shutil
import signal
import subprocess
import sys

import pytest
import stalling_dataset
from helpers import ROOT, TINY_CONFIG, digest, subprocess_env

from inception_jax.main import main


def inception_jax(*args):
  """The command as a user runs it, in its own process."""
  return subprocess.run(
    [sys.executable, "-m", "inception_jax.main", *map(str, args)],
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )


def one_error(result, code=2):
  assert result.returncode == code, result.stderr
  errors = [line for line in result.stderr.splitlines() if "inception-jax" in line]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  return errors[0]


@pytest.mark.parametrize(
  "body, line, error",
  [
    ("import ml_collections\n\ndef get_config():\n  x = (1,\n", 4, "SyntaxError"),
    ("import ml_collections\n\ndef get_config():\n  return {}['model']\n", 4, "KeyError: 'model'"),
    ("import not_a_module\n", 1, "ModuleNotFoundError"),
  ],
)
def test_a_config_file_that_does_not_run_is_named_with_its_line(
  tmp_path, capsys, body, line, error
):
  path = tmp_path / "broken.py"
  path.write_text(body)
  assert main(["summarize", "--config", str(path)]) == 2
  err = capsys.readouterr().err
  assert f"{path}, line {line}: {error}" in err and "Traceback" not in err


def test_a_sweep_file_copied_elsewhere_still_finds_its_base_config(tmp_path):
  copy = shutil.copy(ROOT / "experiments" / "ablation_module.py", tmp_path)
  result = inception_jax("sweep", copy, "--workdir", tmp_path / "runs", "--dry-run")
  assert result.returncode == 0, result.stderr
  assert result.stdout.count("inception-jax train --config") == 12


def test_a_sweep_file_whose_base_config_is_missing_says_which_file_looked(tmp_path):
  sweep = tmp_path / "sweep.py"
  sweep.write_text(
    "from inception_jax.config import load_config\n\n"
    "def get_config():\n  return load_config('/nowhere/default.py')\n\n"
    "def get_hyper(hyper):\n  return hyper.sweep('seed', [1, 2])\n"
  )
  message = one_error(inception_jax("sweep", sweep, "--workdir", tmp_path / "runs", "--dry-run"))
  assert f"{sweep}, line 4: config file '/nowhere/default.py' does not exist" in message
  assert "--config" not in message  # the sweep command has no such flag
  assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
  "config, size, smallest",
  [
    ("configs/default.py", 1, 4),
    ("configs/imagenet.py", 8, 79),  # the paper's aux heads pool 5x5 windows of 4a's output
    ("configs/imagenet.py:torchvision", 8, 15),  # adaptive aux pooling takes any size
  ],
)
def test_an_image_size_too_small_names_the_smallest_that_works(capsys, config, size, smallest):
  assert main(["summarize", "--config", config, f"--config.image_size={size}"]) == 2
  err = capsys.readouterr().err
  assert f"images of {size}x{size} are too small" in err
  assert f"--config.image_size={smallest} or more" in err and "Traceback" not in err
  assert main(["summarize", "--config", config, f"--config.image_size={smallest}"]) == 0
  assert main(["summarize", "--config", config, f"--config.image_size={smallest - 1}"]) == 2


def test_train_refuses_a_too_small_image_size_before_writing(data_dir, tmp_path):
  message = one_error(
    inception_jax(
      "train",
      "--config",
      TINY_CONFIG,
      "--workdir",
      tmp_path / "r",
      "--config.image_size=2",
      f"--config.data.dir={data_dir}",
    )
  )
  assert "--config.image_size=4 or more" in message
  assert not (tmp_path / "r").exists()


def test_a_loss_gone_nan_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  args = [
    "train",
    "--config",
    TINY_CONFIG,
    "--workdir",
    tmp_path,
    "--config.learning_rate=30",
    "--config.schedule=constant",
    "--config.warmup_epochs=0",
    "--config.num_train_steps=30",
    "--config.checkpoint_every_steps=3",
    "--config.log_every_steps=5",
    f"--config.data.dir={data_dir}",
  ]
  message = one_error(inception_jax(*args), code=1)
  step = int(message.split(" at step ")[1].split(";")[0])
  kept = int(message.split("last good checkpoint, step ")[1].split(",")[0])
  assert "the loss is nan" in message and kept == step - step % 3 - (step % 3 == 0) * 3
  assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == kept
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
  assert all(r["step"] < step and r["loss"] == r["loss"] for r in records)  # no NaN written
  before = digest(tmp_path / "checkpoints")
  assert one_error(inception_jax(*args), code=1) == message  # deterministic, and nothing lost
  assert digest(tmp_path / "checkpoints") == before


def test_ctrl_c_while_a_dataset_is_prepared_stops_at_once_and_writes_nothing(tmp_path):
  """TFDS's download threads retry for minutes where the network fails; Ctrl-C does not wait."""
  workdir = tmp_path / "run"
  command = "import sys, stalling_dataset, inception_jax.main as m; sys.exit(m.main(sys.argv[1:]))"
  process = subprocess.Popen(
    [
      sys.executable,
      "-c",
      command,
      "train",
      "--config",
      TINY_CONFIG,
      "--workdir",
      workdir,
      "--config.data.name=stalling_download",
      f"--config.data.dir={tmp_path / 'tfds'}",
    ],
    env={**subprocess_env(), "PYTHONPATH": str(ROOT / "tests")},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in process.stdout:
    if line.startswith(stalling_dataset.STARTED):
      break
  process.send_signal(signal.SIGINT)
  result = subprocess.CompletedProcess(
    process.args, process.wait(timeout=30), "", process.stderr.read()
  )
  error = one_error(result, code=130)
  assert "stopped while TFDS prepared dataset 'stalling_download'" in error
  assert "tfds build stalling_download" in error and not workdir.exists()


def test_output_piped_into_a_reader_that_leaves_early_ends_quietly(tmp_path):
  """`inception-jax sweep ... --dry-run | head -1`: no traceback when the reader has gone."""
  sweep = ROOT / "experiments" / "ablation_module.py"
  process = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "inception_jax.main",
      "sweep",
      sweep,
      "--workdir",
      tmp_path,
      "--dry-run",
    ],
    env=subprocess_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  process.stdout.close()  # the reader leaves before the first line
  assert process.wait(timeout=120) == 128 + signal.SIGPIPE
  assert "Traceback" not in process.stderr.read()
