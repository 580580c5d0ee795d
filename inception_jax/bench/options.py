"""The bench's options, apart so that the command line can name their defaults without jax."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class BenchOptions:
  networks: Sequence[str] = ("torchvision224", "small32")
  dtypes: Sequence[str] = ("float32", "bfloat16")
  batch_sizes: Sequence[int] | None = None  # None: DEFAULT_BATCHES for the platform
  modes: Sequence[str] = ("train", "eval")
  steps: int = 10
  warmup: int = 2
  rounds: int = 1  # >1: each case's frameworks timed again in turn, the median of the rounds
  torch: str = "auto"  # auto (if installed) | none | required
  torch_variants: Sequence[str] = ("eager", "compile")
  pipeline_threads: Sequence[int] = (1, 0)  # 0: every CPU core; () skips the pipeline
  pipeline_seconds: float = 10.0
  profile_steps: int = 0  # 0: no per-part profile
