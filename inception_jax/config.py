"""Config files (`get_config()`) and `--config.a.b=value` overrides, with clear errors.

A config file is a Python file whose `get_config(arg=None)` returns an ml_collections
ConfigDict; `path.py:arg` passes `arg` (big_vision's convention). Overrides name an existing
key and parse the value as that key's type, so a typo or a wrong type never passes silently.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import pathlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

import ml_collections

from inception_jax.errors import ConfigError, did_you_mean

T = TypeVar("T")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


# The project's own config files (a source checkout or an editable install), for config and
# sweep files to find their base config from wherever they are copied to.
PROJECT_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def run_user_code(path: str, function: Callable[..., T], *args: Any) -> T:
  """`function(*args)`, code of the config or sweep file `path`; an exception there becomes one
  ConfigError naming the file, the line and the error (a ConfigError of what that code called,
  such as a base config it looks for in vain, gets the file and line in front)."""
  try:
    return function(*args)
  except Exception as error:  # pylint: disable=broad-except  # anything the user's code raises
    line = (
      error.lineno
      if isinstance(error, SyntaxError) and error.lineno
      else next(
        (
          frame.lineno
          for frame in reversed(traceback.extract_tb(error.__traceback__))
          if os.path.abspath(frame.filename) == os.path.abspath(path)
        ),
        None,
      )
    )
    where = f"{path}, line {line}" if line else path
    if isinstance(error, ConfigError):
      raise ConfigError(f"{where}: {error}") from None
    text = error.msg if isinstance(error, SyntaxError) else error
    raise ConfigError(
      f"{where}: {type(error).__name__}: {text}. Fix that file and run the command again."
    ) from None


def load_config_module(spec: str) -> tuple[ModuleType, str]:
  """The module of `path/to/config.py[:arg]` (checked to define get_config), and `arg`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(
      f"config file {path!r} does not exist (the project's configs are in {PROJECT_CONFIGS})."
    )
  module_spec = importlib.util.spec_from_file_location(
    f"inception_jax_config_{abs(hash(path))}", path
  )
  module = importlib.util.module_from_spec(module_spec)
  run_user_code(path, module_spec.loader.exec_module, module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config() function.")
  return module, arg


def module_config(module: ModuleType, spec: str) -> ml_collections.ConfigDict:
  """A fresh config from the module of `path/to/config.py[:arg]`: its get_config([arg])."""
  path, _, arg = spec.partition(":")
  config = run_user_code(path, module.get_config, *([arg] if arg else []))
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"{path}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict."
    )
  return config


