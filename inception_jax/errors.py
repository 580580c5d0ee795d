"""Errors a user can fix, and the lookup that names the valid choices."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """Bad user input (config key, value, file): reported as one message, exit code 2."""


class StoppedEarly(Exception):
  """A stop signal (SIGINT, SIGTERM) before anything was trained, so nothing to save. Threads
  still busy (TFDS's downloads, retrying for minutes where the network fails; XLA compiling, for
  seconds on a CPU and a minute on a GPU) would hold Python's exit: the command leaves at once,
  with 128 + the signal's number."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.signal = signal_number


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
  """A ' (did you mean ...?)' hint, or '' when nothing is close."""
  close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
  return f" (did you mean '{close[0]}'?)" if close else ""


def listed(lines: Sequence[str], limit: int) -> str:
  """Lines for a message, each on its own indented line, at most `limit` then '... N more'."""
  more = len(lines) - limit
  return "".join(f"\n  {line}" for line in [*lines[:limit], *[f"... {more} more"] * (more > 0)])


def read_input_file(path: str | os.PathLike, what: str, fix: str) -> bytes:
  """The bytes of a file the user named; one that cannot be read is a ConfigError saying `fix`."""
  try:
    with open(path, "rb") as file:
      return file.read()
  except OSError as error:
    raise ConfigError(
      f"cannot read {what} {os.fspath(path)!r} ({error.strerror or error}): {fix}."
    ) from None


def choose(registry: Mapping[str, T], key: str, field: str) -> T:
  """Looks `key` up in a small registry; an unknown key names the valid ones."""
  if key not in registry:
    raise ConfigError(
      f"{field}={key!r} is not a valid choice{did_you_mean(str(key), registry)}; "
      f"choose one of: {', '.join(sorted(registry))}."
    )
  return registry[key]
