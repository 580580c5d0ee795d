"""A sweep's report: results.csv, results.md (one row per point) and curves.png.

Everything is read back from the points' workdirs (metrics.jsonl, written by the trainer), so a
report is the same whichever machine or array task ran which point, and can be rebuilt any time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import pathlib
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from inception_jax.errors import ConfigError, did_you_mean
from inception_jax.summarize import cost_rows
from inception_jax.sweeps.grid import Point, Sweep, command_value
from inception_jax.training import devices
from inception_jax.training.reporting import format_duration, read_metrics


@dataclasses.dataclass(frozen=True)
class PointResult:
  """What one point has produced so far."""

  point: Point
  status: str  # "done", "stopped at step N" or "not run"
  records: list[dict[str, Any]]
  cost: dict[str, Any]  # the `total` row of the point's cost table

  def split(self, name: str) -> list[dict[str, Any]]:
    return [r for r in self.records if r["split"] == name]


@dataclasses.dataclass(frozen=True)
class Metric:
  header: str
  value: Callable[[PointResult], float | None]
  text: Callable[[float], str]


def _si(value: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:.2f}{unit}"
  return f"{value:.0f}"


def _percent(value: float) -> str:
  return f"{100 * value:.2f}%"


def _mebibytes(value: float) -> str:
  return f"{value / 2**20:,.1f} MiB"


def _last(records: list[dict[str, Any]], key: str) -> float | None:
  return records[-1][key] if records else None


def _max(records: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in records if key in r]
  return max(values) if values else None


def _images_per_second(result: PointResult) -> float | None:
  values = [r["images_per_second"] for r in result.split("train")]
  return statistics.median(values) if values else None


METRICS: dict[str, Metric] = {
  "params": Metric("params", lambda r: r.cost["params"], _si),
  "params_with_aux": Metric(
    "params with aux heads", lambda r: r.cost.get("params_with_aux", r.cost["params"]), _si
  ),
  "macs": Metric("MACs/image", lambda r: r.cost["macs"], _si),
  "final_top1": Metric("final top-1", lambda r: _last(r.split("eval"), "top1"), _percent),
  "final_top5": Metric("final top-5", lambda r: _last(r.split("eval"), "top5"), _percent),
  "best_top1": Metric("best top-1", lambda r: _max(r.split("eval"), "top1"), _percent),
  "final_loss": Metric(
    "final eval loss", lambda r: _last(r.split("eval"), "loss"), lambda v: f"{v:.4f}"
  ),
  "images_per_second": Metric("train img/s (median)", _images_per_second, lambda v: f"{v:,.0f}"),
  "wall_time": Metric("wall time", lambda r: _last(r.records, "seconds"), format_duration),
  "step_memory": Metric(
    "train step memory", lambda r: _max(r.split("train"), "step_memory_bytes"), _mebibytes
  ),
  "peak_memory": Metric(
    "peak memory", lambda r: _max(r.split("train"), "peak_memory_bytes"), _mebibytes
  ),
}
DEFAULT_METRICS = (
  "params",
  "macs",
  "final_top1",
  "final_top5",
  "best_top1",
  "images_per_second",
  "wall_time",
  "step_memory",
  "peak_memory",
)


def check_metrics(names: Sequence[str] | None, where: str) -> tuple[str, ...]:
  """The sweep file's METRICS (or the default ones), each checked to be a known column."""
  names = tuple(DEFAULT_METRICS if names is None else names)
  for name in names:
    if name not in METRICS:
      raise ConfigError(
        f"{where}: unknown metric {name!r} in METRICS{did_you_mean(name, METRICS)}; "
        f"known: {', '.join(METRICS)}."
      )
  return names