def load_config(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` and applies the overrides."""
  module, _ = load_config_module(spec)
  return apply_overrides(module_config(module, spec), overrides or {})


def config_json(config: ml_collections.ConfigDict) -> str:
  """The text of a workdir's config.json: the resolved config, keys sorted."""
  return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def _tuples(value: Any) -> Any:
  """JSON's lists back into the tuples every list-valued config field holds."""
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(item) for item in value)
  return value


def load_workdir_config(
  workdir: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """The resolved config a run (or an import) left in `<workdir>/config.json`, with overrides."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise ConfigError(
      f"{workdir} holds no config.json (not a run's workdir?); pass the run's "
      f"config with --config path/to/config.py."
    )
  try:
    saved = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ConfigError(
      f"{path} cannot be read as JSON ({error}); pass the run's config with "
      f"--config path/to/config.py."
    ) from None
  return apply_overrides(ml_collections.ConfigDict(_tuples(saved)), overrides or {})


def load_ensemble_config(
  workdirs: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """The first workdir's config.json, once every other workdir's network (config.model) and eval
  data (data.name, data.eval_split, image_size) are found to be the same: an ensemble is averaged
  over one network's outputs on one set of images."""
  configs = [load_workdir_config(workdir, overrides) for workdir in workdirs]
  shared = [
    "image_size",
    "data.name",
    "data.eval_split",
    *(f"model.{k}" for k in flat_keys(configs[0].model)),
  ]
  for workdir, config in zip(workdirs[1:], configs[1:], strict=True):
    differ = [key for key in shared if _get(config, key) != _get(configs[0], key)]
    if differ:
      pairs = [f"{key} ({_get(config, key)!r} against {_get(configs[0], key)!r})" for key in differ]
      raise ConfigError(
        f"{workdir} cannot join an ensemble with {workdirs[0]}: their configs differ in "
        f"{', '.join(pairs)}. An ensemble averages one network's softmax over the same images."
      )
  return configs[0]


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at a dotted key, None where the config lacks it."""
  value: Any = config
  for part in key.split("."):
    if not isinstance(value, ml_collections.ConfigDict) or part not in value:
      return None
    value = value[part]
  return value


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key as a dotted path, e.g. 'model.widths.inception_3a'."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += flat_keys(value, f"{prefix}{key}.")
    else:
      keys.append(f"{prefix}{key}")
  return keys


def differences(earlier: ml_collections.ConfigDict, later: ml_collections.ConfigDict) -> list[str]:
  """'key: earlier -> later' for every leaf whose value differs (None where a config lacks it)."""
  keys = dict.fromkeys([*flat_keys(earlier), *flat_keys(later)])
  return [
    f"{key}: {_get(earlier, key)!r} -> {_get(later, key)!r}"
    for key in keys
    if _get(earlier, key) != _get(later, key)
  ]


def _parse(text: str, current: Any, key: str) -> Any:
  """Parses a command-line string as the type of the value it replaces."""

  def fail(expected: str) -> ConfigError:
    return ConfigError(
      f"config.{key} expects {expected}, got {text!r} (current value: {current!r})."
    )

  if isinstance(current, bool):
    if text.lower() in _TRUE | _FALSE:
      return text.lower() in _TRUE
    raise fail("true or false")
  if isinstance(current, str):
    return text
  try:  # float() also reads 'nan' and 'inf', which _check_type then refuses by name
    value = float(text) if isinstance(current, float) else ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:  # a field without a type yet takes the text as it is
      return text
    raise fail(_EXPECTED.get(type(current), f"a {type(current).__name__}")) from None
  return _check_type(value, current, key, fail)


_EXPECTED = {
  int: "an integer",
  float: "a number",
  tuple: "a tuple such as (1, 3, 5)",
  list: "a tuple such as (1, 3, 5)",
}


def finite(value: Any) -> bool:
  """False for a float (or a tuple holding one) that is NaN or infinite."""
  if isinstance(value, (tuple, list)):
    return all(map(finite, value))
  return not isinstance(value, float) or math.isfinite(value)


def _check_type(value: Any, current: Any, key: str, fail=None) -> Any:
  """`value` converted to the type of `current` where that loses nothing, else a ConfigError."""
  fail = fail or (
    lambda expected: ConfigError(
      f"config.{key} expects {expected}, got {value!r} (current value: {current!r})."
    )
  )
  if current is None:
    return value
  if isinstance(current, bool):
    if isinstance(value, bool):
      return value
    raise fail("true or false")
  if not finite(value):
    raise fail("a finite number" if isinstance(current, float) else "finite numbers")
  if isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return tuple(value)
  if isinstance(current, (tuple, list)):
    raise fail(_EXPECTED[tuple])
  if isinstance(current, int) and (not isinstance(value, int) or isinstance(value, bool)):
    raise fail("an integer")
  if isinstance(current, str) and not isinstance(value, str):
    raise fail("a string")
  return value


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """Sets dotted keys of `config` (in place, and returned); strings are parsed by the key's type."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      child = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
      if not isinstance(child, ml_collections.ConfigDict):
        raise _unknown_key(config, key)
      node = child
    if leaf not in node:
      raise _unknown_key(config, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(
        f"config.{key} is a group of settings, not a value; set one of: "
        f"{', '.join(f'{key}.{k}' for k in current.keys())}."
      )
    parsed = (
      _parse(value, current, key) if isinstance(value, str) else _check_type(value, current, key)
    )
    with node.ignore_type():
      node[leaf] = parsed
  return config


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ConfigError:
  keys = flat_keys(config)
  return ConfigError(
    f"unknown config key {key!r}{did_you_mean(key, keys)}. Valid keys: {', '.join(keys)}."
  )


def parse_override_args(args: Sequence[str]) -> dict[str, str]:
  """['--config.model.module=naive', '--config.seed', '3'] ->
  {'model.module': 'naive', 'seed': '3'}."""
  overrides: dict[str, str] = {}
  tokens = list(args)
  while tokens:
    token = tokens.pop(0)
    if not token.startswith("--config."):
      raise ConfigError(
        f"unrecognised argument {token!r}; config overrides look like "
        "--config.model.module=naive (see --help for the other options)."
      )
    key, eq, value = token[len("--config.") :].partition("=")
    if not eq:
      if not tokens or tokens[0].startswith("--"):
        raise ConfigError(f"{token} needs a value, e.g. {token}=VALUE.")
      value = tokens.pop(0)
    overrides[key] = value
  return overrides
