"""A sweep's report: results.csv (one row per point), summary.csv and results.md (each
configuration over its seeds, paired differences, every point) and curves.png.

Everything is read back from the points' workdirs (metrics.jsonl, written by the trainer), so a
report is the same whichever machine or array task ran which point, and can be rebuilt any time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from inception_jax.data.crops import CROPS
from inception_jax.errors import ConfigError, did_you_mean
from inception_jax.summarize import cost_rows
from inception_jax.sweeps import stats
from inception_jax.sweeps.evaluations import ENSEMBLE_DIR, POINT_FILE, read_json, write_atomically
from inception_jax.sweeps.grid import Point, Sweep, by_configuration, command_value
from inception_jax.training import devices
from inception_jax.training.reporting import format_duration, read_metrics


@dataclasses.dataclass(frozen=True)
class PointResult:
  """What one point has produced so far."""

  point: Point
  status: str  # "done", "stopped at step N" or "not run"
  records: list[dict[str, Any]]
  cost: dict[str, Any]  # the `total` row of the point's cost table
  evals: dict[str, Any]  # other test protocols' results by crop count ("144"), evaluations.py

  def split(self, name: str) -> list[dict[str, Any]]:
    return [r for r in self.records if r["split"] == name]


@dataclasses.dataclass(frozen=True)
class Metric:
  header: str
  value: Callable[[PointResult], float | None]
  text: Callable[[float], str]
  varies: bool = True  # with the seed: summarized over seeds (else one value per configuration)


def _si(value: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:.2f}{unit}"
  return f"{value:.0f}"


def _percent(value: float) -> str:
  return f"{100 * value:.2f}%"


def _mebibytes(value: float) -> str:
  return f"{value / 2**20:,.1f} MiB"


def _duration(seconds: float) -> str:
  """'4m21s', or '0.6s' under a minute, signed: a paired difference of wall times is often under
  a second, and may be negative."""
  sign = "-" if seconds < 0 else ""
  seconds = abs(seconds)
  return sign + (f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds))


def _last(records: list[dict[str, Any]], key: str) -> float | None:
  return records[-1][key] if records else None


def _max(records: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in records if key in r]
  return max(values) if values else None


def _images_per_second(result: PointResult) -> float | None:
  values = [r["images_per_second"] for r in result.split("train")]
  return statistics.median(values) if values else None


METRICS: dict[str, Metric] = {
  "params": Metric("params", lambda r: r.cost["params"], _si, varies=False),
  "params_with_aux": Metric(
    "params with aux heads",
    lambda r: r.cost.get("params_with_aux", r.cost["params"]),
    _si,
    varies=False,
  ),
  "macs": Metric("MACs/image", lambda r: r.cost["macs"], _si, varies=False),
  "final_top1": Metric("final top-1", lambda r: _last(r.split("eval"), "top1"), _percent),
  "final_top5": Metric("final top-5", lambda r: _last(r.split("eval"), "top5"), _percent),
  "best_top1": Metric("best top-1", lambda r: _max(r.split("eval"), "top1"), _percent),
  "final_loss": Metric(
    "final eval loss", lambda r: _last(r.split("eval"), "loss"), lambda v: f"{v:.4f}"
  ),
  "images_per_second": Metric("train img/s (median)", _images_per_second, lambda v: f"{v:,.0f}"),
  "wall_time": Metric("wall time", lambda r: _last(r.records, "seconds"), _duration),
  "step_memory": Metric(
    "train step memory",
    lambda r: _max(r.split("train"), "step_memory_bytes"),
    _mebibytes,
    varies=False,
  ),
  "peak_memory": Metric(
    "peak memory", lambda r: _max(r.split("train"), "peak_memory_bytes"), _mebibytes
  ),
}
for _count in CROPS[1:]:
  for _key, _name in (("top1", "top-1"), ("top5", "top-5")):
    METRICS[f"{_key}_{_count}crops"] = Metric(
      f"{_name}, {_count} crops",
      lambda r, count=_count, key=_key: r.evals.get(str(count), {}).get(key),
      _percent,
    )

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


def check_metrics(
  names: Sequence[str] | None, where: str, crops: Sequence[int] = (1,)
) -> tuple[str, ...]:
  """The sweep file's METRICS (or the default ones), each checked to be a known column, and the
  columns of the other test protocols it evaluates (EVAL_CROPS) where it does not list them."""
  names = tuple(DEFAULT_METRICS if names is None else names)
  for name in names:
    if name not in METRICS:
      raise ConfigError(
        f"{where}: unknown metric {name!r} in METRICS{did_you_mean(name, METRICS)}; "
        f"known: {', '.join(METRICS)}."
      )
  protocols = [f"{k}_{count}crops" for count in crops if count != 1 for k in ("top1", "top5")]
  return names + tuple(name for name in protocols if name not in names)


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


@dataclasses.dataclass(frozen=True)
class Configuration:
  """A configuration's points (one per seed) and what their finished runs say together."""

  name: str  # Point.group
  points: list[PointResult]
  done: int
  fixed: dict[str, float | None]  # metrics that do not vary with the seed
  summaries: dict[str, stats.Summary | None]  # the others, over the finished seeds
  ensemble: dict[str, Any]  # the seeds as one ensemble: eval's results by crop count ("1")


