"""`inception-jax sweep`: runs a sweep's points (or this task's share of them), then reports.

Each point runs as its own `inception-jax train` process in `<workdir>/<point name>`, with its
output also appended to `train.log` there, so a point behaves exactly as the command printed by
--dry-run would. A point that finished is skipped (unless its config has changed since); one that
was interrupted resumes from its latest checkpoint, because that is what `train` does in a workdir
that holds one. Every point's config is built and checked before the first one starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import TextIO

import ml_collections

from inception_jax.sweeps import report
from inception_jax.sweeps.grid import Point, array_slice, load_sweep, share, shell_command
from inception_jax.training.trainer import check_config

MARKER = "sweep.json"  # written into a point's workdir when its train command exited 0
SIGTERM_EXIT = 128 + signal.SIGTERM


def _config_text(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(sort_keys=True)


def is_finished(point_dir: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  """Whether the point ran to its end with this very config."""
  marker = point_dir / MARKER
  return marker.exists() and json.loads(marker.read_text()).get("config") == _config_text(config)


def _train(command: list[str], log_path: pathlib.Path, console: TextIO) -> int:
  """Runs one point's train command, its output to the console and the log; forwards SIGTERM."""
  process = subprocess.Popen(
    [sys.executable, "-m", "inception_jax.main", *command[1:]],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env={**os.environ, "PYTHONUNBUFFERED": "1"},
  )
  previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
  try:
    with log_path.open("a") as log:
      for line in process.stdout:
        console.write(line)
        console.flush()
        log.write(line)
    return process.wait()
  finally:
    signal.signal(signal.SIGTERM, previous)


def run_sweep(
  spec: str,
  workdir: str,
  common: Mapping[str, str] | None = None,
  index: int | None = None,
  count: int | None = None,
  dry_run: bool = False,
  console: TextIO | None = None,
) -> int:
  """Runs this share of the sweep's unfinished points and writes the report; the exit status."""
  console = console or sys.stdout
  sweep = load_sweep(spec, common)
  metrics = report.check_metrics(sweep.metrics, spec.partition(":")[0])
  configs = {point.name: sweep.config(point) for point in sweep.points}
  for config in configs.values():
    check_config(config)
  costs = {name: report.point_cost(config) for name, config in configs.items()}  # checks models
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
  for number, point in enumerate(mine, 1):
    point_dir = root / point.name
    config = configs[point.name]
    if is_finished(point_dir, config):
      console.write(f"[{number}/{len(mine)}] {point.name}: finished earlier, skipped\n")
      continue
    command = sweep.train_command(point, str(point_dir))
    resuming = any((point_dir / "checkpoints").glob("[0-9]*"))
    console.write(
      f"[{number}/{len(mine)}] {point.name}: "
      f"{'resuming' if resuming else 'starting'}\n$ {shell_command(command)}\n"
    )
    console.flush()
    point_dir.mkdir(parents=True, exist_ok=True)
    code = _train(command, point_dir / "train.log", console)
    if code == 0:
      (point_dir / MARKER).write_text(
        json.dumps({"command": shell_command(command), "config": _config_text(config)}, indent=2)
        + "\n"
      )
    elif code == SIGTERM_EXIT:
      console.write(f"Sweep stopped by SIGTERM during {point.name}; the same command resumes it.\n")
      exit_code = SIGTERM_EXIT
      break
    else:
      console.write(
        f"{point.name} failed (exit {code}); its output is in "
        f"{point_dir / 'train.log'}. Going on with the other points.\n"
      )
      failed.append((point, code))

  results = [
    report.PointResult(
      point,
      *report.status(root / point.name, is_finished(root / point.name, configs[point.name])),
      costs[point.name],
    )
    for point in sweep.points
  ]
  invocation = shell_command(
    [
      "inception-jax",
      "sweep",
      spec,
      "--workdir",
      str(root),
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
