"""The train state and the per-device train and eval steps (wrapped in pmap by `devices`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_jax.data import photometric
from inception_jax.models import init_variables
from inception_jax.models.googlenet import GoogLeNet
from inception_jax.models.layers import rows_of_global_draw
from inception_jax.training.devices import AXIS

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TRAIN_SUMS = ("loss", "aux_loss", "correct", "count")
# XLA options for a program that runs once (other backends ignore the CPU one). An XLA that no
# longer has one of them refuses it by name (jax 0.12 has no `xla_cpu_use_fusion_emitters`):
# `compile_fast` then compiles without it.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
UNKNOWN_OPTION = re.compile(r"No such compile option: '(\w+)'")
# Folded into the run's key for the photometric distortions' keys; dropout folds in the step,
# an int32 that never reaches it.
PHOTOMETRIC_STREAM = 0xFFFFFFFF


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs to continue exactly where the saved one was.

  `rng` is the key data every dropout and photometric key is folded from (with the step), and
  `train_sums` the metric sums since the last log line, so a resumed run logs the same numbers.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any  # Polyak average of `params` when config.ema_decay > 0, else {}
  rng: jax.Array
  train_sums: Metrics

  def eval_variables(self) -> dict[str, Any]:
    """What evaluation runs: the averaged weights when Polyak averaging is on (the paper's
    test-time model), and the BatchNorm statistics."""
    return {"params": self.ema_params or self.params, "batch_stats": self.batch_stats}


def stack_models(variables: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Models' variables stacked on a new leading axis: the eval step's ensemble (of one, or more)."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *variables)


def zero_sums() -> Metrics:
  return {name: jnp.zeros((), jnp.float32) for name in TRAIN_SUMS}


def _seed_keys(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """The keys of the initial parameters and of dropout, both from config.seed."""
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  return init_rng, dropout_rng


def initial_variables(config: ml_collections.ConfigDict, model: GoogLeNet) -> dict[str, Any]:
  """The parameters and BatchNorm statistics a run starting from scratch gets."""
  return init_variables(model, _seed_keys(config)[0], (config.image_size, config.image_size, 3))


def create_train_state(
  config: ml_collections.ConfigDict,
  model: GoogLeNet,
  tx: optax.GradientTransformation,
  variables: dict[str, Any] | None = None,
) -> TrainState:
  """Initial state from config.seed: parameters, optimizer state, EMA copy, dropout key.

  `variables` (params and batch_stats: imported, or taken from a run to fine-tune) replace the
  initialisation."""
  return train_state_program(config, model, tx, variables)[0]()


def train_state_program(
  config: ml_collections.ConfigDict,
  model: GoogLeNet,
  tx: optax.GradientTransformation,
  variables: dict[str, Any] | None = None,
) -> tuple[Callable[[], TrainState], TrainState]:
  """`create_train_state` traced but not yet compiled: the function that compiles and runs it,
  and the state's shapes (jax.ShapeDtypeStruct leaves), so that the steps can be compiled while
  it is (`trainer`).

  One jitted program: built op by op, the optimizer's zeros alone cost a compile per shape. It
  runs once, so it is compiled for compiling fast: LLVM does not optimise it (configs/default.py's
  state compiles in 4.5 s instead of 7.4 s on a 2-core CPU and takes 50 ms instead of 10; the
  normal samples' float rounding differs from the optimised program's in the last bits), and on
  CPU XLA's older fusion emitters generate it (5.1 instead of 7.2-8.2 CPU-seconds, 593 fusions
  instead of 939, the same values to the bit).
  """

  def create(variables: dict[str, Any] | None) -> TrainState:
    if variables is None:
      variables = initial_variables(config, model)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      ema_params=params if config.ema_decay > 0 else {},
      rng=jax.random.key_data(_seed_keys(config)[1]),
      train_sums=zero_sums(),
    )

  lowered = jax.jit(create).lower(variables)

  def compile_and_run() -> TrainState:
    return compile_fast(lowered)(variables)

  return compile_and_run, lowered.out_info


def compile_fast(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
  """`lowered` compiled with the FAST_COMPILE options this XLA knows."""
  options = dict(FAST_COMPILE)
  while True:
    try:
      return lowered.compile(options)
    except jax.errors.JaxRuntimeError as error:
      unknown = UNKNOWN_OPTION.search(str(error))
      if unknown is None or unknown.group(1) not in options:
        raise
      del options[unknown.group(1)]


def _cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Per-example cross entropy against (optionally smoothed) one-hot labels."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the top-k logits."""
  top = jax.lax.top_k(logits, min(k, logits.shape[-1]))[1]
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _photometric(images: jax.Array, rng: jax.Array, step: jax.Array) -> jax.Array:
  """This device's images with the photometric distortions, whose factors are drawn for the
  global batch as dropout's masks are: an image's distortion depends on its place in the global
  batch, not on how many devices share the batch."""
  key = jax.random.fold_in(jax.random.fold_in(rng, PHOTOMETRIC_STREAM), step)

  def draw(shape: tuple[int, ...]) -> jax.Array:
    return photometric.random_factors(key, shape[0])

  return photometric.distort(images, rows_of_global_draw(draw, images.shape[:1], AXIS))


