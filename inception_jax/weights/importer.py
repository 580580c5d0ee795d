"""`inception-jax import-weights`: a published GoogLeNet's weights as a workdir of ours.

The workdir is laid out as a run leaves it (config.json, an orbax checkpoint, metrics.jsonl), so
`eval`, `predict` and fine-tuning (`--config.init_from=DIR`) use it like any other. Everything is
read and checked before anything is written, and the workdir appears only when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from inception_jax.config import PROJECT_CONFIGS, config_json, load_config
from inception_jax.errors import ConfigError, choose
from inception_jax.models import build_model, variable_shapes
from inception_jax.training import devices, optim
from inception_jax.training.checkpoints import Checkpoints
from inception_jax.training.reporting import METRICS_FILE
from inception_jax.training.steps import create_train_state
from inception_jax.weights.caffe import read_caffemodel
from inception_jax.weights.mapping import NAMINGS, Naming, aux_prefixes, to_variables
from inception_jax.weights.pth import read_pth
from inception_jax.weights.sources import BVLC_GOOGLENET_URL, TORCHVISION_URL


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A PyTorch state dict from a .pth (read without PyTorch) or a .safetensors file."""
  if str(path).endswith(".safetensors"):
    from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(path):
      raise ConfigError(f"weights file {str(path)!r} does not exist.")
    try:
      return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
      raise ConfigError(
        f"{path} is not a readable .safetensors file ({error}); it may be "
        f"truncated: download or save it again."
      ) from None
  return read_pth(path)


def read_bvlc(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A caffemodel's blobs as LAYER.weight and LAYER.bias (Caffe's blob order)."""
  tensors = {}
  for layer, blobs in read_caffemodel(path).items():
    names = ("weight", "bias") if len(blobs) == 2 else tuple(f"blob{i}" for i in range(len(blobs)))
    tensors.update({f"{layer}.{name}": blob for name, blob in zip(names, blobs, strict=True)})
  return tensors


@dataclasses.dataclass(frozen=True)
class Source:
  """One published weight set: where it comes from and what it expects."""

  description: str
  preset: str  # configs/imagenet.py's preset describing the network
  input_transform: str  # models.googlenet.INPUT_TRANSFORMS: what the network was trained to see
  read: Callable[[str], dict[str, np.ndarray]]
  naming: Naming
  url: str


SOURCES = {
  "torchvision": Source(
    "torchvision's googlenet",
    "torchvision",
    "symmetric",
    read_state_dict,
    NAMINGS["torchvision"],
    TORCHVISION_URL,
  ),
  "bvlc": Source(
    "BVLC GoogLeNet (Caffe)", "paper", "caffe_bgr", read_bvlc, NAMINGS["bvlc"], BVLC_GOOGLENET_URL
  ),
}


def default_config(source: str) -> str:
  """configs/imagenet.py with the source's preset (a source checkout or editable install)."""
  return f"{PROJECT_CONFIGS / 'imagenet.py'}:{choose(SOURCES, source, '--from').preset}"


def _check_new_workdir(workdir: pathlib.Path) -> None:
  if workdir.is_file() or (workdir.is_dir() and any(workdir.iterdir())):
    raise ConfigError(
      f"{workdir} already exists and is not empty (a run?); import into a new "
      f"--workdir. Nothing was written."
    )


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    for chunk in iter(lambda: file.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def import_weights(
  source_name: str,
  weights_file: str,
  workdir: str,
  config_spec: str | None,
  overrides: Mapping[str, Any],
) -> pathlib.Path:
  """Reads `weights_file` of `source_name` into the configured network; writes `workdir`.

  The config (default: configs/imagenet.py with the source's preset) computes in float32 unless
  overridden, takes the source's input transform, and has aux heads exactly when the file does.
  """
  source = choose(SOURCES, source_name, "--from")
  target = pathlib.Path(workdir).absolute()
  _check_new_workdir(target)
  tensors = source.read(weights_file)
  config = load_config(
    config_spec or default_config(source_name),
    {"model.dtype": "float32", "model.input_transform": source.input_transform, **overrides},
  )
  has_aux = any(key.startswith(aux_prefixes(source.naming)) for key in tensors)
  config.model.aux_heads = has_aux
  model = build_model(config.model)
  expected = variable_shapes(model, config.image_size)
  variables = to_variables(
    tensors, model, expected, source.naming, f"{weights_file} (read as {source.description})"
  )
  tx = optim.optimizer(config, optax.constant_schedule(config.learning_rate))
  state = create_train_state(config, model, tx, variables)

  origin = {
    "source": source_name,
    "file": str(pathlib.Path(weights_file).absolute()),
    "sha256": _sha256(weights_file),
    "aux_heads": has_aux,
  }
  partial = target.with_name(f".{target.name}.importing")
  shutil.rmtree(partial, ignore_errors=True)  # an earlier import of ours that was interrupted
  partial.mkdir(parents=True)
  (partial / "config.json").write_text(config_json(config))
  with Checkpoints(partial, keep=1) as checkpoints:
    checkpoints.save(
      0,
      devices.to_checkpoint(devices.put_state(state)),
      {"step": 0, "seconds": 0.0, "imported": origin},
    )
  (partial / METRICS_FILE).write_text(json.dumps({"step": 0, "split": "import", **origin}) + "\n")
  if target.is_dir():  # empty, checked above
    target.rmdir()
  partial.rename(target)
  parameters = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  print(
    f"Imported {source.description} from {weights_file} into {target}: "
    f"{parameters:,} parameters{' (aux heads included)' if has_aux else ' (no aux heads)'}, "
    f"{'float32' if config.model.dtype == 'float32' else config.model.dtype} compute, input "
    f"transform {config.model.input_transform!r}.\nNext: inception-jax predict --workdir "
    f"{workdir} IMAGE ... | inception-jax eval --workdir {workdir} | fine-tune with "
    f"inception-jax train --config CONFIG --config.init_from={workdir} --workdir NEW"
  )
  return target
