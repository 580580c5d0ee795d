"""`inception-jax summarize`: the paper's Table 1 for any config, and naive against reduced side by
side."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from inception_jax.cost import layer_costs, xla_flops
from inception_jax.models import MODULE_KINDS, build_model

# Table 1 of the paper, as printed: output shape, params, ops (multiply-adds).
PAPER_TABLE1 = {
  "conv1": ((112, 112, 64), "2.7K", "34M"),
  "conv2": ((56, 56, 192), "112K", "360M"),
  "inception_3a": ((28, 28, 256), "159K", "128M"),
  "inception_3b": ((28, 28, 480), "380K", "304M"),
  "inception_4a": ((14, 14, 512), "364K", "73M"),
  "inception_4b": ((14, 14, 512), "437K", "88M"),
  "inception_4c": ((14, 14, 512), "463K", "100M"),
  "inception_4d": ((14, 14, 528), "580K", "119M"),
  "inception_4e": ((14, 14, 832), "840K", "170M"),
  "inception_5a": ((7, 7, 832), "1072K", "54M"),
  "inception_5b": ((7, 7, 1024), "1388K", "71M"),
  "classifier": ((1000,), "1000K", "1M"),
}
PAPER_TOTAL = ("6.8M", "1.5G")
# A row is flagged when its multiply-adds differ from the paper's ops by more than this share
# and by more than the rounding of the printed figure ("1M" stands for anything in 0.5M..1.5M).
PAPER_TOLERANCE = 0.015
# Where the paper's own figure disagrees with its widths (see the reference sheet).
PAPER_ERRATA = {
  "conv1": "Table 1 gives 2.7K params and 34M ops; 7x7x3x64 weights over 112x112 outputs are "
  "9.4K params and 118M multiply-adds",
  "inception_5a": "Table 1 gives 54M ops; its widths give 51M multiply-adds at 7x7",
}
_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9}


def paper_figure(text: str) -> tuple[float, float]:
  """'2.7K' -> (2700, 50): the printed value and half the unit of its last printed digit."""
  number, unit = text[:-1], _UNITS[text[-1]]
  decimals = len(number.partition(".")[2])
  return float(number) * unit, 0.5 * unit / 10**decimals


def off_paper(value: float, paper_text: str) -> bool:
  """Whether `value` disagrees with the paper's printed figure beyond tolerance and rounding."""
  paper, rounding = paper_figure(paper_text)
  return abs(value - paper) > max(PAPER_TOLERANCE * paper, rounding)


def _si(value: float, unit: str = "") -> str:
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
    if abs(value) >= scale:
      return f"{value / scale:.2f}{suffix}{unit}"
  return f"{value:.0f}{unit}"


def _shape(shape: tuple[int, ...]) -> str:
  return "x".join(map(str, shape))


def _model_and_input(config: ml_collections.ConfigDict):
  """The configured model and the shape of one input image (no batch dimension)."""
  return build_model(config.model), (config.image_size, config.image_size, 3)


