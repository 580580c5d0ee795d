"""A sweep file's grid of overrides (big_vision's `get_hyper`), its points' names and slices.

A sweep file is a config file (its `get_config()` is the base config) that also defines
`get_hyper(hyper)`, returning a list of override dicts built with `hyper`'s functions:

  def get_hyper(hyper):
    return hyper.product([
        hyper.sweep("model.module", ["reduced", "naive"]),
        hyper.sweep("model.aux_heads", [True, False]),
    ])

and optionally `METRICS`, the report's columns (names from `inception_jax.sweeps.report.METRICS`).
Every point is an `inception-jax train` command: the sweep file as its config plus the point's
overrides on the command line, so any point can be rerun (or debugged) on its own.

Repeating a grid over seeds (`hyper.product([grid, hyper.seeds(3)])`) makes points that differ only
in `seed`: they form one configuration (`Point.group`, the point's name without its seed), which
the report summarizes over its seeds. `COMPARE`, a list of (configuration, configuration) pairs,
asks the report for their paired differences. `EVAL_CROPS` (default (1,)) lists the test
protocols (`inception-jax eval --crops`) every finished point and every configuration's ensemble
of seeds are evaluated with.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import ml_collections

from inception_jax.config import apply_overrides, load_config_module, module_config, run_user_code
from inception_jax.data.crops import CROPS
from inception_jax.errors import ConfigError, did_you_mean

T = TypeVar("T")

Overrides = dict[str, Any]


class Hyper:
  """The grid builders handed to a sweep file's `get_hyper(hyper)`."""

  @staticmethod
  def sweep(key: str, values: Iterable[Any]) -> list[Overrides]:
    """One key over a list of values: one point per value."""
    key = key.removeprefix("config.")
    return [{key: value} for value in values]

  @staticmethod
  def fixed(key: str, value: Any) -> list[Overrides]:
    """One key at one value, for use inside product or zip."""
    return Hyper.sweep(key, [value])

  @staticmethod
  def seeds(count: int, first: int = 0) -> list[Overrides]:
    """`count` values of config.seed (first, first + 1, ...): in a product, every other point is
    repeated once per seed."""
    if count < 1:
      raise ConfigError(f"hyper.seeds({count}): need at least one seed.")
    return Hyper.sweep("seed", range(first, first + count))

  @staticmethod
  def product(grids: Sequence[list[Overrides]]) -> list[Overrides]:
    """Every combination of the grids' points; the first grid varies slowest."""
    return [_merge(points) for points in itertools.product(*grids)]

  @staticmethod
  def zip(grids: Sequence[list[Overrides]]) -> list[Overrides]:
    """The i-th points of all grids merged into one point; the grids must have one length."""
    lengths = sorted({len(grid) for grid in grids})
    if len(lengths) > 1:
      raise ConfigError(f"hyper.zip needs grids of equal length, got lengths {lengths}.")
    return [_merge(points) for points in builtins.zip(*grids, strict=True)]


def _merge(points: Iterable[Overrides]) -> Overrides:
  merged: Overrides = {}
  for point in points:
    twice = merged.keys() & point.keys()
    if twice:
      raise ConfigError(
        f"the grid sets config.{sorted(twice)[0]} twice in one point; "
        f"give each key to one hyper.sweep."
      )
    merged.update(point)
  return merged


def command_value(value: Any) -> str:
  """`value` as command-line text that the config parser turns back into `value`."""
  if isinstance(value, bool):
    return str(value).lower()
  return value if isinstance(value, str) else repr(value)


def _name_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    text = "-".join(map(str, value)) or "none"
  else:
    text = command_value(value)
  return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its position in the grid, its directory name and its overrides."""

  index: int
  name: str
  overrides: Overrides

  def args(self) -> list[str]:
    return [f"--config.{key}={command_value(value)}" for key, value in self.overrides.items()]

  @property
  def seed(self) -> int | None:
    return self.overrides.get("seed")

  @property
  def group(self) -> str:
    """The configuration this point repeats: its name without the seed ('base' if nothing else)."""
    if "seed" not in self.overrides:
      return self.name
    seed_part = f"seed={_name_value(self.overrides['seed'])}"
    return ",".join(part for part in self.name.split(",") if part != seed_part) or "base"


def by_configuration(items: Iterable[T], point: Callable[[T], Point]) -> dict[str, list[T]]:
  """`items` grouped by their point's configuration (`Point.group`), in grid order."""
  groups: dict[str, list[T]] = {}
  for item in items:
    groups.setdefault(point(item).group, []).append(item)
  return groups