def point_cost(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Parameters and multiply-adds per image of the point's network (the cost table's total)."""
  return cost_rows(config)[-1]


def _columns(points: Sequence[Point]) -> list[str]:
  return list(dict.fromkeys(key for point in points for key in point.overrides))


def _rows(results: Sequence[PointResult], metrics: Sequence[str]) -> tuple[list[str], list[list]]:
  keys = _columns([r.point for r in results])
  header = ["point", *keys, "status", *metrics]
  rows = []
  for result in results:
    values = [
      METRICS[name].value(result) if result.records or name.startswith(("params", "macs")) else None
      for name in metrics
    ]
    rows.append(
      [
        result.point.name,
        *(result.point.overrides.get(key, "") for key in keys),
        result.status,
        *values,
      ]
    )
  return header, rows


def _csv(results: Sequence[PointResult], metrics: Sequence[str]) -> str:
  header, rows = _rows(results, metrics)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    writer.writerow(
      ["" if v is None else command_value(v) if isinstance(v, (bool, tuple)) else v for v in row]
    )
  return out.getvalue()


def _markdown(
  sweep: Sweep, results: Sequence[PointResult], metrics: Sequence[str], command: str
) -> str:
  _, rows = _rows(results, metrics)
  keys = _columns([r.point for r in results])
  titles = [
    "point",
    *(f"`{key}`" for key in keys),
    "status",
    *(METRICS[name].header for name in metrics),
  ]
  lines = [
    f"# {sweep.title}",
    "",
    "Produced by:",
    "",
    "```bash",
    command,
    "```",
    "",
    f"{sum(r.status == 'done' for r in results)} of {len(results)} points done, on "
    f"{devices.describe_line()}. Top-1/top-5 on the eval split; MACs are multiply-adds "
    f"per image of the inference network, params leave out the training-only aux heads; "
    f"wall time includes "
    f"compilation and evaluation. Train step memory is XLA's count for the compiled step "
    f"(parameters, optimizer state, batch, activations and temporaries); peak memory is "
    f"the device's, or on CPU the training process's peak resident memory (TensorFlow, "
    f"the compiler and all).",
    "",
    "| " + " | ".join(titles) + " |",
    "|" + "|".join("---" if i < len(keys) + 2 else "---:" for i in range(len(titles))) + "|",
  ]
  for row in rows:
    point, overrides, status, values = (
      row[0],
      row[1 : len(keys) + 1],
      row[len(keys) + 1],
      row[len(keys) + 2 :],
    )
    cells = [point, *(command_value(v) if v != "" else "" for v in overrides), status]
    cells += [
      "" if v is None else METRICS[name].text(v) for name, v in zip(metrics, values, strict=True)
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "![eval top-1 against step and wall time](curves.png)", ""]
  return "\n".join(lines)


def _plot(results: Sequence[PointResult], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  plotted = [r for r in results if r.split("eval")]
  rows = max(1, (len(plotted) + 1) // 2)  # legend lines under the plots, two per row
  figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.3 * rows), sharey=True)
  for result in plotted:
    evals = result.split("eval")
    top1 = [100 * r["top1"] for r in evals]
    by_step.plot([r["step"] for r in evals], top1, marker="o", label=result.point.name)
    by_time.plot([r["seconds"] / 60 for r in evals], top1, marker="o")
  by_step.set(xlabel="step", ylabel="eval top-1 (%)", title="eval top-1 against step")
  by_time.set(xlabel="wall time (minutes)", title="eval top-1 against wall time")
  for axes in (by_step, by_time):
    axes.grid(alpha=0.3)
  if plotted:
    figure.legend(loc="lower center", ncol=2, fontsize="small", frameon=False)
  figure.tight_layout(rect=(0, 0.3 * rows / (4.5 + 0.3 * rows) + 0.02, 1, 1))
  figure.savefig(path, dpi=120)
  plt.close(figure)


def _replace(path: pathlib.Path, text: str) -> None:
  """Writes atomically: array tasks finishing together never leave a half-written report."""
  partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
  partial.write_text(text)
  os.replace(partial, path)


def write_report(
  sweep: Sweep,
  workdir: pathlib.Path,
  results: Sequence[PointResult],
  metrics: Sequence[str],
  command: str,
) -> list[pathlib.Path]:
  """results.csv, results.md and curves.png in `workdir`; returns their paths."""
  csv_path, md_path, png_path = (
    workdir / "results.csv",
    workdir / "results.md",
    workdir / "curves.png",
  )
  _replace(csv_path, _csv(results, metrics))
  _replace(md_path, _markdown(sweep, results, metrics, command))
  partial = workdir / f".curves.{os.getpid()}.partial.png"
  _plot(results, partial)
  os.replace(partial, png_path)
  return [csv_path, md_path, png_path]


def status(point_dir: pathlib.Path, finished: bool) -> tuple[str, list[dict[str, Any]]]:
  """A point's status ("done", "stopped at step N", "not run") and its metrics records."""
  records = read_metrics(point_dir)
  if finished:
    return "done", records
  return (f"stopped at step {records[-1]['step']}" if records else "not run"), records