def cost_rows(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Per-layer rows (with the paper's figures where the layer's output matches Table 1's),
  then a `total` row for the inference network (aux heads, which run only in training, apart)."""
  model, image_shape = _model_and_input(config)
  rows = []
  for layer in layer_costs(model, image_shape, train=bool(model.aux_from)):
    row = dataclasses.asdict(layer)
    row["output_shape"] = list(layer.output_shape)
    row["training_only"] = layer.name.startswith("aux_")
    paper_shape, paper_params, paper_macs = PAPER_TABLE1.get(layer.name, (None, "", ""))
    if paper_shape == layer.output_shape:
      row.update(
        paper_params=paper_params,
        paper_macs=paper_macs,
        macs_vs_paper=round(layer.macs / paper_figure(paper_macs)[0] - 1, 4),
        flag=off_paper(layer.macs, paper_macs),
      )
      if row["flag"] and layer.name in PAPER_ERRATA:
        row["note"] = PAPER_ERRATA[layer.name]
    rows.append(row)

  inference = [r for r in rows if not r["training_only"]]
  total = dict(
    name="total",
    output_shape=rows[-1]["output_shape"],
    params=sum(r["params"] for r in inference),
    macs=sum(r["macs"] for r in inference),
    macs_unpadded=sum(r["macs_unpadded"] for r in inference),
  )
  if sum("paper_macs" in r for r in rows) == len(PAPER_TABLE1):  # Table 1's shapes throughout
    total.update(paper_params=PAPER_TOTAL[0], paper_macs=PAPER_TOTAL[1])
  if len(inference) < len(rows):
    total.update(
      params_with_aux=sum(r["params"] for r in rows), macs_with_aux=sum(r["macs"] for r in rows)
    )
  return rows + [total]


def _title(config: ml_collections.ConfigDict, modules: str) -> str:
  m = config.model
  return (
    f"GoogLeNet: {modules} modules, norm={m.norm}, kernels={tuple(m.kernel_sizes)}, "
    f"width x{m.width_multiplier}, stem={m.stem}, input {config.image_size}x"
    f"{config.image_size}x3, {m.num_classes} classes, aux heads "
    f"{'on' if m.aux_heads else 'off'}"
  )


def format_table(config: ml_collections.ConfigDict, rows: list[dict[str, Any]]) -> str:
  """The rows as a Table-1-style text table, with the paper's figures where they apply."""
  header = (
    f"{'layer':<15}{'patch':>7}{'output':>14}{'params':>10}{'MACs':>10}"
    f"{'paper params':>14}{'paper ops':>11}{'vs paper':>10}"
  )
  lines = [_title(config, config.model.module), "", header, "-" * len(header)]
  notes, unexplained = [], False
  for row in rows[:-1]:
    name = row["name"] + (" (train)" if row["training_only"] else "")
    line = (
      f"{name:<15}{row['patch']:>7}{_shape(row['output_shape']):>14}"
      f"{_si(row['params']) if row['params'] else '':>10}"
      f"{_si(row['macs']) if row['macs'] else '':>10}"
    )
    if "macs_vs_paper" in row:
      line += (
        f"{row['paper_params']:>14}{row['paper_macs']:>11}"
        f"{row['macs_vs_paper']:>+10.1%}{' *' if row['flag'] else ''}"
      )
    if "note" in row:
      notes.append(f"* {row['name']}: {row['note']}.")
    elif row.get("flag"):
      unexplained = True
    lines.append(line.rstrip())
  total = rows[-1]
  lines.append("-" * len(header))
  lines.append(
    f"{'total':<36}{_si(total['params']):>10}{_si(total['macs']):>10}"
    f"{total.get('paper_params', ''):>14}{total.get('paper_macs', ''):>11}".rstrip()
  )
  if "params_with_aux" in total:
    lines.append(
      f"{'with aux heads (training)':<36}{_si(total['params_with_aux']):>10}"
      f"{_si(total['macs_with_aux']):>10}"
    )
  lines += [
    "",
    "MACs: multiply-adds of the convolutions and linear layers (the paper's 'ops'). "
    f"* marks a row more than {PAPER_TOLERANCE:.1%} (and more than the printed rounding) "
    "from the paper's ops.",
  ] + notes
  if unexplained:
    lines.append(
      "* rows without a note differ from Table 1 because this config is not the "
      "paper's network (kernels, widths or module kind)."
    )
  return "\n".join(lines)


def compare_rows(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """For each Inception module (and the total): output channels, params and MACs per module kind."""
  by_kind = {}
  for kind in MODULE_KINDS:
    variant = config.copy_and_resolve_references()
    variant.model.module = kind
    by_kind[kind] = {row["name"]: row for row in cost_rows(variant)}
  reference = by_kind[config.model.module]
  names = [n for n, row in reference.items() if row.get("kind") == "InceptionModule"] + ["total"]
  return [
    dict(
      name=name,
      **{
        kind: dict(
          output_channels=rows[name]["output_shape"][-1],
          params=rows[name]["params"],
          macs=rows[name]["macs"],
        )
        for kind, rows in by_kind.items()
      },
    )
    for name in names
  ]


def format_comparison(config: ml_collections.ConfigDict, rows: list[dict[str, Any]]) -> str:
  """The comparison rows as a text table, with each kind's MACs relative to the first kind's."""
  kinds = list(MODULE_KINDS)
  header = f"{'':<15}" + "".join(
    f"{kind + ': channels':>20}{'params':>10}{'MACs':>10}" for kind in kinds
  )
  header += "".join(f"{f'{k}/{kinds[0]} MACs':>22}" for k in kinds[1:])
  lines = [_title(config, " and ".join(kinds)), "", header, "-" * len(header)]
  for row in rows:
    channels = {k: row[k]["output_channels"] if row["name"] != "total" else "" for k in kinds}
    line = f"{row['name']:<15}" + "".join(
      f"{channels[k]:>20}{_si(row[k]['params']):>10}{_si(row[k]['macs']):>10}" for k in kinds
    )
    line += "".join(f"{row[k]['macs'] / row[kinds[0]]['macs']:>21.1f}x" for k in kinds[1:])
    lines.append(line)
  lines += [
    "",
    "naive: every conv straight on the module's input and the pool passing all input "
    "channels through (paper Fig. 2a);",
    "reduced: 1x1 reductions and a pool projection "
    "(Fig. 2b). Output channels of naive modules grow with depth.",
  ]
  return "\n".join(lines)


def xla_line(flops: float, rows: list[dict[str, Any]]) -> str:
  """XLA's FLOPs of the compiled forward pass against the analytical count."""
  unpadded = rows[-1]["macs_unpadded"]
  return (
    f"XLA cost analysis of the compiled inference pass: {_si(flops, 'FLOP')} = 2 x "
    f"{_si(unpadded)} multiply-adds that read real (not padding) input, "
    f"{flops / (2 * unpadded) - 1:+.1%} for biases, activations, pooling and normalisation."
  )


def summarize(
  config: ml_collections.ConfigDict, as_json: bool = False, compare: bool = False, xla: bool = False
) -> str:
  """The text (or JSON) that `inception-jax summarize` prints."""
  if compare:
    rows = compare_rows(config)
    return json.dumps(rows, indent=1) if as_json else format_comparison(config, rows)
  rows = cost_rows(config)
  if xla:
    rows[-1]["xla_flops"] = xla_flops(*_model_and_input(config))
  if as_json:
    return json.dumps(rows, indent=1)
  text = format_table(config, rows)
  return text + ("\n" + xla_line(rows[-1]["xla_flops"], rows) if xla else "")
