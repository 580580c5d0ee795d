"""Everything that knows how work is spread over devices and processes, in one place.

Data parallelism with `jax.pmap` over this process's devices: the train state goes in
unreplicated (`in_axes=None`) and comes back the same way (`out_axes=None`, valid because the step
averages gradients and BatchNorm statistics over AXIS), batches go in split along their first axis.
Moving to `jax.shard_map` means changing this file only.
"""

from __future__ import annotations

import collections
import os
import platform
import resource
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from inception_jax.errors import ConfigError

AXIS = "batch"  # the pmapped axis: gradients, BatchNorm statistics and metrics reduce over it


def initialize(distributed: ml_collections.ConfigDict) -> None:
  """Joins a multi-process job: explicit coordinator settings, or the cluster's own variables.

  One process per host (or per GPU) runs the same command; `jax.distributed.initialize` finds the
  others from the config, or by itself on TPU pod slices and under SLURM / Open MPI launches.
  """
  if distributed.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=distributed.coordinator_address,
      num_processes=distributed.num_processes,
      process_id=distributed.process_id,
    )
  elif _launched_as_several_processes():
    jax.distributed.initialize()


def _launched_as_several_processes() -> bool:
  env = os.environ
  return (
    int(env.get("SLURM_NTASKS", "1")) > 1
    and "SLURM_STEP_ID" in env
    or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or "JAX_COORDINATOR_ADDRESS" in env
  )


def process_zero_first(work: Callable[[], Any]) -> Any:
  """Runs `work` in process 0, then in the others once it is done.

  For preparing a dataset: on a shared disk the others find it ready; on per-host disks each
  builds its own; never do two processes write the same files at once.
  """
  if jax.process_count() == 1:
    return work()
  from jax.experimental import multihost_utils  # noqa: PLC0415 (multi-process only)

  result = work() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("inception_jax: process 0 ran first")
  return result if jax.process_index() == 0 else work()


def from_process_zero(value: bool) -> bool:
  """Process 0's `value` on every process: it alone writes the logs a decision may rest on."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415 (multi-process only)

  return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def peak_memory_bytes() -> int:
  """Peak memory so far: the largest local device's (GPU, TPU) if it reports it, else the
  process's peak resident set (CPU, where XLA's buffers live in the process)."""
  stats = [device.memory_stats() for device in jax.local_devices()]
  if all(stats) and all("peak_bytes_in_use" in s for s in stats):
    return max(s["peak_bytes_in_use"] for s in stats)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def compile_step(step: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], int | None]:
  """`step` compiled for `args` ahead of time, and the device memory it needs by XLA's count
  (arguments + outputs + temporaries, less donated buffers reused for outputs), or None where
  that is not known. Across processes the pmap compiles on its first call instead: lowering
  it ahead of time there sees only this process's share of the batch."""
  if jax.process_count() > 1:
    return step, None
  compiled = step.lower(*args).compile()
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    analysis = None
  if analysis is None:
    return compiled, None
  return compiled, int(
    analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    + analysis.temp_size_in_bytes
    - analysis.alias_size_in_bytes
  )


# The CPU features speed ratios depend on, as /proc/cpuinfo names them and reports print them.
CPU_FEATURES = {
  "avx512f": "AVX-512",
  "avx512_bf16": "AVX-512 BF16",
  "avx512_vnni": "AVX-512 VNNI",
  "amx_tile": "AMX",
}


def describe() -> dict[str, Any]:
  """The hardware and software numbers come from, for reports. Virtual machines often name their
  CPU only "AMD EPYC" or "Intel(R) Xeon(R) Processor"; its family and model tell the generation
  (AMD's family 25 model 17 is Zen 4, Intel's family 6 model 143 Sapphire Rapids)."""
  device = jax.local_devices()[0]
  processor, flags = platform.processor() or platform.machine(), None  # None: not known
  generation = None
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as cpuinfo:
      fields = [line.split(":", 1) for line in cpuinfo if ":" in line]
    values = {key.strip(): value.strip() for key, value in reversed(fields)}  # the first CPU's
    processor = values.get("model name", processor)
    flags = set(values.get("flags", "").split())
    if "cpu family" in values and "model" in values:
      generation = f"family {values['cpu family']} model {values['model']}"
  return {
    "device": device.device_kind,
    "platform": device.platform,
    "devices": jax.local_device_count(),
    "cpu_cores": os.cpu_count(),
    "processor": processor,
    "cpu_generation": generation,
    "cpu_features": None
    if flags is None
    else [name for flag, name in CPU_FEATURES.items() if flag in flags],
    "jax": jax.__version__,
    "python": platform.python_version(),
  }


