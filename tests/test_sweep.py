"""Sweeps: grids, point names, shares of an array job, checks before training, a real tiny sweep."""

import csv
import io
import json
import pathlib
import shlex

import pytest

from inception_jax.config import load_config, parse_override_args
from inception_jax.errors import ConfigError
from inception_jax.main import main
from inception_jax.sweeps.grid import Hyper, array_slice, load_sweep, share
from inception_jax.sweeps.run import run_sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_SWEEP = ROOT / "tests" / "tiny_sweep.py"
ABLATION = ROOT / "experiments" / "ablation_module.py"


def _sweep_file(tmp_path, grid: str, metrics: str = "") -> str:
  path = tmp_path / "sweep.py"
  path.write_text(
    f"from inception_jax.config import load_config\n"
    f"def get_config():\n  return load_config({str(ROOT / 'tests' / 'tiny_config.py')!r})\n"
    f"def get_hyper(hyper):\n  return {grid}\n{metrics}"
  )
  return str(path)


def test_product_and_zip_build_the_grid():
  grid = Hyper.product(
    [
      Hyper.sweep("config.model.module", ["reduced", "naive"]),
      Hyper.zip([Hyper.sweep("seed", [0, 1]), Hyper.sweep("learning_rate", [0.1, 0.2])]),
    ]
  )
  assert grid == [
    {"model.module": m, "seed": s, "learning_rate": lr}
    for m in ("reduced", "naive")
    for s, lr in ((0, 0.1), (1, 0.2))
  ]
  with pytest.raises(ConfigError, match="equal length"):
    Hyper.zip([Hyper.sweep("seed", [0, 1]), Hyper.sweep("learning_rate", [0.1])])
  with pytest.raises(ConfigError, match="twice"):
    Hyper.product([Hyper.sweep("seed", [0]), Hyper.fixed("seed", 1)])


def test_points_are_named_after_their_overrides_and_their_commands_rebuild_their_configs():
  sweep = load_sweep(str(ABLATION))
  assert [p.name for p in sweep.points] == [
    "module=reduced,learning_rate=0.2,aux_heads=true",
    "module=reduced,learning_rate=0.02,aux_heads=true",
    "module=naive,learning_rate=0.2,aux_heads=true",
    "module=naive,learning_rate=0.02,aux_heads=true",
    "module=reduced,learning_rate=0.2,aux_heads=false",
    "module=naive,learning_rate=0.02,aux_heads=false",
  ]
  kernels = load_sweep(str(ROOT / "experiments" / "kernel_sizes.py"), {"seed": "3"})
  assert [p.name for p in kernels.points] == [
    "kernel_sizes=1-3-5",
    "kernel_sizes=1-3-3",
    "kernel_sizes=1-3-7",
  ]
  for point in kernels.points:
    command = kernels.train_command(point, f"runs/k/{point.name}")
    spec = command[command.index("--config") + 1]
    overrides = parse_override_args([a for a in command if a.startswith("--config.")])
    assert load_config(spec, overrides) == kernels.config(point)
    assert kernels.config(point).seed == 3


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_index_and_count_share_the_grid_without_overlap_or_gaps(count):
  points = (
    load_sweep(str(ABLATION)).points
    + load_sweep(str(ROOT / "experiments" / "kernel_sizes.py")).points
  )
  points = [type(p)(i, p.name + str(i), p.overrides) for i, p in enumerate(points)]
  shares = [share(points, index, count) for index in range(count)]
  ran = [p.index for s in shares for p in s]
  assert sorted(ran) == list(range(len(points)))


def test_slurm_array_variables_set_the_default_share():
  env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
  assert array_slice(None, None, env) == (2, 4)
  assert array_slice(0, 2, env) == (0, 2)
  assert array_slice(None, None, {}) == (0, 1)
  with pytest.raises(ConfigError, match="index 4 --count 4"):
    array_slice(4, 4, {})