def make_train_step(
  model: GoogLeNet, tx: optax.GradientTransformation, config: ml_collections.ConfigDict
) -> Callable[[TrainState, Batch], tuple[TrainState, jax.Array]]:
  """One SGD step on this device's slice of the batch, synchronised over AXIS: the new state,
  and the step's summed losses (a buffer of its own, so the trainer can check it for NaN or
  inf while the state is donated to the next step)."""

  def loss_fn(
    params, state: TrainState, images: jax.Array, labels: jax.Array, dropout_rng: jax.Array
  ):
    output, updates = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      images,
      train=True,
      mutable=["batch_stats"],
      rngs={"dropout": dropout_rng},
    )
    main = _cross_entropy(output.logits, labels, config.label_smoothing).mean()
    aux = sum(
      (
        _cross_entropy(logits, labels, config.label_smoothing).mean()
        for logits in output.aux_logits
      ),
      jnp.zeros(()),
    )
    return main + config.aux_loss_weight * aux, (main, aux, output.logits, updates)

  def train_step(state: TrainState, batch: Batch) -> TrainState:
    rng = jax.random.wrap_key_data(state.rng)
    images = batch["image"]
    if config.augment.photometric:
      images = _photometric(images, rng, state.step)
    # The same key on every device: dropout draws the global batch's mask (BatchDropout).
    dropout_rng = jax.random.fold_in(rng, state.step)
    grads, (main, aux, logits, updates) = jax.grad(loss_fn, has_aux=True)(
      state.params, state, images, batch["label"], dropout_rng
    )
    grads = jax.lax.pmean(grads, AXIS)
    changes, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, changes)

    ema_params = state.ema_params
    if config.ema_decay > 0:  # warm-up as in tf.train.ExponentialMovingAverage(num_updates)
      decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
      ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)

    count = batch["label"].shape[0]
    step_sums = jax.lax.psum(
      {
        "loss": main * count,
        "aux_loss": aux * count,
        "correct": _correct(logits, batch["label"], 1).sum(),
        "count": jnp.asarray(count, jnp.float32),
      },
      AXIS,
    )
    state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=updates.get("batch_stats", {}),
      opt_state=opt_state,
      ema_params=ema_params,
      train_sums=jax.tree.map(jnp.add, state.train_sums, step_sums),
    )
    return state, step_sums["loss"] + step_sums["aux_loss"]

  return train_step


def score(log_probs: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
  """Sums of loss, top-1 and top-5 hits and real examples (where `mask` is 1) of predicted
  log-probabilities: one formula for the eval step and for ensembles of kept predictions."""
  loss = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return {
    "loss": (loss * mask).sum(),
    "top1": (_correct(log_probs, labels, 1) * mask).sum(),
    "top5": (_correct(log_probs, labels, 5) * mask).sum(),
    "count": mask.sum(),
  }


def make_eval_step(
  model: GoogLeNet,
) -> Callable[[dict[str, Any], Batch], tuple[Metrics, jax.Array]]:
  """The batch's `score` summed over AXIS, and its per-example log-probabilities (this device's).

  The step takes models stacked on a leading axis (`stack_models`) and images with their views,
  [batch, views, height, width, 3], and averages the softmax over models and views (the paper's
  ensembles and multi-crop test): probabilities, not logits, accumulated in log space one model
  and one view at a time, so memory is that of a one-view batch. With one model and one view the
  log-probabilities are log_softmax's, bit for bit.
  """

  def eval_step(models: dict[str, Any], batch: Batch) -> tuple[Metrics, jax.Array]:
    views = jnp.moveaxis(batch["image"], 1, 0)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)

    def add_model(total: jax.Array, variables: dict[str, Any]) -> tuple[jax.Array, None]:
      def add_view(total: jax.Array, images: jax.Array) -> tuple[jax.Array, None]:
        logits = model.apply(variables, images, train=False).logits.astype(jnp.float32)
        return jnp.logaddexp(total, jax.nn.log_softmax(logits)), None

      return jax.lax.scan(add_view, total, views)[0], None

    start = jnp.full((labels.shape[0], model.num_classes), -jnp.inf, jnp.float32)
    total = jax.lax.scan(add_model, start, models)[0]
    count = jax.tree.leaves(models)[0].shape[0] * views.shape[0]
    log_probs = total - jnp.log(jnp.float32(count))
    return jax.lax.psum(score(log_probs, labels, mask), AXIS), log_probs

  return eval_step
