"""Orbax checkpoints of the train state in `<workdir>/checkpoints/<step>`.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a crash
mid-save leaves the previous checkpoints as they were. A checkpoint holds two items: `state` (the
whole TrainState, RNG and metric sums included) and `progress` (JSON: the step and the data
position, for people and for the resume check).
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp

from inception_jax.errors import ConfigError, listed

MAX_LISTED_DIFFERENCES = 5


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {"state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/inception_3a/...' -> shape, for every array in a (metadata or abstract) tree."""
  def name(key) -> str:  # dict keys, sequence indices and attributes alike
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(map(name, path)): tuple(leaf.shape) for path, leaf in leaves}


def _differences(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
  params_first = lambda name: (not name.startswith("params/"), name)
  lines = [f"{name}: {saved[name]} in the checkpoint, {wanted[name]} for this config"
           for name in sorted(saved.keys() & wanted.keys(), key=params_first)
           if saved[name] != wanted[name]]
  lines += [f"{name}: only in the checkpoint"
            for name in sorted(saved.keys() - wanted.keys(), key=params_first)]
  lines += [f"{name}: only in this config's model"
            for name in sorted(wanted.keys() - saved.keys(), key=params_first)]
  return lines


class Checkpoints:
  """The workdir's checkpoints: the newest `keep` are kept; read_only touches nothing on disk."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 3, read_only: bool = False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, read_only=read_only, create=not read_only,
        save_interval_steps=0 if read_only else 1)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=_handlers())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def check_compatible(self, abstract_state: Any, step: int) -> None:
    """Raises a ConfigError naming the arrays whose shapes differ from this config's state."""
    self._refuse_differences(self._manager.item_metadata(step)["state"].tree,
                             flax.serialization.to_state_dict(abstract_state), step)

  def _refuse_differences(self, saved: Any, wanted: Any, step: int) -> None:
    differences = _differences(_shapes(saved), _shapes(wanted))
    if differences:
      raise ConfigError(
          f"{self.directory} holds a checkpoint (step {step}) of a different model or optimizer "
          f"than this config describes:{listed(differences, MAX_LISTED_DIFFERENCES)}\n"
          f"Nothing was changed. Train in a new --workdir, or rerun with the config this one "
          f"was trained with (its config.json).")

  def _saved_step(self, step: int | None) -> int:
    """`step`, or the latest when None; a step with no checkpoint is a ConfigError."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise ConfigError(f"no checkpoint at step {step} in {self.directory}; saved steps: "
                        f"{self.all_steps() or 'none'}.")
    return step

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The state (laid out like `abstract_state`) and progress saved at `step` (default latest)."""
    step = self._saved_step(step)
    self.check_compatible(abstract_state, step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored["state"], restored["progress"]

  def restore_variables(self, sharding: jax.sharding.Sharding, step: int | None = None,
                        expected: Any = None) -> tuple[dict[str, Any], int]:
    """The weights a run evaluates (its Polyak average where it kept one) and its BatchNorm
    statistics at `step` (default: the latest), and the step: for predicting and fine-tuning,
    whatever optimizer or config wrote the checkpoint. The whole state is read (orbax restores
    no part of an item alone), laid out as its own metadata says. With `expected` (params and
    batch_stats shapes), a checkpoint of another model is refused, naming the differences."""
    step = self._saved_step(step)
    saved = self._manager.item_metadata(step)["state"].tree
    if expected is not None:
      self._refuse_differences(
          {"params": saved["params"], "batch_stats": saved["batch_stats"]}, expected, step)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), saved)
    state = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]
    return {"params": state["ema_params"] or state["params"],
            "batch_stats": state["batch_stats"]}, step

  def save(self, step: int, state: Any, progress: dict[str, Any]) -> None:
    """Starts an asynchronous save; the train loop goes on while it is written."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), force=True)

  def close(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()
    self._manager.close()
