"""`train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`: data, model and steps
composed.

A run is a pure function of its config: parameters, dropout, shuffles and augmentations all come
from `config.seed`, and the checkpoint holds every piece of state, so a run that is stopped
(SIGTERM, SIGKILL, a crash) and started again with the same command ends exactly where it would
have without the interruption.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import pathlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from inception_jax.config import config_json, differences, finite, flat_keys, load_workdir_config
from inception_jax.data import input_pipeline
from inception_jax.errors import ConfigError, StoppedEarly
from inception_jax.models import build_model
from inception_jax.models.googlenet import GoogLeNet
from inception_jax.training import devices, finetune, optim
from inception_jax.training.checkpoints import Checkpoints
from inception_jax.training.reporting import Reporter, eval_line, progress_line, read_metrics
from inception_jax.training.steps import (
  TrainState,
  initial_variables,
  make_eval_step,
  make_train_step,
  score,
  stack_models,
  train_state_program,
  zero_sums,
)

COMPILATION_CACHE = pathlib.Path.home() / ".cache" / "inception-jax" / "jax"


class Interrupted(Exception):
  """SIGTERM or SIGINT (`signal`) arrived; the state was checkpointed at `step`. Rerunning the
  command resumes."""

  def __init__(self, step: int, signal_number: int):
    super().__init__(step, signal_number)
    self.step, self.signal = step, signal_number


def _use_compilation_cache() -> None:
  """Keeps compiled steps on disk: a resumed or repeated run skips most of the compile time."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update(
      "jax_compilation_cache_dir",
      os.environ.get("JAX_COMPILATION_CACHE_DIR", str(COMPILATION_CACHE)),
    )
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the training fields that no library checks for us."""
  for key in flat_keys(config):  # a config file may set inf or nan itself
    value = functools.reduce(lambda node, part: node[part], key.split("."), config)
    if not finite(value):
      raise ConfigError(f"{key}={value!r} must be finite.")
  rules = [
    ("batch_size", config.batch_size >= 1, "at least 1"),
    ("learning_rate", config.learning_rate > 0, "positive"),
    ("lr_reference_batch", config.lr_reference_batch >= 1, "at least 1"),
    ("num_epochs", config.num_epochs > 0 or config.num_train_steps > 0, "positive"),
    ("warmup_epochs", config.warmup_epochs >= 0, "0 or more"),
    ("weight_decay", config.weight_decay >= 0, "0 or more"),
    ("ema_decay", 0 <= config.ema_decay < 1, "in [0, 1)"),
    ("label_smoothing", 0 <= config.label_smoothing < 1, "in [0, 1)"),
    ("aux_loss_weight", config.aux_loss_weight >= 0, "0 or more"),
    ("log_every_steps", config.log_every_steps >= 1, "at least 1"),
    ("eval_every_steps", config.eval_every_steps >= 0, "0 (only at the end) or more"),
    ("checkpoint_every_steps", config.checkpoint_every_steps >= 1, "at least 1"),
    ("keep_checkpoints", config.keep_checkpoints >= 1, "at least 1"),
    ("image_size", config.image_size >= 1, "at least 1"),
    ("data.eval_crop_fraction", 0 < config.data.eval_crop_fraction <= 1, "in (0, 1]"),
    (
      "augment.area_range",
      0 < config.augment.area_range[0] <= config.augment.area_range[1] <= 1,
      "(low, high) with 0 < low <= high <= 1",
    ),
    (
      "augment.aspect_ratio_range",
      0 < config.augment.aspect_ratio_range[0] <= config.augment.aspect_ratio_range[1],
      "(low, high) with 0 < low <= high",
    ),
  ]
  for field, valid, expected in rules:
    if not valid:
      value = config
      for part in field.split("."):
        value = value[part]
      raise ConfigError(f"{field}={value!r} must be {expected}.")


class _Run:
  """The pieces of a run that train and eval share, built and checked before anything is written."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    check_config(config)
    _use_compilation_cache()
    devices.initialize(config.distributed)
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.local_batch = devices.local_batch_size(config.batch_size)
    self.builder = devices.process_zero_first(lambda: input_pipeline.prepare(config.data))
    classes = input_pipeline.num_classes(self.builder)
    if classes != config.model.num_classes:
      raise ConfigError(
        f"dataset {config.data.name!r} has {classes} classes but "
        f"model.num_classes={config.model.num_classes}; set "
        f"--config.model.num_classes={classes}."
      )
    self.train_examples = input_pipeline.num_examples(self.builder, config.data.train_split)
    self.steps_per_epoch = self.train_examples // config.batch_size
    if self.steps_per_epoch < 1:
      raise ConfigError(
        f"batch_size={config.batch_size} is larger than the "
        f"{self.train_examples} training examples; lower it."
      )
    self.total_steps = (
      config.num_train_steps
      if config.num_train_steps > 0
      else round(config.num_epochs * self.steps_per_epoch)
    )
    self.model = build_model(
      config.model, batch_axis_name=devices.AXIS, frozen_backbone=optim.frozen_backbone(config)
    )
    self.schedule = optim.learning_rate_schedule(config, self.total_steps, self.steps_per_epoch)
    self.tx = optim.optimizer(config, self.schedule)

  def abstract_state(self) -> TrainState:
    """The state's shapes and dtypes, laid out as in a checkpoint, without computing it."""
    shapes = train_state_program(self.config, self.model, self.tx)[1]  # traced, not compiled
    return devices.checkpoint_shapes(shapes)

  def eval_batches(self, crops: int = 1) -> tf.data.Dataset:
    return input_pipeline.eval_dataset(
      self.builder,
      self.config,
      local_batch=self.local_batch,
      process_index=devices.process_index(),
      process_count=devices.process_count(),
      crops=crops,
    )[0]

  def train_batches(self, start_step: int) -> tf.data.Dataset:
    return input_pipeline.train_dataset(
      self.builder,
      self.config,
      local_batch=self.local_batch,
      start_step=start_step,
      process_index=devices.process_index(),
      process_count=devices.process_count(),
    )

  def batch_shapes(self, batches: tf.data.Dataset) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes of `batches` as the steps get them (eval's padded batches are all full size,
    though tf.data cannot tell), for compiling before the first batch."""
    return devices.batch_shapes(
      {
        key: ((self.local_batch, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
        for key, spec in batches.element_spec.items()
      }
    )


def _eval_step(model: GoogLeNet) -> Callable[..., Any]:
  """The pmapped eval step of a list of models' variables (an ensemble of one or more), stacked
  inside the program: stacked op by op before it, each leaf's shape cost a compile (1.5 s of the
  first evaluation of configs/default.py on 2 cores)."""
  step = make_eval_step(model)
  return devices.parallel_eval(lambda models, batch: step(stack_models(models), batch))


def _evaluate(
  eval_step, models: list[dict[str, Any]], batches: tf.data.Dataset, keep_predictions: bool = False
) -> dict[str, Any]:
  """Loss, top-1 and top-5 of the models (an ensemble of one or more) over the whole eval split
  (every process's share). With `keep_predictions`, also this process's per-image
  log-probabilities and labels in the split's order ("log_probs", "labels"), for `ensemble`."""
  sums, kept = None, []
  for batch in devices.prefetch(tfds.as_numpy(batches)):
    step_sums, log_probs = eval_step(models, batch)
    sums = step_sums if sums is None else jax.tree.map(np.add, sums, step_sums)
    if keep_predictions:
      kept.append((log_probs, batch["label"], batch["mask"]))
  metrics: dict[str, Any] = _averages(jax.device_get(sums))
  if keep_predictions:
    log_probs, labels, mask = (np.concatenate([np.asarray(k[i]) for k in kept]) for i in range(3))
    real = mask.reshape(-1).astype(bool)  # batches are [devices, examples per device, ...]
    metrics["log_probs"] = log_probs.reshape(real.size, -1)[real]
    metrics["labels"] = labels.reshape(-1)[real]
  return metrics


def _averages(sums: dict[str, Any]) -> dict[str, float]:
  count = float(sums["count"])
  return {
    "loss": float(sums["loss"]) / count,
    "top1": float(sums["top1"]) / count,
    "top5": float(sums["top5"]) / count,
    "count": count,
  }


def _write_config(config: ml_collections.ConfigDict, workdir: pathlib.Path, step: int) -> list[str]:
  """config.json holds the resolved config; a different earlier one is kept beside it, and the
  lines returned name what changed: a run resumed with another recipe should not pass unseen."""
  path = workdir / "config.json"
  text = config_json(config)
  lines = []
  if path.exists() and path.read_text() != text:
    earlier = workdir / f"config.until-step-{step}.json"
    for attempt in itertools.count(2):
      if not earlier.exists():
        break
      earlier = workdir / f"config.until-step-{step}.{attempt}.json"
    try:
      changed = differences(load_workdir_config(workdir), config)
    except ConfigError:  # not readable as a config: kept as it is all the same
      changed = ["(the earlier config.json could not be read)"]
    lines = [
      f"The config differs from the one used until step {step}, kept as {earlier.name}:",
      *(f"  {line}" for line in changed),
    ]
    path.rename(earlier)
  path.write_text(text)
  return lines


class NonFiniteLoss(Exception):
  """The loss became NaN or inf at `step`; no checkpoint was written after `last_checkpoint`."""

  def __init__(self, step: int, value: float, last_checkpoint: int | None):
    super().__init__(step, value, last_checkpoint)
    self.step, self.value, self.last_checkpoint = step, value, last_checkpoint


def _check_finite(step: int, losses: jax.Array, checkpoints: Checkpoints) -> None:
  """Raises NonFiniteLoss if the step's summed losses are NaN or inf (waits for that step)."""
  value = float(jax.device_get(losses))
  if not np.isfinite(value):
    raise NonFiniteLoss(step, value, max(checkpoints.all_steps(), default=None))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a scheduler's stop, and Ctrl-C


@contextlib.contextmanager
def _stop_flag() -> Iterator[list[int]]:
  """A list that receives the signal's number when SIGTERM or SIGINT arrives (instead of the
  process dying), so that the loop checkpoints at the current step and stops."""
  received: list[int] = []
  previous = {
    number: signal.signal(number, lambda number, _: received.append(number))
    for number in STOP_SIGNALS
  }
  try:
    yield received
  finally:
    for number, handler in previous.items():
      signal.signal(number, handler)


@contextlib.contextmanager
def _compiling() -> Iterator[ThreadPoolExecutor]:
  """Two threads that compile the run's programs; on the way out (an error, a signal) what has
  not started yet is dropped, and what has is waited for, unless the run stopped early."""
  pool = ThreadPoolExecutor(2, thread_name_prefix="compile")
  stopped_early = False  # the command then leaves at once, without waiting for XLA
  try:
    yield pool
  except StoppedEarly:
    stopped_early = True
    raise
  finally:
    pool.shutdown(wait=not stopped_early, cancel_futures=True)


def _before_first_step(future: Future, terminated: list[int], start_step: int) -> Any:
  """The result of what the first step waits for (a program compiling), or StoppedEarly once a
  stop signal arrives meanwhile: nothing has been trained, so there is nothing to save."""
  while not terminated:
    try:
      return future.result(timeout=0.1)
    except FutureTimeout:
      pass
  since = (
    f"since the checkpoint at step {start_step}, which the same command resumes from"
    if start_step
    else "yet; the same command starts the run"
  )
  raise StoppedEarly(
    f"{signal.Signals(terminated[0]).name} before the first step (compiling): nothing trained "
    f"{since}.",
    terminated[0],
  )


def _restore_or_create(
  run: _Run,
) -> tuple[Callable[[], TrainState], TrainState, dict[str, Any], list[str]]:
  """The newest intact checkpoint's state and progress, else a fresh state (from config.init_from's
  weights when set), and lines to tell the user. The state comes as the function that makes it
  (compiling a fresh one takes seconds, done beside the steps' compiling) and its shapes. The
  damaged checkpoints it skipped are moved aside once nothing is left to refuse; nothing else on
  disk is touched."""
  if (run.workdir / "checkpoints").is_dir():
    with Checkpoints(run.workdir, read_only=True) as existing:
      if existing.latest_step() is not None:  # refuses another model's checkpoint
        state, progress, damaged = existing.restore(run.abstract_state())
        if "imported" in progress:
          raise ConfigError(
            f"{run.workdir} holds imported weights ({progress['imported']['source']}), not a "
            f"run to resume. Fine-tune from them in a new workdir: --config.init_from="
            f"{run.workdir} --workdir NEW_DIR. Nothing was changed."
          )
        state = devices.from_checkpoint(state)
        return lambda: state, state, progress, existing.set_aside(damaged)
  variables, lines = None, []
  if run.config.init_from:
    variables, lines = finetune.start_variables(
      run.config, initial_variables(run.config, run.model)
    )
  create, shapes = train_state_program(run.config, run.model, run.tx, variables)
  return lambda: devices.put_state(create()), shapes, {"step": 0, "seconds": 0.0}, lines


def _train_metrics(
  sums: dict[str, np.ndarray],
  learning_rate: float,
  images_per_second: float,
  seconds: float,
  step_memory: int | None,
) -> dict[str, float]:
  count = sums["count"]
  metrics = {
    "loss": float(sums["loss"] / count),
    "aux_loss": float(sums["aux_loss"] / count),
    "top1": float(sums["correct"] / count),
    "learning_rate": learning_rate,
    "images_per_second": images_per_second,
    "seconds": seconds,
    "peak_memory_bytes": devices.peak_memory_bytes(),
  }
  if step_memory is not None:
    metrics["step_memory_bytes"] = step_memory
  return metrics


def _unwritable(workdir: pathlib.Path) -> str | None:
  """Why `train` could not write its files in `workdir` (None if it can): checked before the
  dataset and the model are built, without writing anything."""
  existing = next(path for path in (workdir, *workdir.parents) if path.exists())
  if not existing.is_dir():
    return (
      f"{existing} is a file, not a folder"
      if existing == workdir
      else f"{existing} is a file, so no folder can be made under it"
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    return (
      f"{existing} is read-only (file system or permissions)"
      if existing == workdir
      else f"no folder can be made in {existing} (read-only file system or permissions)"
    )
  return None


def _eval_owed(run: _Run, step: int) -> bool:
  """Whether the checkpoint at `step` is due an evaluation (every eval_every_steps, and the last
  step) that metrics.jsonl lacks: the process stopped between saving and evaluating."""
  config = run.config
  due = step == run.total_steps or (
    config.eval_every_steps > 0 and step % config.eval_every_steps == 0
  )
  return (
    step > 0
    and due
    and not any(
      record["step"] == step and record["split"] == "eval" for record in read_metrics(run.workdir)
    )
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) the configured run in `workdir`; evaluates every eval_every_steps.

  Raises Interrupted after checkpointing when the process gets SIGTERM or SIGINT (StoppedEarly,
  at once, when it comes before the first step), and NonFiniteLoss (without checkpointing) when
  the loss becomes NaN or inf.
  """
  unwritable = _unwritable(pathlib.Path(workdir))
  if unwritable and not (pathlib.Path(workdir) / "checkpoints").is_dir():
    raise ConfigError(f"--workdir {workdir}: {unwritable}; choose a folder you can write to.")
  started = time.monotonic()
  run = _Run(config, workdir)
  with _stop_flag() as terminated:
    make_state, shapes, progress, start_lines = _restore_or_create(run)
    start_step = progress["step"]
    is_chief = devices.process_index() == 0
    owed = devices.from_process_zero(_eval_owed(run, start_step))
    if start_step >= run.total_steps and not owed:  # finished: nothing written, read-only too
      if is_chief:
        print(
          "\n".join(
            [
              *start_lines,
              f"Nothing to do: the run in {workdir} already reached "
              f"step {run.total_steps}. `inception-jax eval` evaluates it; more steps "
              f"need a new --workdir or a larger num_epochs / num_train_steps.",
            ]
          )
        )
      return make_state()
    if unwritable:  # only known now: a finished run in it would have needed no writing
      raise ConfigError(
        f"--workdir {workdir}: {unwritable}; the run there cannot go on. Copy "
        f"it to a folder you can write to and resume there."
      )
    if is_chief:
      run.workdir.mkdir(parents=True, exist_ok=True)
      start_lines = [*start_lines, *_write_config(config, run.workdir, start_step)]
    with (
      _compiling() as compiling,
      Checkpoints(run.workdir, keep=config.keep_checkpoints) as checkpoints,
      Reporter(run.workdir, start_step, active=is_chief) as reporter,
    ):
      # The state and the train step compile at once, from shapes: neither needs the other's
      # values, and XLA compiling one program leaves a core of two idle half the time. The eval
      # step compiles after the train step, during the first steps, unless an evaluation is
      # owed first: the first step waits only for what it needs (configs/default.py on 2 cores:
      # the first step 2-7 s sooner than one program after another, then 0.3-2.3 s sooner than
      # with the eval step beside the train step, the run as long; results/compile_time.md).
      train_batches, eval_batches = run.train_batches(start_step), run.eval_batches()
      placed = devices.state_shapes(shapes)
      state_ready = compiling.submit(make_state)
      train_step_ready = compiling.submit(
        devices.compile_step,
        devices.parallel(make_train_step(run.model, run.tx, config)),
        placed,
        run.batch_shapes(train_batches),
      )
      eval_program = _eval_step(run.model)
      eval_shapes = [placed.eval_variables()], run.batch_shapes(eval_batches)

      def compile_eval_step() -> tuple[Callable[..., Any], int | None]:
        if not owed:
          train_step_ready.result()  # and nothing to compile if the train step failed
        return devices.compile_step(eval_program, *eval_shapes)

      eval_step_ready = compiling.submit(compile_eval_step)
      params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes.params))
      reporter.print(
        f"{'Resuming at step ' + str(start_step) if start_step else 'Training'}: GoogLeNet "
        f"({config.model.module} modules, {params:,} parameters) on {config.data.name}, "
        f"{run.train_examples:,} training images, batch {config.batch_size} over "
        f"{jax.device_count()} device(s), {run.total_steps} steps "
        f"({run.total_steps / run.steps_per_epoch:.1f} epochs); workdir {run.workdir}"
      )
      for line in start_lines:
        reporter.print(line)

      state = _before_first_step(state_ready, terminated, start_step)

      def record_eval(step: int) -> None:
        eval_step = eval_step_ready.result()[0]
        metrics = _evaluate(eval_step, [state.eval_variables()], eval_batches)
        metrics["seconds"] = progress["seconds"]
        reporter.write(step, "eval", metrics)
        reporter.print(eval_line(step, metrics))

      if owed:
        reporter.print(
          f"Evaluating step {start_step} first: the run stopped after saving it and "
          f"before recording its evaluation."
        )
        _before_first_step(eval_step_ready, terminated, start_step)
        record_eval(start_step)
      batches = devices.prefetch(tfds.as_numpy(train_batches))
      start_time = time.monotonic() - progress["seconds"]
      window_start, window_first_step = time.monotonic(), start_step
      unchecked = None  # (step, losses) of a step whose losses were not yet checked for NaN
      for step in range(start_step + 1, run.total_steps + 1):
        batch = next(batches)
        if step == start_step + 1:  # compiled ahead of time, so that XLA says what memory it needs
          train_step, step_memory = _before_first_step(train_step_ready, terminated, start_step)
          compiled_at = time.monotonic()
        state, losses = train_step(state, batch)
        if unchecked:  # the previous step's losses: done by now, so this hardly ever waits
          _check_finite(*unchecked, checkpoints)
        unchecked = (step, losses)
        if step == start_step + 1:  # compilation: time the throughput from the next step on
          jax.block_until_ready(state.step)
          now = time.monotonic()
          # Where this step is logged (a resume just before a log step) it is the only one to time:
          # its run without the compile. Across processes the compile happens in the call itself.
          first_step_seconds = now - compiled_at
          reporter.print(
            f"First step done {now - started:.1f}s after the command's imports (dataset, "
            f"train state and compilation included)"
          )
          window_start, window_first_step = now, step
        progress.update(
          step=step,
          seconds=time.monotonic() - start_time,
          examples_seen=step * config.batch_size,
          epoch=step // run.steps_per_epoch,
        )
        last = step == run.total_steps
        log = step % config.log_every_steps == 0 or last
        save = step % config.checkpoint_every_steps == 0 or last or terminated
        run_eval = config.eval_every_steps and step % config.eval_every_steps == 0 or last
        if log or save or run_eval:  # nothing non-finite is logged, saved or evaluated
          _check_finite(*unchecked, checkpoints)
          unchecked = None
        if log:
          sums = jax.device_get(state.train_sums)
          state = state.replace(train_sums=devices.put_state(zero_sums()))
          now = time.monotonic()
          seconds_per_step = (
            (now - window_start) / (step - window_first_step)
            if step > window_first_step
            else first_step_seconds
          )
          metrics = _train_metrics(
            sums,
            float(run.schedule(step - 1)),
            config.batch_size / seconds_per_step,
            progress["seconds"],
            step_memory,
          )
          reporter.write(step, "train", metrics)
          reporter.print(
            progress_line(
              step, run.total_steps, metrics, seconds_per_step * (run.total_steps - step)
            )
          )
          window_start, window_first_step = now, step
        pause_start = time.monotonic()  # images/s counts training time only
        if save and step not in checkpoints.all_steps():
          reporter.flush()
          checkpoints.save(step, devices.to_checkpoint(state), dict(progress))
        if run_eval:
          record_eval(step)
        window_start += time.monotonic() - pause_start
        if terminated:
          raise Interrupted(step, terminated[0])
  return state


def evaluate(
  config: ml_collections.ConfigDict,
  workdirs: Sequence[str],
  step: int | None = None,
  crops: int = 1,
  keep_predictions: bool = False,
) -> dict[str, Any]:
  """Evaluates the checkpoint at `step` (default: the newest intact one) of each workdir on the
  eval split, with `crops` views of each image (1, 10 or 144, data.crops); several workdirs are
  an ensemble, their softmax averaged. Every workdir's checkpoint must fit `config`'s network.
  Writes nothing; returns {"step" (a list for an ensemble), "crops", "workdirs", "loss", "top1",
  "top5", "count"}, and with `keep_predictions` the per-image "log_probs" and "labels" (numpy
  arrays) that `ensemble` combines with other models' without evaluating them again."""
  run = _Run(config, workdirs[0])
  batches = run.eval_batches(crops)  # checks `crops` before any checkpoint is read
  models, steps = [], []
  for workdir in workdirs:
    path = pathlib.Path(workdir)
    if not (path / "checkpoints").is_dir():
      raise ConfigError(
        f"{path} has no checkpoints; train first with "
        f"`inception-jax train --config ... --workdir {workdir}`."
      )
    with Checkpoints(path, read_only=True) as checkpoints:
      state, progress, damaged = checkpoints.restore(run.abstract_state(), step)
    for skipped in damaged:
      print(skipped.skipped(f"evaluating step {progress['step']}"))
    models.append(devices.from_checkpoint(state).eval_variables())
    steps.append(progress["step"])
  metrics = _evaluate(_eval_step(run.model), models, batches, keep_predictions)
  step_or_steps = steps[0] if len(steps) == 1 else steps
  return {"step": step_or_steps, "crops": crops, "workdirs": list(workdirs), **metrics}


def ensemble(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The ensemble of separately evaluated models (`evaluate` results with `keep_predictions`,
  same split and crops): what `evaluate` of all their workdirs gives, to float rounding (the
  same mean of softmax, summed in another order), at the cost of a sum instead of a pass."""
  labels = members[0]["labels"]
  if any(m["crops"] != members[0]["crops"] for m in members) or any(
    not np.array_equal(m["labels"], labels) for m in members
  ):
    raise ValueError("ensemble members were evaluated on different images or crops")
  log_probs = jax.nn.logsumexp(jnp.stack([m["log_probs"] for m in members]), axis=0)
  log_probs -= np.log(len(members))
  sums = score(log_probs, jnp.asarray(labels), jnp.ones(len(labels), jnp.float32))
  return {
    "step": [m["step"] for m in members],
    "crops": members[0]["crops"],
    "workdirs": [w for m in members for w in m["workdirs"]],
    **_averages(jax.device_get(sums)),
  }
