"""C-library settings that are read only when a process starts: the command re-executes itself
once with them, before importing anything heavy.

XLA's CPU runtime mallocs each step's temporaries (606 MiB for the 224x224 float32 train step at
batch 16) from its worker threads, and glibc serves a request that large with a fresh mmap every
time: every step faulted in ~170,000 new 4 KiB pages, about 2.3 us each on a 2-core AMD EPYC.
`glibc.malloc.hugetlb=1` makes glibc ask for transparent huge pages on its mappings: ~1,000 faults
per step, train steps 1.14x (224x224) and 1.24x (small32) as fast, PyTorch's 1.02-1.03x
(experiments/results/host_memory.md). A process already started cannot change it, so a Python
script that imports inception_jax sets it itself: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.
"""

from __future__ import annotations

import os
import pathlib
import platform
import sys
from collections.abc import Mapping

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
