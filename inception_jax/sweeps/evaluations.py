"""What a sweep evaluates beyond its points' own runs: every finished point with the other test
protocols of EVAL_CROPS, and every configuration's seeds as one ensemble, with each of them.

Each point's evaluation is what `inception-jax eval` does (the command is printed, for rerunning
it by hand), run in the sweep's process once its training is over: a process per evaluation
would spend longer starting than evaluating. Results are kept as JSON files that the report reads
back, and redone only when what they evaluated changed (a point trained further, a seed added).
A point also keeps its per-image log-probabilities, views already averaged (images x classes
float32 per protocol: 14 KB for the 360 digits, 200 MB for ImageNet's 50,000), so a seed ensemble
is their average rather than a second pass over every member: at 144 crops, most of the cost.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from inception_jax.config import load_ensemble_config
from inception_jax.errors import ConfigError
from inception_jax.sweeps.grid import Point, shell_command
from inception_jax.training.reporting import eval_line, read_metrics
from inception_jax.training.trainer import ensemble, evaluate

POINT_FILE = "evals.json"  # in a point's workdir: {"144": eval's JSON result, ...}
ENSEMBLE_DIR = "ensembles"  # in the sweep's workdir: <configuration>.json
PREDICTIONS = ("log_probs", "labels")  # kept beside POINT_FILE, one .npz per protocol


def read_json(path: pathlib.Path) -> dict[str, Any]:
  return json.loads(path.read_text()) if path.exists() else {}


def write_atomically(path: pathlib.Path, data: str | bytes) -> None:
  """Shares of an array job finishing together never leave half a file: each writes its own
  partial file and renames it over `path`."""
  partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
  partial.write_bytes(data.encode() if isinstance(data, str) else data)
  os.replace(partial, path)


def _write_json(path: pathlib.Path, data: Mapping[str, Any]) -> None:
  write_atomically(path, json.dumps(data, indent=2) + "\n")


def _final_step(point_dir: pathlib.Path) -> int | None:
  evals = [r for r in read_metrics(point_dir) if r["split"] == "eval"]
  return evals[-1]["step"] if evals else None


def _eval_command(workdirs: Sequence[pathlib.Path], crops: int) -> str:
  workdir_args = (a for w in workdirs for a in ("--workdir", str(w)))
  return shell_command(["inception-jax", "eval", *workdir_args, "--crops", str(crops)])


def _predictions_path(point_dir: pathlib.Path, crops: int) -> pathlib.Path:
  return point_dir / f"predictions_{crops}crops.npz"


def _point_result(point_dir: pathlib.Path, crops: int, console: TextIO) -> dict[str, Any] | None:
  """The point's result with `crops` views per image at its final step, with its per-image
  predictions: kept from before, else evaluated now and kept; None (the reason on the console)
  if the evaluation failed."""
  step, path = _final_step(point_dir), point_dir / POINT_FILE
  done, predictions = read_json(path), _predictions_path(point_dir, crops)
  result = done.get(str(crops))
  if result is not None and result["step"] == step and predictions.exists():
    with np.load(predictions) as kept:
      return {**result, **{key: kept[key] for key in PREDICTIONS}}
  console.write(f"$ {_eval_command([point_dir], crops)}\n")
  console.flush()
  try:
    config = load_ensemble_config([point_dir])
    result = evaluate(config, [str(point_dir)], crops=crops, keep_predictions=True)
  except ConfigError as error:
    console.write(f"  failed: {error}\n")
    return None
  console.write(f"  {eval_line(result['step'], result, crops)}\n")
  buffer = io.BytesIO()
  np.savez(buffer, **{key: result[key] for key in PREDICTIONS})
  write_atomically(predictions, buffer.getvalue())
  done[str(crops)] = {k: v for k, v in result.items() if k not in PREDICTIONS}
  _write_json(path, done)
  return result


def evaluate_points(
  root: pathlib.Path, points: Sequence[Point], crops: Sequence[int], console: TextIO
) -> None:
  """Each finished point with every protocol of `crops` but the one-crop eval its run made
  (ensembles evaluate that too, for its predictions, when they need it)."""
  for point in points:
    for count in (c for c in crops if c != 1):
      _point_result(root / point.name, count, console)


def evaluate_ensembles(
  root: pathlib.Path, groups: Mapping[str, Sequence[Point]], crops: Sequence[int], console: TextIO
) -> None:
  """Each configuration with two or more seeds, all finished, as an ensemble of its seeds: the
  average of their kept predictions, equal to `inception-jax eval` of them all (printed)."""
  for group, points in groups.items():
    if len(points) < 2:
      continue
    members = {point.name: _final_step(root / point.name) for point in points}
    path = root / ENSEMBLE_DIR / f"{group}.json"
    done = read_json(path)
    if done.get("members") != members:
      done = {"members": members}
    for count in crops:
      if str(count) in done:
        continue
      results = [_point_result(root / name, count, console) for name in members]
      if any(result is None for result in results):
        continue
      result = ensemble(results)
      console.write(
        f"$ {_eval_command([root / name for name in members], count)}\n"
        f"  from the members' kept predictions: {eval_line(result['step'], result, count)}\n"
      )
      path.parent.mkdir(exist_ok=True)
      done[str(count)] = result
      _write_json(path, done)