def test_dry_run_prints_the_shares_train_commands(capsys, tmp_path):
  workdir = tmp_path / "runs"
  assert main(["sweep", str(ABLATION), "--workdir", str(workdir), "--dry-run"]) == 0
  every = capsys.readouterr().out.splitlines()
  assert len(every) == 6 and all(line.startswith("inception-jax train --config ") for line in every)
  assert every[5].endswith(
    "--config.model.module=naive --config.learning_rate=0.02 --config.model.aux_heads=false"
  )
  shares = []
  for index in range(3):
    assert (
      main(
        [
          "sweep",
          str(ABLATION),
          "--workdir",
          str(workdir),
          "--dry-run",
          "--index",
          str(index),
          "--count",
          "3",
        ]
      )
      == 0
    )
    shares += capsys.readouterr().out.splitlines()
  assert sorted(shares) == sorted(every)
  assert shlex.split(every[0])[5] == str(
    workdir / "module=reduced,learning_rate=0.2,aux_heads=true"
  )
  assert not workdir.exists()


@pytest.mark.parametrize(
  "grid, metrics, message",
  [
    (
      "hyper.sweep('model.modul', ['naive'])",
      "",
      "sweep point 0 (modul=naive): unknown config key "
      "'model.modul' (did you mean 'model.module'?)",
    ),
    ("hyper.sweep('model.module', ['naive', 'navie'])", "", "model.module"),
    ("hyper.sweep('seed', [0])", "METRICS = ('final_top1', 'top_1')", "unknown metric 'top_1'"),
    ("[]", "", "non-empty list"),
  ],
)
def test_bad_sweep_files_fail_before_any_training(tmp_path, capsys, grid, metrics, message):
  workdir = tmp_path / "runs"
  assert main(["sweep", _sweep_file(tmp_path, grid, metrics), "--workdir", str(workdir)]) == 2
  assert message in capsys.readouterr().err
  assert not workdir.exists()


def test_a_sweep_runs_its_points_reports_them_and_skips_them_when_run_again(
  tmp_path, data_dir, monkeypatch
):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
  workdir = tmp_path / "sweep"
  common = {"data.dir": str(data_dir)}
  console = io.StringIO()
  assert run_sweep(str(TINY_SWEEP), str(workdir), common, console=console) == 0
  for name in ("seed=0", "seed=1"):
    assert (workdir / name / "checkpoints" / "12").is_dir()
    assert "step 12/12" in (workdir / name / "train.log").read_text()

  rows = list(csv.DictReader((workdir / "results.csv").open()))
  assert [(r["point"], r["seed"], r["status"]) for r in rows] == [
    ("seed=0", "0", "done"),
    ("seed=1", "1", "done"),
  ]
  for row in rows:
    metrics = json.loads((workdir / row["point"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert float(row["final_top1"]) == pytest.approx(metrics["top1"])
    assert 0 <= float(row["final_top1"]) <= float(row["best_top1"]) <= 1
    assert float(row["final_top1"]) <= float(row["final_top5"])
    assert int(row["params"]) > 0 and int(row["macs"]) > 0
    assert float(row["images_per_second"]) > 0 and float(row["wall_time"]) > 0
    assert int(row["peak_memory"]) > 2**20 and int(row["step_memory"]) > 2**20
  assert (
    rows[0]["final_top1"] != rows[1]["final_top1"] or rows[0]["best_top1"] != rows[1]["best_top1"]
  )
  markdown = (workdir / "results.md").read_text()
  assert f"inception-jax sweep {TINY_SWEEP} --workdir {workdir}" in markdown
  assert "| seed=0 | 0 | done |" in markdown
  assert (workdir / "curves.png").read_bytes().startswith(b"\x89PNG")

  logs = {name: (workdir / name / "train.log").read_text() for name in ("seed=0", "seed=1")}
  again = io.StringIO()
  assert run_sweep(str(TINY_SWEEP), str(workdir), common, console=again) == 0
  assert again.getvalue().count("finished earlier, skipped") == 2
  assert logs == {name: (workdir / name / "train.log").read_text() for name in logs}

  # A point without its finish marker (killed before train returned) resumes from its checkpoint.
  (workdir / "seed=1" / "sweep.json").unlink()
  resumed = io.StringIO()
  assert run_sweep(str(TINY_SWEEP), str(workdir), common, console=resumed) == 0
  assert "[2/2] seed=1: resuming" in resumed.getvalue()
  assert "Nothing to do: the run in " in resumed.getvalue()
  assert "already reached step 12" in resumed.getvalue()
  assert (workdir / "seed=1" / "sweep.json").exists()
  assert (
    list(csv.DictReader((workdir / "results.csv").open()))[1]["final_top1"] == rows[1]["final_top1"]
  )
