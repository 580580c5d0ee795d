"""Shared fixtures: configs loaded the way the command line loads them, and one small model."""

import pathlib

import jax
import pytest

from inception_jax.config import load_config
from inception_jax.models import build_model, init_variables

ROOT = pathlib.Path(__file__).resolve().parents[1]

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
