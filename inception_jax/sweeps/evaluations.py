"""What a sweep evaluates beyond its points' own runs: every finished point with the other test
protocols of EVAL_CROPS, and every configuration's seeds as one ensemble, with each of them.

Each is what `inception-jax eval` does (the command is printed, for rerunning it by hand), run in
the sweep's process once its training is over: a process per evaluation would spend longer
starting than evaluating. Results are kept as JSON files that the report reads back, and redone
only when what they evaluated changed (a point trained further, a seed added).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from inception_jax.config import load_ensemble_config
from inception_jax.errors import ConfigError
from inception_jax.sweeps.grid import Point, shell_command
from inception_jax.training.reporting import eval_line, read_metrics
from inception_jax.training.trainer import evaluate

POINT_FILE = "evals.json"  # in a point's workdir: {"144": eval's JSON result, ...}
ENSEMBLE_DIR = "ensembles"  # in the sweep's workdir: <configuration>.json


def read_json(path: pathlib.Path) -> dict[str, Any]:
  return json.loads(path.read_text()) if path.exists() else {}


def write_atomically(path: pathlib.Path, text: str) -> None:
  """Shares of an array job finishing together never leave half a file: each writes its own
  partial file and renames it over `path`."""
  partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
  partial.write_text(text)
  os.replace(partial, path)


def _write_json(path: pathlib.Path, data: Mapping[str, Any]) -> None:
  write_atomically(path, json.dumps(data, indent=2) + "\n")


def _final_step(point_dir: pathlib.Path) -> int | None:
  evals = [r for r in read_metrics(point_dir) if r["split"] == "eval"]
  return evals[-1]["step"] if evals else None


def _eval(workdirs: Sequence[pathlib.Path], crops: int, console: TextIO) -> dict[str, Any] | None:
  """`inception-jax eval` of the workdirs (an ensemble if several) with `crops` views per image:
  its result, or None (and the reason on the console) if it failed."""
  command = ["inception-jax", "eval", *(a for w in workdirs for a in ("--workdir", str(w)))]
  console.write(f"$ {shell_command([*command, '--crops', str(crops)])}\n")
  console.flush()
  try:
    result = evaluate(load_ensemble_config(workdirs), [str(w) for w in workdirs], crops=crops)
  except ConfigError as error:
    console.write(f"  failed: {error}\n")
    return None
  console.write(f"  {eval_line(result['step'], result, crops)}\n")
  return result


def evaluate_points(
  root: pathlib.Path, points: Sequence[Point], crops: Sequence[int], console: TextIO
) -> None:
  """Each finished point with every protocol of `crops` but the one-crop eval its run made."""
  for point in points:
    point_dir = root / point.name
    step, path = _final_step(point_dir), point_dir / POINT_FILE
    done = read_json(path)
    for count in (c for c in crops if c != 1):
      if done.get(str(count), {}).get("step") != step:
        result = _eval([point_dir], count, console)
        if result is not None:
          done[str(count)] = result
          _write_json(path, done)


def evaluate_ensembles(
  root: pathlib.Path, groups: Mapping[str, Sequence[Point]], crops: Sequence[int], console: TextIO
) -> None:
  """Each configuration with two or more seeds, all finished, as an ensemble of its seeds."""
  for group, points in groups.items():
    if len(points) < 2:
      continue
    members = {point.name: _final_step(root / point.name) for point in points}
    path = root / ENSEMBLE_DIR / f"{group}.json"
    done = read_json(path)
    if done.get("members") != members:
      done = {"members": members}
    for count in crops:
      if str(count) not in done:
        result = _eval([root / name for name in members], count, console)
        if result is not None:
          path.parent.mkdir(exist_ok=True)
          done[str(count)] = result
          _write_json(path, done)