def configurations(
  results: Sequence[PointResult],
  metrics: Sequence[str],
  ensembles: Mapping[str, dict[str, Any]] | None = None,
) -> list[Configuration]:
  """The points grouped by configuration (grid order), each metric summarized over seeds, with
  the ensemble of the seeds where it was evaluated."""
  summary = []
  for name, members in by_configuration(results, lambda result: result.point).items():
    done = [r for r in members if r.status == "done"]
    first = done[0] if done else members[0]
    fixed = {m: METRICS[m].value(first) for m in metrics if not METRICS[m].varies}
    summaries = {}
    for m in (m for m in metrics if METRICS[m].varies):
      values = [v for v in (METRICS[m].value(r) for r in done) if v is not None]
      summaries[m] = stats.summarize(values) if values else None
    ensemble = (ensembles or {}).get(name, {})
    summary.append(Configuration(name, members, len(done), fixed, summaries, ensemble))
  return summary


def differences(
  results: Sequence[PointResult], pairs: Sequence[tuple[str, str]], metrics: Sequence[str]
) -> list[tuple[str, str, str, stats.Summary]]:
  """(a, b, metric, summary of a - b paired by seed) for each pair and seed-dependent metric."""
  done = {(r.point.group, r.point.seed): r for r in results if r.status == "done"}
  rows = []
  for a, b in pairs:
    for metric in (m for m in metrics if METRICS[m].varies):

      def values(group: str, metric: str = metric) -> dict[Any, float]:
        found = {seed: METRICS[metric].value(r) for (g, seed), r in done.items() if g == group}
        return {seed: value for seed, value in found.items() if value is not None}

      difference = stats.paired_difference(values(a), values(b))
      if difference is not None:
        rows.append((a, b, metric, difference))
  return rows


def _interval(text: Callable[[float], str], interval: tuple[float, float] | None) -> str:
  return "" if interval is None else f"[{text(interval[0])}, {text(interval[1])}]"


def _summary_text(metric: str, summary: stats.Summary | None) -> str:
  """'97.50% ± 0.40% [96.51%, 98.49%]': mean ± standard deviation [95% t-interval]."""
  if summary is None:
    return ""
  text = METRICS[metric].text
  if summary.n == 1:
    return text(summary.mean)
  cell = f"{text(summary.mean)} ± {text(summary.std)} {_interval(text, summary.t_interval)}"
  if summary.bootstrap_interval:
    cell += f" (bootstrap {_interval(text, summary.bootstrap_interval)})"
  return cell


def _signed(metric: str, value: float) -> str:
  return ("+" if value > 0 else "") + METRICS[metric].text(value)


