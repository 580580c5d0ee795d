"""How the `inception-jax` command sets up its own process (never done to a program that imports
the package): C-library settings, TensorFlow's import, the exit.

C-library settings are read only when a process starts: the command re-executes itself once with
them, before importing anything heavy.

XLA's CPU runtime mallocs each step's temporaries (606 MiB for the 224x224 float32 train step at
batch 16) from its worker threads, and glibc serves a request that large with a fresh mmap every
time: every step faulted in ~170,000 new 4 KiB pages, about 2.3 us each on a 2-core AMD EPYC.
`glibc.malloc.hugetlb=1` makes glibc ask for transparent huge pages on its mappings: ~1,000 faults
per step, train steps 1.14x (224x224) and 1.24x (small32) as fast, PyTorch's 1.02-1.03x
(experiments/results/host_memory.md). A process already started cannot change it, so a Python
script that imports inception_jax sets it itself: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.
"""

from __future__ import annotations

import atexit
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pathlib
import platform
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

TUNABLES = {"glibc.malloc.hugetlb": "1"}  # transparent huge pages for malloc's memory
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb
THP_MODE_FILE = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
_DONE = "INCEPTION_JAX_LAUNCHED"  # set in the re-executed process: never re-execute twice


def _glibc_version() -> tuple[int, ...] | None:
  if sys.platform != "linux":
    return None
  libc, version = platform.libc_ver()
  if libc != "glibc" or not version:
    return None
  return tuple(int(part) for part in version.split(".")[:2])


def _huge_pages_allowed() -> bool:
  """False where the kernel has transparent huge pages off ("[never]") or says nothing."""
  try:
    return "[never]" not in THP_MODE_FILE.read_text()
  except OSError:
    return False


def tuned_environment(
  environ: Mapping[str, str], glibc: tuple[int, ...] | None, huge_pages: bool
) -> dict[str, str] | None:
  """`environ` with TUNABLES added to GLIBC_TUNABLES, or None where re-executing would change
  nothing: not glibc >= MIN_GLIBC, huge pages off, already re-executed, or every tunable already
  named by the user (whose own value wins, e.g. `glibc.malloc.hugetlb=0` to opt out)."""
  if glibc is None or glibc < MIN_GLIBC or not huge_pages or _DONE in environ:
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  named = {item.split("=", 1)[0] for item in current.split(":") if item}
  missing = [f"{name}={value}" for name, value in TUNABLES.items() if name not in named]
  if not missing:
    return None
  tunables = ":".join([current, *missing] if current else missing)
  return {**environ, "GLIBC_TUNABLES": tunables, _DONE: "1"}


def reexecute_with_tunables() -> None:
  """Replaces this process with the same command line under `tuned_environment`, if it differs.

  Call it first thing in a command's entry point: whatever ran before runs again."""
  environ = tuned_environment(os.environ, _glibc_version(), _huge_pages_allowed())
  if environ is not None and sys.executable:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


# TensorFlow's __init__ imports this eagerly, inside a try that passes over an ImportError, to
# register Keras' optimizers for SavedModel; with it come Keras, scikit-learn and matplotlib:
# 1.7-1.9 s of TensorFlow's 4.0-4.3 s import on a 2-core CPU. We use tf.data and tf.image only.
EAGER_KERAS = "keras.src.optimizers"


class _TensorFlowWithoutEagerKeras(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` as Python would, and runs its __init__ with EAGER_KERAS unimportable
  (None in sys.modules: TensorFlow's import of it raises ImportError); importable again after,
  so `tf.keras` still loads Keras when something asks for it."""

  def find_spec(
    self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
  ) -> importlib.machinery.ModuleSpec | None:
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)  # once, and Python's own finders below find the real spec
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or EAGER_KERAS in sys.modules:
      return spec
    run_init = spec.loader.exec_module

    def exec_module(module: ModuleType) -> None:
      sys.modules[EAGER_KERAS] = None  # type: ignore[assignment]
      try:
        run_init(module)
      finally:
        if sys.modules.get(EAGER_KERAS, False) is None:
          del sys.modules[EAGER_KERAS]

    spec.loader.exec_module = exec_module  # type: ignore[method-assign]
    return spec


def set_up_command() -> None:
  """What the command does to its process before anything else: the tunables (re-executing
  once); TensorFlow without the Keras it never uses and without its C++ INFO notices (the CPU
  features it was not built for, tf.data's buffer sizes; warnings and errors stay, a
  TF_CPP_MIN_LOG_LEVEL of the user's own wins); TensorFlow's oneDNN kernels off, and with them
  the four lines of notice every command began with: they serve TensorFlow's matrix products and
  convolutions, which the command never runs (tf.data decodes, crops and resizes; the same
  batches to the bit, the README's main job the same to the bit; XLA does not read the
  variable); and an exit that skips Python's last garbage collections, which walk every object
  the libraries made (~1 s for TensorFlow's alone on a 2-core CPU, 0.1 s with them frozen; the
  command's files are closed by then)."""
  reexecute_with_tunables()
  if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.meta_path.insert(0, _TensorFlowWithoutEagerKeras())
  atexit.register(gc.freeze)
