"""How `sweep --parallel N` shares one machine between N points: each runs on its own devices.

GPUs: CUDA_VISIBLE_DEVICES, the visible GPUs split evenly. TPUs: libtpu's bounds for processes
that do not communicate, each with its own chips (the JAX team's recipe for several processes on
one TPU VM). CPUs: the cores this process may use, split evenly, each point pinned to its share;
XLA's and TensorFlow's thread pools size themselves to the cores a process may run on.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from inception_jax.errors import ConfigError

# libtpu's chip bounds for a process holding 1, 2 or 4 chips of a TPU VM.
TPU_CHIP_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1"}
TPU_FIRST_PORT = 8476

# Runs first in a point's process: pins it to its cores, then becomes the point's command (a
# process of its own: the sweep's process has threads, and pinning in a fork of it would need one).
PINNED = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); " + (
  "os.execv(sys.argv[2], sys.argv[2:])"
)


@dataclasses.dataclass(frozen=True)
class Slot:
  """One of the N places a point can run: environment variables and, on CPU, its cores."""

  env: dict[str, str]
  cpus: tuple[int, ...] = ()

  def describe(self) -> str:
    if self.cpus:
      return f"cores {','.join(map(str, self.cpus))}"
    if "CUDA_VISIBLE_DEVICES" in self.env:
      return f"GPUs {self.env['CUDA_VISIBLE_DEVICES']}"
    return f"TPU chips {self.env['TPU_VISIBLE_DEVICES']}"

  def command(self, argv: Sequence[str]) -> list[str]:
    """`argv` as this slot runs it (pinned to its cores on CPU)."""
    if not self.cpus:
      return list(argv)
    return [sys.executable, "-c", PINNED, ",".join(map(str, self.cpus)), *argv]


def _split(items: Sequence, count: int) -> list[list]:
  """`items` in `count` contiguous runs of equal length (any remainder left unused)."""
  size = len(items) // count
  return [list(items[i * size : (i + 1) * size]) for i in range(count)]


def _gpus(environ: Mapping[str, str]) -> list[str]:
  visible = environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def _tpu_chips() -> int:
  """TPU chips on this VM: /dev/accel* (v4, v5e), else numbered /dev/vfio entries (v5p, v6e)."""
  return len(glob.glob("/dev/accel*")) or len(glob.glob("/dev/vfio/[0-9]*"))


def slots(count: int, environ: Mapping[str, str] = os.environ) -> list[Slot]:
  """`count` slots that share this machine's accelerators (or, without any, its cores)."""
  if count < 1:
    raise ConfigError(f"--parallel {count}: need at least 1.")
  if count == 1:
    return [Slot({})]
  gpus = _gpus(environ)
  if gpus:
    if len(gpus) < count:
      raise ConfigError(f"--parallel {count} needs {count} GPUs; this machine shows {len(gpus)}.")
    return [Slot({"CUDA_VISIBLE_DEVICES": ",".join(part)}) for part in _split(gpus, count)]
  chips = _tpu_chips()
  if chips:
    per_point = chips // count
    if per_point not in TPU_CHIP_BOUNDS:
      raise ConfigError(
        f"--parallel {count} on {chips} TPU chips gives {chips / count:g} chips a point; "
        f"choose N so that each point gets {', '.join(map(str, TPU_CHIP_BOUNDS))} chips."
      )
    return [
      Slot(
        {
          "TPU_CHIPS_PER_PROCESS_BOUNDS": TPU_CHIP_BOUNDS[per_point],
          "TPU_PROCESS_BOUNDS": "1,1,1",
          "TPU_VISIBLE_DEVICES": ",".join(map(str, part)),
          "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{TPU_FIRST_PORT + i}",
          "TPU_MESH_CONTROLLER_PORT": str(TPU_FIRST_PORT + i),
        }
      )
      for i, part in enumerate(_split(range(chips), count))
    ]
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < count:
    raise ConfigError(f"--parallel {count} needs {count} CPU cores; this process has {len(cores)}.")
  return [Slot({}, tuple(part)) for part in _split(cores, count)]
