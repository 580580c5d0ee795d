"""XLA options this project sets by default, each kept because the bench measured it helping.

They go into the XLA_FLAGS environment variable when the package is imported, before JAX creates
its backend (a backend already created keeps its options). A flag the user's XLA_FLAGS already
names is left as the user set it. Some help on one CPU vendor only, so they are chosen by the
vendor /proc/cpuinfo names. The measurements and the options tried and not kept:
experiments/results/xla_cpu_flags.md (rerun with experiments/xla_cpu_flags.py) and
experiments/results/paired_steps.md (experiments/paired_steps.py).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import MutableMapping

DEFAULT_XLA_FLAGS: dict[str, str] = {
  # CPU only: YNNPACK's convolutions (XLA's CPU default) compute weight gradients several times
  # slower than Eigen's; without them the 224x224 train step runs about twice as fast.
  "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}

# Added on CPUs of one vendor (/proc/cpuinfo's vendor_id) to DEFAULT_XLA_FLAGS.
VENDOR_XLA_FLAGS: dict[str, dict[str, str]] = {
  # oneDNN's elementwise fusions: on a 2-core Intel Xeon (AVX-512, AMX) the 224x224 float32
  # train step 1.09-1.11x as fast in two runs of steps timed in turn with the defaults' (95%
  # intervals from 1.01), small32's 0.99-1.04x. With oneDNN's dots as well
  # (--xla_cpu_use_onednn=true) the eval step of configs/default.py died compiling (SIGILL after
  # "partition compile failed"). Not measured so on AMD.
  "GenuineIntel": {
    "xla_cpu_experimental_onednn_fusion_type": "+eltwise",
  },
}

CPUINFO = pathlib.Path("/proc/cpuinfo")


def cpu_vendor() -> str | None:
  """The first CPU's vendor_id ("GenuineIntel", "AuthenticAMD"), or None where it is not known."""
  try:
    with CPUINFO.open() as cpuinfo:
      for line in cpuinfo:
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
          return value.strip()
  except OSError:
    pass
  return None


def defaults_for(vendor: str | None) -> dict[str, str]:
  """The flags this project sets on a CPU of `vendor`."""
  return {**DEFAULT_XLA_FLAGS, **VENDOR_XLA_FLAGS.get(vendor or "", {})}


def apply_defaults(
  environ: MutableMapping[str, str] = os.environ, vendor: str | None = None
) -> None:
  """Appends each default flag for `vendor` (by default this machine's) that
  `environ["XLA_FLAGS"]` does not already name."""
  flags = environ.get("XLA_FLAGS", "")
  named = {word.split("=")[0] for word in flags.split()}
  defaults = defaults_for(vendor if vendor is not None else cpu_vendor())
  missing = [f"--{name}={value}" for name, value in defaults.items() if f"--{name}" not in named]
  if missing:
    environ["XLA_FLAGS"] = " ".join([*flags.split(), *missing])
