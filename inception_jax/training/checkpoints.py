"""Orbax checkpoints of the train state in `<workdir>/checkpoints/<step>`.

Orbax writes each checkpoint into a temporary folder (`<step>.orbax-checkpoint-tmp`) and renames
it when complete, so a crash mid-save leaves the previous checkpoints as they were; a run that
starts again removes such leftovers. A checkpoint holds two items: `state` (the whole TrainState,
RNG and metric sums included) and `progress` (JSON: the step and the data position, for people and
for the resume check).

A checkpoint damaged afterwards (a file missing, cut short or garbled) is found by reading it, the
stored bytes first and then the restore itself. Restoring the latest then falls back to the newest
intact one, and a resumed run moves the damaged folder aside to `<step>.damaged`, where orbax no
longer sees it but the user can look into it.
"""

from __future__ import annotations

import itertools
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import flax
import jax
import orbax.checkpoint as ocp
import tensorstore as ts

from inception_jax.errors import ConfigError, listed

MAX_LISTED_DIFFERENCES = 5
MAX_REASON_CHARACTERS = 300
T = TypeVar("T")


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {"state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/inception_3a/...' -> shape, for every array in a (metadata or abstract) tree."""

  def name(key) -> str:  # dict keys, sequence indices and attributes alike
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(map(name, path)): tuple(leaf.shape) for path, leaf in leaves}


