"""experiments/gpu_check.sh: the prepared GPU measurements, run here on small cases."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_prepared_gpu_check_runs_every_command_it_holds(tmp_path):
  """experiments/gpu_check.sh, `--tiny`: its bench and train commands, on small cases here, so
  that a session lent a GPU (rare, 15 minutes) does not find them broken by a CLI change."""
  out = tmp_path / "out"
  env = {
    **os.environ,
    "PYTHON": sys.executable,
    "GPU_CHECK_PARTS": str(tmp_path / "no-parts"),  # nothing staged: this environment's packages
  }
  script = ROOT / "experiments" / "gpu_check.sh"
  subprocess.run(["bash", script, "run", out, "900", "--tiny"], env=env, check=True, timeout=900)
  log = (out / "log.txt").read_text()
  steps = ["target", "train", "pipeline", "float32", "eval", "batches"]
  assert [f"== {name}: exit 0" in log for name in steps] == [True] * len(steps), log[-3000:]
  assert sorted(p.name for p in out.iterdir()) == [
    "bench_batches.json",
    "bench_float32.json",
    "bench_target.json",
    "env.txt",
    "log.txt",
    "pipeline.json",
    "train_metrics.jsonl",
  ]
  target = json.loads((out / "bench_target.json").read_text())
  assert [row["images_per_second"] > 0 for row in target["rows"]] == [True] * len(target["rows"])
  float32 = json.loads((out / "bench_float32.json").read_text())
  assert {row["mode"] for row in float32["rows"]} == {"train", "eval"}
  assert "tensorflow-datasets" in (out / "env.txt").read_text()
