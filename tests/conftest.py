"""Shared fixtures: configs loaded the way the command line loads them, one small model, the
embedded digits and one uninterrupted tiny run."""

import os
import pathlib

# In-process runs get TensorFlow as the command sets it up (launch.set_up_command), before any
# import of it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax
import pytest
from helpers import STEPS, tiny_config

from inception_jax.config import load_config
from inception_jax.models import build_model, init_variables
from inception_jax.training.trainer import train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
AUGMENTATIONS = ("inception_crop", "flip", "photometric", "random_interpolation")

# Compiling GoogLeNet's initialisation takes ~25 s on a CPU (one RNG kernel per parameter);
# the on-disk cache makes every later compile of the same program, in any test, a lookup.
jax.config.update("jax_compilation_cache_dir", str(ROOT / ".pytest_cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def load():
  """load('imagenet.py:torchvision', {'model.module': 'naive'}) -> ConfigDict from configs/."""
  return lambda spec, overrides=None: load_config(str(ROOT / "configs" / spec), overrides)


@pytest.fixture(scope="session")
def small(load):
  """configs/default.py's model (32x32, quarter width, aux heads) and its initial variables."""
  model = build_model(load("default.py").model)
  return model, init_variables(model, jax.random.key(0), (32, 32, 3))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir for the embedded digits, built once per session."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny(data_dir):
  """Overrides that make the tiny config a 12-step run with checkpoints every 4 steps, with the
  paper's whole augmentation on (the photometric distortions in the train step included), so
  that resuming and splitting over devices are checked with every random draw there is."""
  return {
    **{f"augment.{switch}": True for switch in AUGMENTATIONS},
    "num_train_steps": STEPS,
    "log_every_steps": 4,
    "checkpoint_every_steps": 4,
    "eval_every_steps": 8,
    "data.dir": str(data_dir),
  }


@pytest.fixture(scope="session")
def tiny_run(tiny, tmp_path_factory):
  """One uninterrupted 12-step run, in this process."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  train_and_evaluate(tiny_config(tiny), str(workdir))
  return workdir
