"""`inception-jax predict`: the top classes of image files, from a workdir's checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from inception_jax.data.labels import class_names
from inception_jax.data.preprocess import eval_image_file
from inception_jax.models import build_model, variable_shapes
from inception_jax.training import devices
from inception_jax.training.checkpoints import Checkpoints

BATCH = 32  # images per forward pass


def predict(
  config: ml_collections.ConfigDict,
  workdir: str,
  images: Sequence[str],
  top: int = 5,
  step: int | None = None,
) -> list[dict[str, Any]]:
  """For each image, its `top` classes by probability (softmax of the eval-mode logits):
  [{"image": PATH, "top": [{"class": INT, "label": STR, "probability": FLOAT}, ...]}, ...].

  Images go through the eval preprocessing (central `data.eval_crop_fraction` square, resized to
  `image_size`); the weights are the checkpoint's evaluated ones (its Polyak average if kept).
  """
  model = build_model(config.model)
  size = config.image_size
  expected = variable_shapes(model, size)
  with Checkpoints(workdir, read_only=True) as checkpoints:
    variables, _ = checkpoints.restore_variables(
      devices.checkpoint_sharding(),
      step,
      expected={"params": expected["params"], "batch_stats": expected.get("batch_stats", {})},
    )
  names = class_names(config.data)
  pixels = np.stack(
    [eval_image_file(path, size, config.data.eval_crop_fraction) for path in images]
  )
  forward = jax.jit(lambda v, batch: jax.nn.softmax(model.apply(v, batch, train=False).logits))
  probabilities = np.concatenate(
    [
      np.asarray(forward(variables, pixels[start : start + BATCH]))
      for start in range(0, len(pixels), BATCH)
    ]
  )
  results = []
  for path, row in zip(images, probabilities, strict=True):
    best = np.argsort(-row, kind="stable")[:top]
    results.append(
      {
        "image": path,
        "top": [
          {
            "class": int(c),
            "label": names[c] if c < len(names) else str(c),
            "probability": float(row[c]),
          }
          for c in best
        ],
      }
    )
  return results


def format_predictions(results: list[dict[str, Any]], as_json: bool) -> str:
  """A JSON list, or per image its path and one line per class: rank, probability, label."""
  if as_json:
    return json.dumps(results, indent=2)
  lines = []
  for result in results:
    lines.append(result["image"])
    lines += [
      f"  {rank}. {100 * entry['probability']:6.2f}%  {entry['label']} (class {entry['class']})"
      for rank, entry in enumerate(result["top"], 1)
    ]
  return "\n".join(lines)
