"""XLA options this project sets by default, each kept because the bench measured it helping.

They go into the XLA_FLAGS environment variable when the package is imported, before JAX creates
its backend (a backend already created keeps its options). A flag the user's XLA_FLAGS already
names is left as the user set it. The measurements and the options tried and not kept:
experiments/results/xla_cpu_flags.md (rerun with experiments/xla_cpu_flags.py, or
experiments/paired_steps.py for options too close to tell apart in separate runs).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULT_XLA_FLAGS: dict[str, str] = {
  # CPU only: YNNPACK's convolutions (XLA's CPU default) compute weight gradients several times
  # slower than Eigen's; without them the 224x224 train step runs about twice as fast. With
  # Eigen's dots, which take the batched products of Winograd's 3x3 convolutions
  # (models/winograd.py), the train step runs 1.06x as fast as with YNNPACK's; without Winograd
  # the two were level (experiments/results/winograd.md).
  "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution,-individual_dot",
}


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
  """Appends each default flag that `environ["XLA_FLAGS"]` does not already name."""
  flags = environ.get("XLA_FLAGS", "")
  named = {word.split("=")[0] for word in flags.split()}
  missing = [
    f"--{name}={value}" for name, value in DEFAULT_XLA_FLAGS.items() if f"--{name}" not in named
  ]
  if missing:
    environ["XLA_FLAGS"] = " ".join([*flags.split(), *missing])