def _summary_csv(
  groups: Sequence[Configuration], paired: Sequence[tuple[str, str, str, stats.Summary]]
) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(
    [
      "kind",
      "configuration",
      "metric",
      "n",
      "mean",
      "std",
      "t_low",
      "t_high",
      "bootstrap_low",
      "bootstrap_high",
      "p_value",
    ]
  )
  rows = [("configuration", g.name, m, s) for g in groups for m, s in g.summaries.items() if s]
  rows += [("difference", f"{a} - {b}", m, s) for a, b, m, s in paired]
  rows += [
    ("ensemble", g.name, f"{key}_{count}crops", stats.summarize([result[key]]))
    for g in groups
    for count, result in g.ensemble.items()
    if count != "members"
    for key in ("top1", "top5", "loss")
  ]
  for kind, name, metric, summary in rows:
    t_low, t_high = summary.t_interval or ("", "")
    boot_low, boot_high = summary.bootstrap_interval or ("", "")
    std, p_value = ("" if v is None else v for v in (summary.std, summary.p_value))
    writer.writerow(
      [
        kind,
        name,
        metric,
        summary.n,
        summary.mean,
        std,
        t_low,
        t_high,
        boot_low,
        boot_high,
        p_value,
      ]
    )
  return out.getvalue()


def _markdown(
  sweep: Sweep,
  results: Sequence[PointResult],
  metrics: Sequence[str],
  command: str,
  groups: Sequence[Configuration],
  paired: Sequence[tuple[str, str, str, stats.Summary]],
  crops: Sequence[int],
) -> str:
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
  ]
  if any(len(g.points) > 1 for g in groups):
    fixed = [m for m in metrics if not METRICS[m].varies]
    varying = [m for m in metrics if METRICS[m].varies]
    titles = ["configuration", "seeds done", *(METRICS[m].header for m in fixed + varying)]
    titles += [f"seed ensemble top-1, {count} crop{'s' * (count > 1)}" for count in crops]
    lines += [
      "## Configurations over seeds",
      "",
      f"Each cell: the mean over the seeds that finished ± their standard deviation, and the "
      f"{100 * stats.CONFIDENCE:.0f}% t-interval of the mean in brackets (a bootstrap BCa "
      f"interval too from {stats.BOOTSTRAP_MIN_SEEDS} seeds on). The seed ensemble averages "
      f"the softmax of all the configuration's seeds (`inception-jax eval` with each seed's "
      f"--workdir).",
      "",
      "| " + " | ".join(titles) + " |",
      "|---|" + "---:|" * (len(titles) - 1),
    ]
    for group in groups:
      cells = [group.name, f"{group.done} of {len(group.points)}"]
      cells += ["" if group.fixed[m] is None else METRICS[m].text(group.fixed[m]) for m in fixed]
      cells += [_summary_text(m, group.summaries[m]) for m in varying]
      cells += [
        _percent(group.ensemble[str(count)]["top1"]) if str(count) in group.ensemble else ""
        for count in crops
      ]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  if paired:
    lines += [
      "## Paired differences",
      "",
      f"A - B over the seeds both finished, paired by seed (same initialisation seed and data "
      f"order), with the {100 * stats.CONFIDENCE:.0f}% t-interval of the mean difference and the "
      f"two-sided t-test's p; the interval supports a difference where it excludes 0.",
      "",
      "| A | B | metric | pairs | A - B | interval | p | supported |",
      "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for a, b, metric, summary in paired:
      text = METRICS[metric].text
      p_value = "" if summary.p_value is None else f"{summary.p_value:.3g}"
      supported = "yes" if summary.excludes_zero() else "no" if summary.n > 1 else ""
      lines.append(
        f"| {a} | {b} | {METRICS[metric].header} | {summary.n} | "
        f"{_signed(metric, summary.mean)} | {_interval(text, summary.t_interval)} | "
        f"{p_value} | {supported} |"
      )
    lines.append("")
  _, rows = _rows(results, metrics)
  keys = _columns([r.point for r in results])
  titles = [
    "point",
    *(f"`{key}`" for key in keys),
    "status",
    *(METRICS[name].header for name in metrics),
  ]
  lines += [
    "## Points",
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
  band = " (band: the 95% t-interval over seeds)" if any(g.done > 1 for g in groups) else ""
  lines += ["", f"![eval top-1 against step and wall time{band}](curves.png)", ""]
  return "\n".join(lines)


def _curve(members: Sequence[PointResult]) -> tuple[list[float], ...] | None:
  """(steps, mean minutes, mean top-1 %, band low, band high) over the members' common eval
  steps."""
  evals = [{r["step"]: r for r in m.split("eval")} for m in members if m.split("eval")]
  if not evals:
    return None
  steps = sorted(set.intersection(*(set(e) for e in evals)))
  seconds = [statistics.fmean(e[step]["seconds"] for e in evals) / 60 for step in steps]
  summaries = [stats.summarize([100 * e[step]["top1"] for e in evals]) for step in steps]
  means = [s.mean for s in summaries]
  low = [s.t_interval[0] if s.t_interval else s.mean for s in summaries]
  high = [s.t_interval[1] if s.t_interval else s.mean for s in summaries]
  return steps, seconds, means, low, high


def _plot(groups: Sequence[Configuration]) -> bytes:
  """curves.png's bytes."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  curves = [(g, _curve([r for r in g.points if r.status == "done"] or g.points)) for g in groups]
  curves = [(g, curve) for g, curve in curves if curve]
  rows = max(1, (len(curves) + 1) // 2)  # legend lines under the plots, two per row
  figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.3 * rows), sharey=True)
  for group, (steps, minutes, top1, low, high) in curves:
    label = group.name if len(group.points) == 1 else f"{group.name} (mean of {group.done})"
    (line,) = by_step.plot(steps, top1, marker="o", label=label)
    by_time.plot(minutes, top1, marker="o", color=line.get_color())
    if low != high:
      by_step.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
      by_time.fill_between(minutes, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
  by_step.set(xlabel="step", ylabel="eval top-1 (%)", title="eval top-1 against step")
  by_time.set(xlabel="wall time (minutes)", title="eval top-1 against wall time")
  for axes in (by_step, by_time):
    axes.grid(alpha=0.3)
  if curves:
    figure.legend(loc="lower center", ncol=2, fontsize="small", frameon=False)
  figure.tight_layout(rect=(0, 0.3 * rows / (4.5 + 0.3 * rows) + 0.02, 1, 1))
  png = io.BytesIO()
  figure.savefig(png, format="png", dpi=120)
  plt.close(figure)
  return png.getvalue()


def write_report(
  sweep: Sweep,
  workdir: pathlib.Path,
  results: Sequence[PointResult],
  metrics: Sequence[str],
  command: str,
) -> list[pathlib.Path]:
  """results.csv, summary.csv, results.md and curves.png in `workdir`; returns their paths."""
  names = dict.fromkeys(r.point.group for r in results)
  ensembles = {name: read_json(workdir / ENSEMBLE_DIR / f"{name}.json") for name in names}
  groups = configurations(results, metrics, ensembles)
  paired = differences(results, sweep.compare, metrics)
  paths = [workdir / name for name in ("results.csv", "summary.csv", "results.md", "curves.png")]
  write_atomically(paths[0], _csv(results, metrics))
  write_atomically(paths[1], _summary_csv(groups, paired))
  write_atomically(
    paths[2], _markdown(sweep, results, metrics, command, groups, paired, sweep.eval_crops)
  )
  write_atomically(paths[3], _plot(groups))
  return paths


def read_point(
  point: Point, point_dir: pathlib.Path, finished: bool, cost: dict[str, Any]
) -> PointResult:
  """What a point's workdir holds: its status ("done", "stopped at step N", "not run"), its
  metrics records and its other protocols' evaluations."""
  records = read_metrics(point_dir)
  if finished:
    status = "done"
  else:
    status = f"stopped at step {records[-1]['step']}" if records else "not run"
  return PointResult(point, status, records, cost, read_json(point_dir / POINT_FILE))
