"""Bad input on the command line: one clear message, exit code 2, no traceback."""

import os
import subprocess
import sys

import pytest

from inception_jax import launch
from inception_jax.config import apply_overrides, parse_override_args
from inception_jax.errors import ConfigError
from inception_jax.main import main


@pytest.mark.parametrize(
  "args, message",
  [
    (
      ["--config.model.modul=naive"],
      "unknown config key 'model.modul' (did you mean 'model.module'?)",
    ),
    (["--config.model.width_multiplier=wide"], "config.model.width_multiplier expects a number"),
    (["--config.learning_rate=1e999"], "config.learning_rate expects a finite number"),
    (["--config.learning_rate=nan"], "config.learning_rate expects a finite number"),
    (["--config.model.num_classes=10.5"], "config.model.num_classes expects an integer"),
    (["--config.model.aux_heads=maybe"], "expects true or false"),
    (["--config.model.kernel_sizes=3"], "expects a tuple"),
    (["--config.model=naive"], "is a group of settings"),
    (["--config.model.module=wide"], "model.module='wide' is not a valid choice"),
    (["--epochs=3"], "unrecognised argument '--epochs=3'"),
  ],
)
def test_bad_overrides_exit_2_with_one_message(capsys, args, message):
  assert main(["summarize", "--config", "configs/imagenet.py", *args]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_missing_config_file(capsys):
  assert main(["summarize", "--config", "configs/nope.py"]) == 2
  assert "config file 'configs/nope.py' does not exist" in capsys.readouterr().err


def test_overrides_parse_as_the_type_they_replace(load):
  config = load("imagenet.py")
  apply_overrides(
    config,
    parse_override_args(
      [
        "--config.model.kernel_sizes=(1,3,7)",
        "--config.model.dropout=0",
        "--config.model.aux_heads",
        "off",
        "--config.image_size=299",
        "--config.model.norm=batchnorm",
      ]
    ),
  )
  assert config.model.kernel_sizes == (1, 3, 7) and config.model.dropout == 0.0
  assert config.model.aux_heads is False and config.image_size == 299
  assert config.model.norm == "batchnorm"
  with pytest.raises(ConfigError, match="needs a value"):
    parse_override_args(["--config.model.dropout"])


def test_console_script_is_installed():
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "inception_jax.main",
      "summarize",
      "--config",
      "configs/imagenet.py:torchvision",
      "--config.model.aux_heads=false",
    ],
    capture_output=True,
    text=True,
    check=True,
  )
  assert "6.62M" in result.stdout
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "inception_jax.main",
      "summarize",
      "--config",
      "configs/imagenet.py:resnet",
    ],
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and "choose one of: paper, small, torchvision" in bad.stderr


def test_tunables_are_added_once_and_never_override_the_users():
  glibc, allowed = (2, 36), True
  tuned = launch.tuned_environment({"PATH": "/bin"}, glibc, allowed)
  assert tuned["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and tuned["PATH"] == "/bin"
  assert launch.tuned_environment(tuned, glibc, allowed) is None  # the re-executed process
  mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
  assert launch.tuned_environment(mine, glibc, allowed)["GLIBC_TUNABLES"] == (
    "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  )
  assert (
    launch.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, glibc, allowed) is None
  )
  assert launch.tuned_environment({}, (2, 31), allowed) is None  # glibc without the tunable
  assert launch.tuned_environment({}, None, allowed) is None  # macOS, musl
  assert launch.tuned_environment({}, glibc, False) is None  # huge pages off in the kernel


def test_the_command_reruns_itself_once_with_the_tunables():
  code = (
    "import os; from inception_jax import launch; print('ran'); launch.reexecute_with_tunables(); "
    "print(os.environ.get('GLIBC_TUNABLES'))"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", launch._DONE)}
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
  )
  applies = launch.tuned_environment(env, launch._glibc_version(), launch._huge_pages_allowed())
  expected = ["ran", "ran", "glibc.malloc.hugetlb=1"] if applies else ["ran", "None"]
  assert result.stdout.split() == expected


def test_the_command_imports_tensorflow_without_keras_until_asked():
  """TensorFlow's __init__ imports Keras' optimizers (Keras, scikit-learn, matplotlib: 1.7-1.9 s
  of every command); the command's process skips that, and tf.keras still loads Keras on use.
  Its C++ INFO notices are left out too, and the oneDNN notice with its kernels."""
  code = (
    "import sys; from inception_jax import launch; launch.set_up_command(); "
    "import tensorflow as tf; print('keras' in sys.modules, launch.EAGER_KERAS in sys.modules); "
    "tf.keras.layers.Dense(1); print('keras' in sys.modules)"
  )
  left_to_us = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
  env = {k: v for k, v in os.environ.items() if k not in left_to_us}
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
  )
  assert result.stdout.split() == ["False", "False", "True"]
  assert "cpu_feature_guard" not in result.stderr  # TensorFlow's INFO notices, left out
  assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr
