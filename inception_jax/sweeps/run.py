"""`inception-jax sweep`: runs a sweep's points (or this task's share of them), then reports.

Each point runs as its own `inception-jax train` process in `<workdir>/<point name>`, with its
output also appended to `train.log` there, so a point behaves exactly as the command printed by
--dry-run would. A point that finished is skipped (unless its config has changed since); one that
was interrupted resumes from its latest checkpoint, because that is what `train` does in a workdir
that holds one. Every point's config is built and checked before the first one starts.

With --parallel N, up to N points run at once, each on its own devices or cores (slots.py); their
output then goes to their train.log only, so that each log stays whole, and the console gets a
line as each starts and ends. SIGTERM is passed on to every running point, which checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TextIO

import ml_collections

from inception_jax.data import input_pipeline
from inception_jax.sweeps import evaluations, report, slots
from inception_jax.sweeps.grid import (
  Point,
  array_slice,
  by_configuration,
  load_sweep,
  share,
  shell_command,
)
from inception_jax.training.trainer import check_config

MARKER = "sweep.json"  # written into a point's workdir when its train command exited 0
SIGTERM_EXIT = 128 + signal.SIGTERM


def _config_text(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(sort_keys=True)


def is_finished(point_dir: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  """Whether the point ran to its end with this very config."""
  marker = point_dir / MARKER
  return marker.exists() and json.loads(marker.read_text()).get("config") == _config_text(config)


@dataclasses.dataclass
class _Running:
  """A point's train process, and what the sweep needs when it ends."""

  number: int
  point: Point
  command: list[str]
  slot: slots.Slot
  process: subprocess.Popen
  log: TextIO


def _start(
  number: int, point: Point, command: list[str], slot: slots.Slot, log_path: pathlib.Path, tee: bool
) -> _Running:
  """Starts a point's train command on its slot. Its output goes to its train.log, and with
  `tee` (one point at a time) also to the console; side by side, each log stays whole."""
  log = log_path.open("a")
  process = subprocess.Popen(
    slot.command([sys.executable, "-m", "inception_jax.main", *command[1:]]),
    stdout=subprocess.PIPE if tee else log,
    stderr=subprocess.STDOUT,
    text=True,
    env={**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"},
  )
  return _Running(number, point, command, slot, process, log)


def _tee(running: _Running, console: TextIO) -> None:
  for line in running.process.stdout:
    console.write(line)
    console.flush()
    running.log.write(line)


def _wait_any(running: list[_Running]) -> tuple[_Running, int]:
  """The first of the running points to end, and its exit status."""
  while True:
    for entry in running:
      code = entry.process.poll()
      if code is not None:
        return entry, code
    time.sleep(0.2)


def run_sweep(
  spec: str,
  workdir: str,
  common: Mapping[str, str] | None = None,
  index: int | None = None,
  count: int | None = None,
  dry_run: bool = False,
  console: TextIO | None = None,
  parallel: int = 1,
) -> int:
  """Runs this share of the sweep's unfinished points, `parallel` at a time, then its extra
  evaluations, and writes the report; the exit status."""
  console = console or sys.stdout
  sweep = load_sweep(spec, common)
  metrics = report.check_metrics(sweep.metrics, spec.partition(":")[0], sweep.eval_crops)
  configs = {point.name: sweep.config(point) for point in sweep.points}
  for config in configs.values():
    check_config(config)
  # Checks each network too. Once per network: points that differ in their recipe alone (seeds,
  # learning rates) share one, and each takes ~0.3 s to trace.
  networks = {
    name: (c.model.to_json_best_effort(sort_keys=True), c.image_size) for name, c in configs.items()
  }
  by_network = {network: configs[name] for name, network in networks.items()}
  network_costs = {network: report.point_cost(config) for network, config in by_network.items()}
  costs = {name: network_costs[network] for name, network in networks.items()}
  index, count = array_slice(index, count)
  root = pathlib.Path(workdir)
  mine = share(sweep.points, index, count)
  if dry_run:
    for point in mine:
      console.write(shell_command(sweep.train_command(point, str(root / point.name))) + "\n")
    return 0

  of = f" (share {index} of {count})" if count > 1 else ""
  console.write(
    f"Sweep {sweep.title}: {len(sweep.points)} points, {len(mine)} here{of}; workdir {root}\n"
  )
  failed: list[tuple[Point, int]] = []
  exit_code = 0
  queue = []
  for number, point in enumerate(mine, 1):
    if is_finished(root / point.name, configs[point.name]):
      console.write(f"[{number}/{len(mine)}] {point.name}: finished earlier, skipped\n")
    else:
      queue.append((number, point))
  free = slots.slots(parallel)
  if queue:  # once, before points run side by side: not one download per point
    datasets = {
      configs[p.name].data.to_json(sort_keys=True): configs[p.name].data for _, p in queue
    }
    for data in datasets.values():
      input_pipeline.prepare(data)
  running: list[_Running] = []
  stopping: list[int] = []

  def forward(signal_number: int, _) -> None:
    stopping.append(signal_number)
    for entry in running:
      entry.process.send_signal(signal.SIGTERM)

  previous = signal.signal(signal.SIGTERM, forward)
  try:
    while (queue and not stopping) or running:
      while queue and free and not stopping:
        number, point = queue.pop(0)
        point_dir = root / point.name
        command = sweep.train_command(point, str(point_dir))
        resuming = any((point_dir / "checkpoints").glob("[0-9]*"))
        where = f" on {free[0].describe()}" if parallel > 1 else ""
        console.write(
          f"[{number}/{len(mine)}] {point.name}: {'resuming' if resuming else 'starting'}"
          f"{where}\n$ {shell_command(command)}\n"
        )
        console.flush()
        point_dir.mkdir(parents=True, exist_ok=True)
        entry = _start(number, point, command, free.pop(0), point_dir / "train.log", parallel == 1)
        running.append(entry)
        if parallel == 1:
          _tee(entry, console)
      entry, code = _wait_any(running)
      running.remove(entry)
      entry.log.close()
      free.append(entry.slot)
      point_dir = root / entry.point.name
      if parallel > 1:
        console.write(f"[{entry.number}/{len(mine)}] {entry.point.name}: ended (exit {code})\n")
      if code == 0:
        text = _config_text(configs[entry.point.name])
        (point_dir / MARKER).write_text(
          json.dumps({"command": shell_command(entry.command), "config": text}, indent=2) + "\n"
        )
      elif code == SIGTERM_EXIT:
        console.write(
          f"Sweep stopped by SIGTERM during {entry.point.name}; the same command resumes it.\n"
        )
        exit_code = SIGTERM_EXIT
        stopping.append(signal.SIGTERM)
      else:
        console.write(
          f"{entry.point.name} failed (exit {code}); its output is in "
          f"{point_dir / 'train.log'}. Going on with the other points.\n"
        )
        failed.append((entry.point, code))
      console.flush()
  finally:
    signal.signal(signal.SIGTERM, previous)

  finished = {p.name for p in sweep.points if is_finished(root / p.name, configs[p.name])}
  if exit_code != SIGTERM_EXIT:
    evaluations.evaluate_points(
      root, [p for p in mine if p.name in finished], sweep.eval_crops, console
    )
    groups = by_configuration(sweep.points, lambda point: point)
    complete = {g: ps for g, ps in groups.items() if all(p.name in finished for p in ps)}
    evaluations.evaluate_ensembles(root, complete, sweep.eval_crops, console)

  results = [
    report.read_point(point, root / point.name, point.name in finished, costs[point.name])
    for point in sweep.points
  ]
  invocation = shell_command(
    [
      "inception-jax",
      "sweep",
      spec,
      "--workdir",
      str(root),
      *(["--parallel", str(parallel)] if parallel > 1 else []),  # XLA's thread count moves digits
      *(f"--config.{k}={v}" for k, v in sweep.common.items()),
    ]
  )
  paths = report.write_report(sweep, root, results, metrics, invocation)
  console.write(f"Report: {', '.join(str(p) for p in paths)}\n")
  if failed:
    console.write(
      f"{len(failed)} point(s) failed: "
      f"{', '.join(f'{p.name} (exit {code})' for p, code in failed)}\n"
    )
    return 1
  return exit_code