def _differences(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
  def params_first(name: str) -> tuple[bool, str]:
    return not name.startswith("params/"), name

  lines = [
    f"{name}: {saved[name]} in the checkpoint, {wanted[name]} for this config"
    for name in sorted(saved.keys() & wanted.keys(), key=params_first)
    if saved[name] != wanted[name]
  ]
  lines += [
    f"{name}: only in the checkpoint"
    for name in sorted(saved.keys() - wanted.keys(), key=params_first)
  ]
  lines += [
    f"{name}: only in this config's model"
    for name in sorted(wanted.keys() - saved.keys(), key=params_first)
  ]
  return lines


def _brief(text: str, folder: pathlib.Path) -> str:
  """An error's first line for a message: without TensorStore's spec, paths relative to `folder`."""
  line = text.partition("\n")[0].split(" [tensorstore_spec=")[0].replace(f"{folder}/", "")
  line = line.rstrip(".")
  return line if len(line) <= MAX_REASON_CHARACTERS else line[: MAX_REASON_CHARACTERS - 3] + "..."


def _damage(error: BaseException, folder: pathlib.Path) -> str | None:
  """What is wrong with the checkpoint in `folder` when `error`, or one it arose from, says that a
  file of it is missing, cut short or garbled (JSON that does not parse, or an OS or TensorStore
  error naming a file in it); None for anything else, such as a shape mismatch or a bug."""
  while error is not None:
    if isinstance(error, json.JSONDecodeError):
      return f"a JSON file in it does not parse ({_brief(str(error), folder)})"
    if isinstance(error, (OSError, ValueError)) and f"{folder}/" in str(error):
      return _brief(str(error), folder)
    error = error.__cause__ or error.__context__
  return None


def _unused(path: pathlib.Path) -> pathlib.Path:
  """`path`, or the first of `path.2`, `path.3`, ... that does not exist yet."""
  numbered = (path.with_name(f"{path.name}.{number}") for number in itertools.count(2))
  return next(
    candidate for candidate in itertools.chain([path], numbered) if not candidate.exists()
  )


class DamagedCheckpoint(ConfigError):
  """The checkpoint at `step` cannot be read: `reason` says which file and how."""

  def __init__(self, directory: pathlib.Path, step: int, reason: str, saved_steps: list[int]):
    super().__init__(
      f"the checkpoint at step {step} in {directory} is damaged: {reason}. "
      f"Nothing was changed; the saved steps are {saved_steps}."
    )
    self.step, self.reason = step, reason

  def skipped(self, outcome: str) -> str:
    """The line telling the user that a fallback passed over this checkpoint, and what then."""
    return (
      f"Skipped the checkpoint at step {self.step}, which is damaged ({self.reason}); {outcome}."
    )


class Checkpoints:
  """The workdir's checkpoints: the newest `keep` are kept; read_only touches nothing on disk.

  Opening them to write (a run that starts again) removes the temporary folders of saves that
  never finished, which a process killed while saving leaves behind."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 3, read_only: bool = False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep,
      read_only=read_only,
      create=not read_only,
      save_interval_steps=0 if read_only else 1,
      cleanup_tmp_directories=not read_only,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_handlers=_handlers()
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def check_compatible(self, abstract_state: Any, step: int) -> None:
    """Raises a ConfigError naming the arrays whose shapes differ from this config's state."""
    self._refuse_differences(
      self._metadata(step), flax.serialization.to_state_dict(abstract_state), step
    )

  def _damaged(self, step: int, reason: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(self.directory, step, reason, self.all_steps())

  def _read(self, step: int, read: Callable[[], T]) -> T:
    """read()'s result; an error saying that checkpoint `step` is damaged is a DamagedCheckpoint."""
    try:
      return read()
    except Exception as error:
      reason = _damage(error, self.directory / str(step))
      if reason is None:
        raise
      raise self._damaged(step, reason) from error

  def _metadata(self, step: int) -> Any:
    """The state's metadata tree at `step` (shapes and dtypes), once the checkpoint's files were
    found whole: a damaged one is a DamagedCheckpoint."""
    folder = self.directory / str(step)
    missing = [item for item in _handlers() if not (folder / item).is_dir()]
    if missing:
      raise self._damaged(step, f"{' and '.join(missing)} missing in it")
    self._check_arrays(step)
    metadata = self._read(step, lambda: self._manager.item_metadata(step)["state"])
    if metadata is None:
      raise self._damaged(step, "the state's metadata is missing")
    return metadata.tree

  def _check_arrays(self, step: int) -> None:
    """Reads every stored value of the state's arrays, which orbax keeps as zarr arrays in an OCDBT
    database (its default), and decodes each array: a data file missing, cut short or garbled is
    a DamagedCheckpoint here. Orbax's restore fails on one too, but at the first bad read, and
    the reads it leaves running then print a traceback each (hundreds) under the one message the
    user should see. Both passes together take well under a second for the digits' network."""
    folder = self.directory / str(step)
    database = folder / "state"
    if not (database / "manifest.ocdbt").is_file():
      raise self._damaged(step, "state/manifest.ocdbt is missing")
    context = ts.Context()
    kvstore = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{database}/"}}
    try:
      store = ts.KvStore.open(kvstore, context=context).result()
      keys = store.list().result()
      empty = next((key for key in keys if not store.read(key).result().value), None)
      if empty is None:  # decoding finds bytes garbled in place, which raw reads pass
        for key in (key for key in keys if key.endswith(b"/.zarray")):
          spec = {
            "driver": "zarr",
            "kvstore": {**kvstore, "path": key.removesuffix(b".zarray").decode()},
          }
          ts.open(spec, context=context, open=True).result().read().result()
    except ValueError as error:  # TensorStore's: the manifest or a data file cut short or garbled
      raise self._damaged(step, f"state: {_brief(str(error), folder)}") from error
    if empty is not None:  # a value in a data file that is missing (zarr would read zeros)
      raise self._damaged(step, f"state: no data for {empty.decode()}")

  def _refuse_differences(self, saved: Any, wanted: Any, step: int) -> None:
    differences = _differences(_shapes(saved), _shapes(wanted))
    if differences:
      raise ConfigError(
        f"{self.directory} holds a checkpoint (step {step}) of a different model or optimizer "
        f"than this config describes:{listed(differences, MAX_LISTED_DIFFERENCES)}\n"
        f"Nothing was changed. Train in a new --workdir, or rerun with the config this one "
        f"was trained with (its config.json)."
      )

  def _saved_step(self, step: int | None) -> int:
    """`step`, or the latest when None; a step with no checkpoint is a ConfigError."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise ConfigError(
        f"no checkpoint at step {step} in {self.directory}; saved steps: "
        f"{self.all_steps() or 'none'}."
      )
    return step

  def restore(
    self, abstract_state: Any, step: int | None = None
  ) -> tuple[Any, dict[str, Any], list[DamagedCheckpoint]]:
    """The state (laid out like `abstract_state`) and progress saved at `step`, and the damaged
    checkpoints passed over. Without `step`, the newest intact checkpoint: reading one is the
    test, and a damaged one falls back to the one before; a damaged `step` is refused."""
    if step is not None or not self.all_steps():
      return *self._restore(abstract_state, self._saved_step(step)), []
    damaged = []
    for candidate in sorted(self.all_steps(), reverse=True):
      try:
        return *self._restore(abstract_state, candidate), damaged
      except DamagedCheckpoint as error:
        damaged.append(error)
    reasons = [f"step {error.step}: {error.reason}" for error in damaged]
    raise ConfigError(
      f"no intact checkpoint in {self.directory}:{listed(reasons, MAX_LISTED_DIFFERENCES)}\n"
      f"Nothing was changed. Train in a new --workdir, or move {self.directory} aside to start "
      f"this run afresh."
    )

  def _restore(self, abstract_state: Any, step: int) -> tuple[Any, dict[str, Any]]:
    self.check_compatible(abstract_state, step)
    restored = self._read(
      step,
      lambda: self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()
        ),
      ),
    )
    return restored["state"], restored["progress"]

  def set_aside(self, damaged: Sequence[DamagedCheckpoint]) -> list[str]:
    """Moves the damaged checkpoints a resumed run skipped to `<step>.damaged` (then `.2`, ...),
    out of orbax's sight but there for the user to look into; lines saying so. Process 0 alone
    renames."""
    if jax.process_index() != 0:
      return []
    lines = []
    for error in damaged:
      aside = _unused(self.directory / f"{error.step}.damaged")
      (self.directory / str(error.step)).rename(aside)
      lines.append(error.skipped(f"moved it to {aside}"))
    return lines

  def restore_variables(
    self, sharding: jax.sharding.Sharding, step: int | None = None, expected: Any = None
  ) -> tuple[dict[str, Any], int]:
    """The weights a run evaluates (its Polyak average where it kept one) and its BatchNorm
    statistics at `step` (default: the latest), and the step: for predicting and fine-tuning,
    whatever optimizer or config wrote the checkpoint. The whole state is read (orbax restores
    no part of an item alone), laid out as its own metadata says. With `expected` (params and
    batch_stats shapes), a checkpoint of another model is refused, naming the differences; a
    damaged one is refused saying what is wrong."""
    step = self._saved_step(step)
    saved = self._metadata(step)
    if expected is not None:
      self._refuse_differences(
        {"params": saved["params"], "batch_stats": saved["batch_stats"]}, expected, step
      )
    abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), saved
    )
    state = self._read(
      step,
      lambda: self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
      ),
    )["state"]
    return {
      "params": state["ema_params"] or state["params"],
      "batch_stats": state["batch_stats"],
    }, step

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Starts an asynchronous save; the train loop goes on while it is written."""
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)
      ),
      force=True,
    )

  def close(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
