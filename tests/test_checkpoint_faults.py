"""Damaged checkpoints and unfinished saves, met through the command as a user meets them.

A checkpoint cut short, missing a file or left an empty folder: `eval` and `train` fall back to the
newest intact one and say which they skipped and why, `eval --step` names the damage (exit 2), and
`train` moves the damaged folder aside to `<step>.damaged`. The temporary folder of a save that a
kill interrupted is removed when `train` starts again, never by `eval`. Nothing intact is touched.
One 12-step run (checkpoints 4, 8, 12) serves the module; each test damages a copy of it. Workdirs
that cannot be written are refused before anything is built. Where the process itself does not
matter, the command runs in this one (helpers.run_in_process), which spares its start-up.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from helpers import (
  STEPS,
  command_line,
  digest,
  run_command,
  run_in_process,
  subprocess_env,
  without_timing,
)

from inception_jax.training.reporting import read_metrics

# What orbax-checkpoint 0.12.8 names a save in progress (seen by killing a process mid-save): the
# step folder's name plus this, renamed to the step folder when the save completes.
TMP_SUFFIX = ".orbax-checkpoint-tmp"


@pytest.fixture
def workdir(tiny_run, tmp_path):
  """A copy of the shared tiny run (checkpoints 4, 8 and 12) to damage."""
  return pathlib.Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((path for path in folder.rglob("*") if path.is_file()), key=lambda p: p.stat().st_size)


def _eval_top1(workdir: pathlib.Path, step: int) -> float:
  return next(
    record["top1"]
    for record in read_metrics(workdir)
    if record["split"] == "eval" and record["step"] == step
  )


def _clean(result) -> None:
  assert "Traceback" not in result.stderr, result.stderr


def test_eval_falls_back_from_a_truncated_checkpoint_and_refuses_it_by_step(workdir, tiny, capfd):
  checkpoints = workdir / "checkpoints"
  cut = _largest_file(checkpoints / str(STEPS))
  os.truncate(cut, cut.stat().st_size // 2)
  before = digest(workdir)

  latest = run_in_process(capfd, "eval", workdir, tiny)
  assert latest.returncode == 0, latest.stderr
  assert (
    "Skipped the checkpoint at step 12, which is damaged (state: OUT_OF_RANGE: Requested byte range"
  ) in latest.stdout
  assert "); evaluating step 8.\n" in latest.stdout
  assert "eval at step 8: loss" in latest.stdout
  assert f"top1 {100 * _eval_top1(workdir, 8):.2f}%" in latest.stdout  # what the run logged at 8
  _clean(latest)

  chosen = run_in_process(capfd, "eval", workdir, tiny, extra=("--step", str(STEPS)))
  assert chosen.returncode == 2, chosen.stderr
  errors = [line for line in chosen.stderr.splitlines() if "inception-jax" in line]
  assert len(errors) == 1 and errors[0].startswith(
    f"inception-jax eval: error: the checkpoint at step 12 in {checkpoints} is damaged: state: "
    f"OUT_OF_RANGE: Requested byte range "
  )
  assert errors[0].endswith("Nothing was changed; the saved steps are [4, 8, 12].")
  _clean(chosen)
  assert digest(workdir) == before  # eval writes nothing


def _delete_a_data_file(folder: pathlib.Path) -> None:
  _largest_file(folder / "state").unlink()


def _garble(folder: pathlib.Path) -> None:
  """Flips bits through the largest data file, keeping its size: only decoding can tell."""
  path = _largest_file(folder / "state")
  data = bytearray(path.read_bytes())
  for i in range(100, len(data), 7):
    data[i] ^= 0x5A
  path.write_bytes(bytes(data))


def _empty(folder: pathlib.Path) -> None:
  shutil.rmtree(folder)
  folder.mkdir()


@pytest.mark.parametrize(
  "damage, reason, earlier, aside",
  [
    (_delete_a_data_file, "state: no data for ", False, "12.damaged"),
    (_garble, "state: FAILED_PRECONDITION: Error reading ", False, "12.damaged"),
    (_empty, "state and progress missing in it", True, "12.damaged.2"),
  ],
  ids=[
    "a data file deleted",
    "bytes garbled in place",
    "an empty step folder, with an earlier 12.damaged",
  ],
)
def test_train_resumes_from_the_newest_intact_checkpoint_and_moves_the_damaged_one_aside(
  workdir, tiny_run, tiny, damage, reason, earlier, aside, capfd
):
  checkpoints = workdir / "checkpoints"
  damage(checkpoints / "12")
  if earlier:  # set aside by an earlier resume: kept as it is
    (checkpoints / "12.damaged").mkdir()
    (checkpoints / "12.damaged" / "note").write_text("earlier")
  before = {name: digest(checkpoints / name) for name in ("4", "8", "12")}

  result = run_in_process(capfd, "train", workdir, tiny)
  assert result.returncode == 0, result.stderr
  _clean(result)
  assert f"Skipped the checkpoint at step 12, which is damaged ({reason}" in result.stdout
  assert f"); moved it to {checkpoints / aside}.\n" in result.stdout
  assert "Resuming at step 8" in result.stdout and "step 12/12" in result.stdout

  assert digest(checkpoints / aside) == before["12"]  # the damaged files, as they were
  if earlier:
    assert [path.name for path in (checkpoints / "12.damaged").iterdir()] == ["note"]
  assert digest(checkpoints / "4") == before["4"] and digest(checkpoints / "8") == before["8"]
  assert sorted(path.name for path in checkpoints.iterdir()) == sorted(
    {"4", "8", "12", "12.damaged", aside}
  )
  # The resumed run is the one the damage interrupted: same metrics, step for step.
  assert without_timing(read_metrics(workdir)) == without_timing(read_metrics(tiny_run))


def test_an_unfinished_save_is_left_by_eval_and_removed_when_train_starts_again(
  workdir, tiny_run, tiny
):
  checkpoints = workdir / "checkpoints"
  unfinished = checkpoints / f"{STEPS}{TMP_SUFFIX}"
  (checkpoints / str(STEPS)).rename(unfinished)  # killed before orbax renamed it
  before = digest(workdir)

  evaluated = run_command("eval", workdir, tiny)
  assert evaluated.returncode == 0, evaluated.stderr
  assert "eval at step 8: loss" in evaluated.stdout and "Skipped" not in evaluated.stdout
  _clean(evaluated)
  assert digest(workdir) == before

  intact = {name: digest(checkpoints / name) for name in ("4", "8")}
  resumed = run_command("train", workdir, tiny)
  assert resumed.returncode == 0, resumed.stderr
  _clean(resumed)
  assert "Resuming at step 8" in resumed.stdout and "step 12/12" in resumed.stdout
  assert not unfinished.exists()
  assert sorted(path.name for path in checkpoints.iterdir()) == ["12", "4", "8"]
  assert {name: digest(checkpoints / name) for name in ("4", "8")} == intact
  assert without_timing(read_metrics(workdir)) == without_timing(read_metrics(tiny_run))


def test_with_no_intact_checkpoint_left_eval_and_train_refuse_and_change_nothing(workdir, tiny):
  checkpoints = workdir / "checkpoints"
  for step in ("4", "8", "12"):
    _empty(checkpoints / step)
  before = digest(workdir)
  for command in ("eval", "train"):
    result = run_command(command, workdir, tiny)
    assert result.returncode == 2, result.stderr
    _clean(result)
    assert (
      f"inception-jax {command}: error: no intact checkpoint in {checkpoints}:\n"
      f"  step 12: state and progress missing in it\n"
      f"  step 8: state and progress missing in it\n"
      f"  step 4: state and progress missing in it\n"
      f"Nothing was changed."
    ) in result.stderr
    assert digest(workdir) == before and sorted(p.name for p in checkpoints.iterdir()) == [
      "12",
      "4",
      "8",
    ]


def test_train_on_a_finished_run_writes_nothing(workdir, tiny):
  """No config.json rewritten, no metrics.jsonl rewritten, no new TensorBoard file: a finished
  run on read-only media can be `train`ed again (e.g. by a sweep) without an error."""
  before = digest(workdir)
  result = run_command("train", workdir, tiny)
  assert result.returncode == 0, result.stderr
  assert f"Nothing to do: the run in {workdir} already reached step {STEPS}" in result.stdout
  assert digest(workdir) == before


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_workdir_that_cannot_be_written_is_refused_before_anything_is_built(
  tiny, tmp_path, where
):
  (tmp_path / "taken").write_text("not a folder\n")
  target = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "run"
  result = run_command("train", target, tiny)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert f"--workdir {target}: {tmp_path / 'taken'} is a file" in result.stderr
  assert "Downloading and preparing" not in result.stdout  # refused before the dataset
  assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
  assert (tmp_path / "taken").read_text() == "not a folder\n"


# Run first where the tests run as root (who may write anywhere): drops the capabilities that
# override permission bits (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: prctl PR_CAPBSET_DROP = 24) and
# becomes the command, so that the bits apply to it as to a user. A process of its own, since
# dropping them in the test's (multithreaded) process before exec would need a fork.
AS_A_USER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):
  if libc.prctl(24, capability, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.parametrize("where", ["the folder", "its parent"])
def test_a_workdir_without_write_permission_is_refused_before_anything_is_built(
  tiny, tmp_path, where
):
  """Permission bits, as a non-root user meets them (the tests may run as root: the command then
  runs without root's power to write anywhere)."""
  parent = tmp_path / "mine"
  parent.mkdir()
  target = parent if where == "the folder" else parent / "run"
  parent.chmod(0o555)
  try:
    command = command_line("train", target, tiny)
    if os.geteuid() == 0:
      command = [sys.executable, "-c", AS_A_USER, *command]
    result = subprocess.run(
      command, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
  finally:
    parent.chmod(0o755)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  reason = "is read-only" if where == "the folder" else "no folder can be made in"
  assert f"--workdir {target}: " in result.stderr and reason in result.stderr, result.stderr
  assert "Downloading and preparing" not in result.stdout  # refused before the dataset
  assert not list(parent.iterdir())


@pytest.mark.parametrize("lost", [8, 12], ids=["mid-run", "final"])
def test_an_evaluation_lost_after_its_checkpoint_is_run_on_resume(workdir, tiny, lost, capfd):
  """A kill after the checkpoint at an eval step but before its evaluation was recorded: the same
  command evaluates that step first, so metrics.jsonl ends as the uninterrupted run's."""
  records = read_metrics(workdir)
  kept = [r for r in records if r["step"] < lost or (r["step"] == lost and r["split"] != "eval")]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
  for later in range(lost + 1, STEPS + 1):
    shutil.rmtree(workdir / "checkpoints" / str(later), ignore_errors=True)
  result = run_in_process(capfd, "train", workdir, tiny)
  assert result.returncode == 0, result.stderr
  assert f"Evaluating step {lost} first" in result.stdout
  assert without_timing(read_metrics(workdir)) == without_timing(records)
