"""The cost analysis: Table 1 reproduced, XLA agreeing, the seeds' 1x1-reduction example."""

import json

import pytest

from inception_jax.cost import layer_costs, xla_flops
from inception_jax.main import main
from inception_jax.models import Branch, Conv, build_model
from inception_jax.models.layers import ConvUnit
from inception_jax.summarize import (
  PAPER_TABLE1,
  PAPER_TOLERANCE,
  compare_rows,
  cost_rows,
  paper_figure,
)

TABLE1_MATCHING = [
  "conv2",
  "inception_3a",
  "inception_3b",
  "inception_4a",
  "inception_4b",
  "inception_4c",
  "inception_4d",
  "inception_4e",
  "inception_5b",
  "classifier",
]


@pytest.fixture(scope="module")
def paper_rows(load):
  return {row["name"]: row for row in cost_rows(load("imagenet.py"))}


def test_every_output_shape_matches_table1(paper_rows):
  """A row carries the paper's figures only where its output shape equals Table 1's."""
  assert all("paper_macs" in paper_rows[name] for name in PAPER_TABLE1)


def test_table1_ops_match_the_paper(paper_rows):
  for name in TABLE1_MATCHING:
    row = paper_rows[name]
    paper, rounding = paper_figure(row["paper_macs"])
    assert not row["flag"], row
    assert abs(row["macs"] - paper) <= max(PAPER_TOLERANCE * paper, rounding), row
  # 1,024,000 multiply-adds print as the paper's "1M"; all others are within 1.5%.
  assert all(abs(paper_rows[n]["macs_vs_paper"]) <= PAPER_TOLERANCE for n in TABLE1_MATCHING[:-1])


def test_the_two_inconsistent_rows_are_flagged_with_a_note(paper_rows):
  flagged = [name for name, row in paper_rows.items() if row.get("flag")]
  assert flagged == ["conv1", "inception_5a"]
  assert paper_rows["conv1"]["macs"] == 7 * 7 * 3 * 64 * 112 * 112
  assert "118M" in paper_rows["conv1"]["note"] and "51M" in paper_rows["inception_5a"]["note"]


def test_totals(paper_rows):
  total = paper_rows["total"]
  assert total["params"] == 6_998_552  # true 5x5, no aux heads: about 7.0M
  assert 1.575e9 < total["macs"] < 1.59e9  # 1.58G multiply-adds by the widths
  assert total["params_with_aux"] == 13_378_280
  assert (total["paper_params"], total["paper_macs"]) == ("6.8M", "1.5G")
  assert [n for n, r in paper_rows.items() if r.get("training_only")] == ["aux_4a", "aux_4d"]


def test_analytical_count_agrees_with_xla_cost_analysis(load):
  """XLA counts 2 FLOPs per multiply-add that reads real input, plus <5% of elementwise work
  (biases, ReLU, LRN or BatchNorm, and max pooling: 8 maxima per output of a 3x3 window)."""
  for spec, size in [("imagenet.py", 224), ("default.py", 32)]:
    config = load(spec)
    model = build_model(config.model)
    rows = layer_costs(model, (size, size, 3))
    unpadded = sum(r.macs_unpadded for r in rows)
    ratio = xla_flops(model, (size, size, 3)) / (2 * unpadded)
    assert 1.0 <= ratio < 1.05, (spec, ratio)
    assert unpadded < sum(r.macs for r in rows)


def test_seeds_example_1x1_reduction():
  """28x28x192 -> 5x5 conv to 32: 120.4M multiplications; with a 1x1 to 16 first: 2.4M + 10.0M."""
  direct = layer_costs(Branch((Conv(5, 32),), ConvUnit), (28, 28, 192))
  reduced = layer_costs(Branch((Conv(1, 16), Conv(5, 32)), ConvUnit), (28, 28, 192))
  assert [r.macs for r in direct] == [28 * 28 * 32 * 5 * 5 * 192] == [120_422_400]
  assert [r.macs for r in reduced] == [2_408_448, 10_035_200]
  assert round(sum(r.macs for r in reduced) / 1e6, 1) == 12.4
  assert all(r.output_shape == (28, 28, 32) for r in (direct[0], reduced[1]))


def test_naive_and_reduced_side_by_side(load):
  rows = {row["name"]: row for row in compare_rows(load("imagenet.py"))}
  assert [rows[n]["reduced"]["output_channels"] for n in ("inception_3a", "inception_5b")] == [
    256,
    1024,
  ]
  # Naive: c1 + c3 + c5 + all input channels, so the width grows module after module.
  assert rows["inception_3a"]["naive"]["output_channels"] == 64 + 128 + 32 + 192
  assert rows["inception_3b"]["naive"]["output_channels"] == 128 + 192 + 96 + 416
  assert rows["total"]["naive"]["macs"] > 7 * rows["total"]["reduced"]["macs"]
  assert rows["total"]["reduced"]["params"] == 6_998_552


def test_naive_override_changes_the_table(load):
  rows = cost_rows(load("imagenet.py", {"model.module": "naive"}))
  by_name = {row["name"]: row for row in rows}
  assert by_name["inception_5b"]["output_shape"] == [7, 7, 4944]
  assert "paper_macs" not in by_name["inception_3a"]  # its output no longer matches Table 1's
  assert by_name["conv2"]["paper_macs"] == "360M"
  assert "paper_macs" not in by_name["total"]  # the paper's totals are for its network only


def test_summarize_json_from_the_command_line(capsys):
  assert (
    main(
      [
        "summarize",
        "--config",
        "configs/imagenet.py",
        "--json",
        "--config.model.kernel_sizes=(1,3,3)",
        "--config.model.aux_heads=false",
      ]
    )
    == 0
  )
  rows = json.loads(capsys.readouterr().out)
  assert all({"name", "output_shape", "params", "macs"} <= row.keys() for row in rows)
  assert rows[-1]["name"] == "total" and "params_with_aux" not in rows[-1]
  assert not any(row["name"].startswith("aux_") for row in rows)
  by_name = {row["name"]: row for row in rows}
  assert by_name["inception_3a"]["macs"] < 128e6  # 3x3 instead of 5x5 in the last branch


@pytest.mark.parametrize("flag", [[], ["--compare"]])
def test_summarize_text_from_the_command_line(capsys, flag):
  assert main(["summarize", "--config", "configs/imagenet.py", *flag]) == 0
  out = capsys.readouterr().out
  assert "inception_4e" in out and "total" in out
  assert ("naive/reduced" in out) == bool(flag)
