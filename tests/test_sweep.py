"""Sweeps: grids, point names, shares of an array job, checks before training, a real tiny sweep."""

import csv
import io
import json
import math
import os
import pathlib
import shlex
import statistics

import pytest
import scipy.stats
from helpers import without_timing

from inception_jax.config import load_config, load_ensemble_config, parse_override_args
from inception_jax.errors import ConfigError
from inception_jax.main import main
from inception_jax.sweeps.grid import Hyper, array_slice, load_sweep, share
from inception_jax.sweeps.report import METRICS
from inception_jax.sweeps.run import run_sweep
from inception_jax.training.reporting import read_metrics
from inception_jax.training.trainer import evaluate

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


@pytest.mark.parametrize(
  "seconds, text", [(41.96, "42.0s"), (-0.6, "-0.6s"), (261.2, "4m21s"), (-261.2, "-4m21s")]
)
def test_wall_times_and_their_differences_keep_their_sign_and_subsecond_gaps(seconds, text):
  assert METRICS["wall_time"].text(seconds) == text


def test_points_are_named_after_their_overrides_and_their_commands_rebuild_their_configs():
  sweep = load_sweep(str(ABLATION))
  assert [p.name for p in sweep.points] == [
    f"module={module},learning_rate={rate},aux_heads={aux},seed={seed}"
    for module, rate in (("naive", 0.02), ("reduced", 0.2))
    for aux in ("true", "false")
    for seed in range(3)
  ]
  assert sweep.eval_crops == (1, 144) and len(sweep.compare) == 4
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
  assert len(every) == 12 and all(
    line.startswith("inception-jax train --config ") for line in every
  )
  assert every[5].endswith(
    "--config.model.module=naive --config.learning_rate=0.02 --config.model.aux_heads=false"
    " --config.seed=2"
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
    workdir / "module=naive,learning_rate=0.02,aux_heads=true,seed=0"
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


NAMES = [f"flip={flip},seed={seed}" for flip in ("false", "true") for seed in (0, 1)]


@pytest.fixture(scope="module")
def swept(data_dir, tmp_path_factory):
  """The tiny sweep run once, two points at a time (--parallel 2: each on one of the two cores):
  (its workdir, its console output)."""
  workdir = tmp_path_factory.mktemp("swept") / "sweep"
  console = io.StringIO()
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
    common = {"data.dir": str(data_dir)}
    code = run_sweep(str(TINY_SWEEP), str(workdir), common, console=console, parallel=2)
  assert code == 0, console.getvalue()
  return workdir, console.getvalue()


def test_a_sweep_runs_its_points_reports_them_and_skips_them_when_run_again(
  swept, data_dir, monkeypatch
):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
  workdir = swept[0]
  common = {"data.dir": str(data_dir)}
  names = NAMES
  for name in names:
    assert (workdir / name / "checkpoints" / "12").is_dir()
    assert "step 12/12" in (workdir / name / "train.log").read_text()

  rows = list(csv.DictReader((workdir / "results.csv").open()))
  assert [(r["point"], r["augment.flip"], r["seed"], r["status"]) for r in rows] == [
    (name, name[5:].split(",")[0], name[-1], "done") for name in names
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
  assert f"inception-jax sweep {TINY_SWEEP} --workdir {workdir} --parallel 2" in markdown
  assert "| flip=false,seed=0 | false | 0 | done |" in markdown
  assert (workdir / "curves.png").read_bytes().startswith(b"\x89PNG")
  _assert_grouped_statistics(workdir)
  _assert_other_protocols_and_ensembles(workdir, rows, swept[1])

  logs = {name: (workdir / name / "train.log").read_text() for name in names}
  again = io.StringIO()
  assert run_sweep(str(TINY_SWEEP), str(workdir), common, console=again) == 0
  assert again.getvalue().count("finished earlier, skipped") == 4
  assert logs == {name: (workdir / name / "train.log").read_text() for name in logs}

  # A point without its finish marker (killed before train returned) resumes from its checkpoint.
  (workdir / names[1] / "sweep.json").unlink()
  resumed = io.StringIO()
  assert run_sweep(str(TINY_SWEEP), str(workdir), common, console=resumed) == 0
  assert f"[2/4] {names[1]}: resuming" in resumed.getvalue()
  assert "Nothing to do: the run in " in resumed.getvalue()
  assert "already reached step 12" in resumed.getvalue()
  assert (workdir / names[1] / "sweep.json").exists()
  assert (
    list(csv.DictReader((workdir / "results.csv").open()))[1]["final_top1"] == rows[1]["final_top1"]
  )


def _final_eval(point_dir: pathlib.Path) -> dict:
  return [json.loads(line) for line in (point_dir / "metrics.jsonl").open()][-1]


def _mean_and_interval(values):
  """The mean and its 95% t-interval, by the textbook formula (not the code under test)."""
  mean, n = statistics.fmean(values), len(values)
  half = scipy.stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
  return mean, statistics.stdev(values), mean - half, mean + half


def _assert_grouped_statistics(workdir: pathlib.Path) -> None:
  """summary.csv and results.md against numbers computed here from the points' metrics.jsonl."""
  top1 = {
    (flip, seed): _final_eval(workdir / f"flip={flip},seed={seed}")["top1"]
    for flip in ("false", "true")
    for seed in (0, 1)
  }
  summary = {
    (row["kind"], row["configuration"], row["metric"]): row
    for row in csv.DictReader((workdir / "summary.csv").open())
  }
  markdown = (workdir / "results.md").read_text()
  for flip in ("false", "true"):
    expected = _mean_and_interval([top1[flip, 0], top1[flip, 1]])
    row = summary["configuration", f"flip={flip}", "final_top1"]
    assert row["n"] == "2" and row["bootstrap_low"] == ""  # too few seeds to resample
    got = [float(row[key]) for key in ("mean", "std", "t_low", "t_high")]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    mean, std, low, high = (f"{100 * value:.2f}%" for value in expected)
    assert f"| flip={flip} | 2 of 2 |" in markdown
    assert f"{mean} ± {std} [{low}, {high}]" in markdown
  differences = [top1["true", seed] - top1["false", seed] for seed in (0, 1)]
  row = summary["difference", "flip=true - flip=false", "final_top1"]
  expected = _mean_and_interval(differences)
  got = [float(row[key]) for key in ("mean", "std", "t_low", "t_high")]
  assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
  assert float(row["p_value"]) == pytest.approx(
    scipy.stats.ttest_rel(
      [top1["true", s] for s in (0, 1)], [top1["false", s] for s in (0, 1)]
    ).pvalue
  )
  assert "| flip=true | flip=false | final top-1 | 2 |" in markdown


def _assert_other_protocols_and_ensembles(workdir: pathlib.Path, rows, console: str) -> None:
  """EVAL_CROPS = (1, 10): each point at 10 crops, each configuration's two seeds as an ensemble
  at 1 and 10 crops from the points' kept predictions, equal to `inception-jax eval` of both
  workdirs, in the report's files."""
  for row in rows:
    ten = json.loads((workdir / row["point"] / "evals.json").read_text())["10"]
    assert ten["crops"] == 10 and ten["count"] == 360 and ten["step"] == 12
    assert float(row["top1_10crops"]) == pytest.approx(ten["top1"])
  # Each point at 10 crops, and at 1 crop for its predictions; then the two ensembles at each.
  assert console.count("$ inception-jax eval --workdir") == 4 + 4 + 2 * 2
  summary = {
    (r["kind"], r["configuration"], r["metric"]): r
    for r in csv.DictReader((workdir / "summary.csv").open())
  }
  markdown = (workdir / "results.md").read_text()
  for flip in ("false", "true"):
    ensemble = json.loads((workdir / "ensembles" / f"flip={flip}.json").read_text())
    assert ensemble["members"] == {f"flip={flip},seed={s}": 12 for s in (0, 1)}
    assert ensemble["1"]["step"] == [12, 12] and ensemble["10"]["crops"] == 10
    for count in ("1", "10"):
      assert 0 < ensemble[count]["top1"] <= ensemble[count]["top5"] <= 1
      row = summary["ensemble", f"flip={flip}", f"top1_{count}crops"]
      assert float(row["mean"]) == pytest.approx(ensemble[count]["top1"])
    members = [str(workdir / name) for name in ensemble["members"]]
    together = evaluate(load_ensemble_config(members), members, crops=10)
    assert together["top1"] == ensemble["10"]["top1"]
    assert together["loss"] == pytest.approx(ensemble["10"]["loss"], rel=1e-5)
    line = next(line for line in markdown.splitlines() if line.startswith(f"| flip={flip} | 2"))
    assert line.endswith(
      f"| {100 * ensemble['1']['top1']:.2f}% | {100 * ensemble['10']['top1']:.2f}% |"
    )


def test_parallel_points_run_side_by_side_and_match_one_at_a_time(
  swept, data_dir, tmp_path, monkeypatch
):
  """The --parallel 2 sweep ran its points two at a time, each pinned to one core, each writing
  its own whole log; share 0 of 4 (its first point) run alone on one core (the thread count XLA's
  reductions split their work by) ends with the same numbers."""
  workdir, output = swept
  for name in NAMES:
    assert f"{name}: starting on cores " in output and f"{name}: ended (exit 0)" in output
    log = (workdir / name / "train.log").read_text()
    assert log.count("Training: GoogLeNet") == 1 and "step 12/12" in log  # whole, its own
  # Overlap: the second point's process started before the first one's ended (file times are
  # no proof under load: a slowed start can outlast the other's whole run).
  assert output.index(f"{NAMES[1]}: starting") < output.index(f"{NAMES[0]}: ended")

  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
  alone = tmp_path / "alone"
  cores = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(cores)})  # inherited by the points' processes
  try:
    common = {"data.dir": str(data_dir)}
    assert run_sweep(str(TINY_SWEEP), str(alone), common, 0, 4, console=io.StringIO()) == 0
  finally:
    os.sched_setaffinity(0, cores)
  for name in NAMES[:1]:
    ours, theirs = (without_timing(read_metrics(w / name)) for w in (alone, workdir))
    assert [r.keys() for r in ours] == [r.keys() for r in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
      numbers = {k: v for k, v in reference.items() if not isinstance(v, str)}
      assert {k: mine[k] for k in numbers} == pytest.approx(numbers, rel=1e-5, abs=1e-6), name
      assert mine["split"] == reference["split"]