def describe_line(m: dict[str, Any] | None = None) -> str:
  """`describe()` (or a saved copy of it) in one line, with the CPU's family and model and its
  vector extensions where they are known (not without /proc/cpuinfo, nor in copies saved before
  they were recorded)."""
  m = m or describe()
  accelerator = "" if m["platform"] == "cpu" else f"{m['devices']} x {m['device']}, "
  generation = f", {m['cpu_generation']}" if m.get("cpu_generation") else ""
  features, extensions = m.get("cpu_features"), ""
  if features is not None:
    missing = [f"no {name}" for name in ("AVX-512", "AMX") if name not in features]
    extensions = "; " + ", ".join([*features, *missing])
  return (
    f"{accelerator}{m['cpu_cores']} CPU cores ({m['processor']}{generation}{extensions}), "
    f"jax {m['jax']}"
  )


def local_batch_size(global_batch: int) -> int:
  """This process's share of the global batch; it must split evenly over every device."""
  devices = jax.device_count()
  if global_batch % devices:
    raise ConfigError(
      f"batch_size={global_batch} does not divide over the {devices} devices "
      f"({jax.process_count()} process(es) x {jax.local_device_count()}); use a multiple of "
      f"{devices}, e.g. --config.batch_size={max(devices, global_batch // devices * devices)}."
    )
  return global_batch // jax.process_count()


def _mesh() -> Mesh:
  return Mesh(np.array(jax.local_devices()), (AXIS,))


def parallel(step: Callable[..., Any]) -> Callable[..., Any]:
  """`step(state, batch) -> (state, ...)` run on every local device, the old state's buffers
  donated; every output is the same on all devices (reduced over AXIS)."""
  return jax.pmap(step, axis_name=AXIS, in_axes=(None, 0), out_axes=None, donate_argnums=(0,))


def parallel_eval(step: Callable[..., Any]) -> Callable[..., Any]:
  """`step(state, batch) -> (metrics, per-example outputs)` on every local device: the metrics
  reduced over AXIS, the outputs [devices, examples per device, ...]; the state is read, not
  donated."""
  return jax.pmap(step, axis_name=AXIS, in_axes=(None, 0), out_axes=(None, 0))


def put_state(state: Any) -> Any:
  """The train state as the pmapped steps want it: a full copy on each of this process's devices."""
  return jax.device_put(state, NamedSharding(_mesh(), PartitionSpec()))


def _placed(shapes: Any, sharding: NamedSharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def state_shapes(shapes: Any) -> Any:
  """The state's shapes (jax.ShapeDtypeStruct or array leaves) placed as `put_state` places it:
  what `compile_step` needs to compile a step before the state exists."""
  return _placed(shapes, NamedSharding(_mesh(), PartitionSpec()))


def batch_shapes(
  shapes: Mapping[str, tuple[Sequence[int], np.dtype]],
) -> dict[str, jax.ShapeDtypeStruct]:
  """A host batch's {key: (shape, dtype)} as `put_batch` places it, for `compile_step`."""
  sharding = NamedSharding(_mesh(), PartitionSpec(AXIS))
  devices = jax.local_device_count()
  return {
    key: jax.ShapeDtypeStruct((devices, shape[0] // devices, *shape[1:]), dtype, sharding=sharding)
    for key, (shape, dtype) in shapes.items()
  }


def _rewrap(tree: Any, mesh: Mesh) -> Any:
  """The same per-device buffers, viewed as replicated over `mesh` (no copy)."""
  sharding = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(
    lambda x: jax.make_array_from_single_device_arrays(
      x.shape, sharding, [shard.data for shard in x.addressable_shards]
    ),
    tree,
  )


def checkpoint_sharding() -> NamedSharding:
  """Checkpoints hold global arrays, replicated over every process's devices."""
  return NamedSharding(Mesh(np.array(jax.devices()), (AXIS,)), PartitionSpec())


def checkpoint_shapes(shapes: Any) -> Any:
  """The state's shapes placed as in a checkpoint: what restoring one needs."""
  return _placed(shapes, checkpoint_sharding())


def to_checkpoint(state: Any) -> Any:
  """The pmapped steps' process-local state as global arrays, which orbax can save."""
  return _rewrap(state, checkpoint_sharding().mesh)


def from_checkpoint(state: Any) -> Any:
  """A restored global state as the process-local state the pmapped steps take."""
  return _rewrap(state, _mesh())


def put_batch(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """A host batch [local_batch, ...] as [local_devices, per_device, ...], one slice per device."""
  sharding = NamedSharding(_mesh(), PartitionSpec(AXIS))
  devices = jax.local_device_count()
  return {
    key: jax.device_put(value.reshape(devices, -1, *value.shape[1:]), sharding)
    for key, value in batch.items()
  }


def prefetch(
  batches: Iterable[dict[str, np.ndarray]], size: int = 2
) -> Iterator[dict[str, jax.Array]]:
  """Copies the next `size` batches to the devices while the current step runs."""
  queue: collections.deque = collections.deque()
  iterator = iter(batches)
  for batch in iterator:
    queue.append(put_batch(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
