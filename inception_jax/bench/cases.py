"""What the bench measures: the networks (presets at a resolution) and one timed case."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable

import ml_collections

from inception_jax.models import model_config


@dataclasses.dataclass(frozen=True)
class Network:
  """A model preset at one resolution; `torchvision` marks torchvision's googlenet itself."""

  model: Callable[[], ml_collections.ConfigDict]
  image_size: int
  torchvision: bool = False


def _tiny() -> ml_collections.ConfigDict:
  """Three modules of the small preset at an eighth of the width: compiles in seconds (tests)."""
  model = model_config("small")
  model.update(width_multiplier=0.125, aux_from=("inception_4a",))
  model.widths = ml_collections.ConfigDict(
    {name: model.widths[name] for name in ("inception_3a", "inception_4a", "inception_5a")}
  )
  return model


NETWORKS: dict[str, Network] = {
  "torchvision224": Network(lambda: model_config("torchvision"), 224, torchvision=True),
  "small32": Network(lambda: model_config("small"), 32),
  "tiny16": Network(_tiny, 16),
}


MODES = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Case:
  """One measurement: a network, a compute dtype, a global batch and train or eval."""

  network: str
  dtype: str  # float32 | bfloat16
  batch: int
  mode: str  # train (forward, backward, update; aux heads on) | eval (forward)

  def model_config(self) -> ml_collections.ConfigDict:
    config = NETWORKS[self.network].model()
    config.dtype = self.dtype
    return config

  @property
  def image_size(self) -> int:
    return NETWORKS[self.network].image_size


def time_steps(step: Callable[[], None], batch: int, steps: int, warmup: int) -> dict[str, float]:
  """Median seconds of `steps` calls of `step` after `warmup` untimed ones, images/s, and the
  process's minor page faults per timed step (memory the kernel had to map in afresh: on a CPU,
  the step's buffers, experiments/results/host_memory.md).

  `step` must wait for its own work (block_until_ready, cuda.synchronize), as both frameworks'
  timings do, so that each call measures one whole step.
  """
  times, faults = [], 0
  for i in range(warmup + steps):
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    step()
    if i >= warmup:
      times.append(time.perf_counter() - start)
      faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
  seconds = statistics.median(times)
  return {
    "seconds_per_step": seconds,
    "images_per_second": batch / seconds,
    "page_faults_per_step": faults / steps,
  }