def _points(grid: list[Overrides]) -> list[Point]:
  """Points named after their overrides, e.g. 'module=naive,aux_heads=false'."""
  keys = list(dict.fromkeys(key for overrides in grid for key in overrides))
  leaves = [key.rsplit(".", 1)[-1] for key in keys]
  short = {
    key: leaf if leaves.count(leaf) == 1 else key
    for key, leaf in builtins.zip(keys, leaves, strict=True)
  }
  points, seen = [], {}
  for index, overrides in enumerate(grid):
    name = (
      ",".join(f"{short[key]}={_name_value(value)}" for key, value in overrides.items()) or "base"
    )
    if name in seen:
      raise ConfigError(
        f"points {seen[name]} and {index} of the grid are both named {name!r}; "
        f"make their values differ."
      )
    seen[name] = index
    points.append(Point(index, name, dict(overrides)))
  return points


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A loaded sweep file: where it is, its grid, the overrides for every point, its columns."""

  spec: str  # the sweep file, with ":arg" if it takes one
  title: str  # the first line of its docstring
  common: Mapping[str, str]  # command-line overrides applied to every point
  points: list[Point]
  metrics: tuple[str, ...] | None
  compare: tuple[tuple[str, str], ...]  # pairs of configurations (Point.group) to difference
  eval_crops: tuple[int, ...]  # test protocols: views per image (1, 10, 144)
  module: Any

  def config(self, point: Point) -> ml_collections.ConfigDict:
    """The point's full config, built as its train command builds it."""
    config = apply_overrides(module_config(self.module, self.spec), self.common)
    try:
      return apply_overrides(
        config, {key: command_value(value) for key, value in point.overrides.items()}
      )
    except ConfigError as error:
      raise ConfigError(f"sweep point {point.index} ({point.name}): {error}") from None

  def train_command(self, point: Point, workdir: str) -> list[str]:
    common = [f"--config.{key}={value}" for key, value in self.common.items()]
    return [
      "inception-jax",
      "train",
      "--config",
      self.spec,
      "--workdir",
      workdir,
      *common,
      *point.args(),
    ]


def load_sweep(spec: str, common: Mapping[str, str] | None = None) -> Sweep:
  """Reads `path/to/sweep.py[:arg]`; checks that it defines a non-empty grid."""
  module, _ = load_config_module(spec)
  path = spec.partition(":")[0]
  if not hasattr(module, "get_hyper"):
    raise ConfigError(
      f"{path} defines no get_hyper(hyper); a sweep file returns its grid from "
      f"it, e.g. return hyper.sweep('model.module', ['reduced', 'naive'])."
    )
  grid = run_user_code(path, module.get_hyper, Hyper)
  if not isinstance(grid, list) or not grid or not all(isinstance(p, dict) for p in grid):
    raise ConfigError(
      f"{path}: get_hyper must return a non-empty list of override dicts "
      f"(built with hyper.sweep / hyper.product / hyper.zip), got {grid!r}."
    )
  title = ((module.__doc__ or "").strip().splitlines() or [os.path.basename(path)])[0].rstrip(".")
  metrics = getattr(module, "METRICS", None)
  points = _points(grid)
  return Sweep(
    spec=spec,
    title=title,
    common=dict(common or {}),
    points=points,
    metrics=tuple(metrics) if metrics is not None else None,
    compare=_pairs(path, getattr(module, "COMPARE", ()), {point.group for point in points}),
    eval_crops=_eval_crops(path, getattr(module, "EVAL_CROPS", (1,))),
    module=module,
  )


def _eval_crops(path: str, crops: Any) -> tuple[int, ...]:
  if (
    not isinstance(crops, (list, tuple))
    or not crops
    or any(count not in CROPS for count in crops)
    or len(set(crops)) != len(crops)
  ):
    raise ConfigError(
      f"{path}: EVAL_CROPS must list distinct crop counts from {CROPS}, got {crops!r}."
    )
  return tuple(crops)


def _pairs(path: str, compare: Any, groups: set[str]) -> tuple[tuple[str, str], ...]:
  """The sweep file's COMPARE, checked: pairs of configuration names that the grid has."""
  if not isinstance(compare, (list, tuple)) or not all(
    isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in compare
  ):
    raise ConfigError(
      f"{path}: COMPARE must be a list of (configuration, configuration) pairs, got {compare!r}."
    )
  for name in (name for pair in compare for name in pair):
    if name not in groups:
      raise ConfigError(
        f"{path}: COMPARE names {name!r}, which is no configuration of the grid"
        f"{did_you_mean(name, groups)}; configurations are the point names without their seed: "
        f"{', '.join(sorted(groups))}."
      )
  return tuple((a, b) for a, b in compare)


def shell_command(command: Sequence[str]) -> str:
  return " ".join(shlex.quote(part) for part in command)


def array_slice(
  index: int | None, count: int | None, environ: Mapping[str, str] = os.environ
) -> tuple[int, int]:
  """(index, count) of this share of the sweep; inside a SLURM array job, the task's by default."""
  if count is None:
    count = int(environ.get("SLURM_ARRAY_TASK_COUNT", 1))
  if index is None:
    task = environ.get("SLURM_ARRAY_TASK_ID")
    index = int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0)) if task is not None else 0
  if count < 1 or not 0 <= index < count:
    raise ConfigError(f"--index {index} --count {count}: need count >= 1 and 0 <= index < count.")
  return index, count


def share(points: Sequence[Point], index: int, count: int) -> list[Point]:
  """The points of share `index` of `count`: every count-th point, starting at `index`."""
  return [point for point in points if point.index % count == index]
