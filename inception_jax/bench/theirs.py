"""Times PyTorch's GoogLeNet on the same cases: eager (channels_last, autocast) and torch.compile.

Imported only when torch is installed (the `torch` extra). The train step matches ours: SGD with
momentum and weight decay, cross-entropy on the main logits plus 0.3 x each aux head's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from inception_jax.bench.cases import NETWORKS, Case, time_steps
from inception_jax.bench.profile import profile_torch
from inception_jax.bench.torch_googlenet import parameter_count, peer
from inception_jax.models import build_model

VARIANTS = ("eager", "compile")


def device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(dev: torch.device) -> None:
  if dev.type == "cuda":
    torch.cuda.synchronize(dev)


def time_theirs(
  case: Case, variant: str, steps: int, warmup: int, profile_steps: int = 0
) -> tuple[dict[str, Any], Callable[[], None]]:
  """Median seconds per step of the PyTorch peer, as `time_ours` measures ours (and profiles),
  and the step itself."""
  dev = device()
  torch.manual_seed(0)
  model_config = case.model_config()
  net, what = peer(build_model(model_config), NETWORKS[case.network].torchvision)
  net = net.to(dev, memory_format=torch.channels_last)
  net.train(case.mode == "train")
  size = case.image_size
  images = torch.randn(case.batch, 3, size, size, device=dev).to(memory_format=torch.channels_last)
  labels = torch.randint(0, model_config.num_classes, (case.batch,), device=dev)
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  autocast = (
    torch.autocast(dev.type, dtype=torch.bfloat16)
    if case.dtype == "bfloat16"
    else contextlib.nullcontext()
  )
  forward = torch.compile(net) if variant == "compile" else net

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      logits, *aux = forward(images)
      loss = F.cross_entropy(logits, labels) + 0.3 * sum(F.cross_entropy(a, labels) for a in aux)
    loss.backward()
    optimizer.step()

  def eval_step():
    with torch.inference_mode(), autocast:
      forward(images)

  step = train_step if case.mode == "train" else eval_step
  if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(dev)
  start = time.perf_counter()
  step()  # the first step: torch.compile compiles here
  _sync(dev)
  first_seconds = time.perf_counter() - start

  def timed_step() -> None:
    step()
    _sync(dev)

  timing = time_steps(timed_step, case.batch, steps, warmup)
  if profile_steps:
    timing["profile"] = profile_torch(timed_step, profile_steps)
  return {
    **timing,
    "compile_seconds": max(0.0, first_seconds - timing["seconds_per_step"]),
    "memory_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
    "peer": what,
    "parameters": parameter_count(net),
  }, timed_step
