"""Real training runs on the embedded digits: resume after SIGKILL, SIGTERM, two devices, errors.

Runs are 12 steps of tests/tiny_config.py (configs/default.py with 3 of the 9 Inception modules, so
that compiling is quick). Most go through the `inception-jax` command in a
subprocess (a fresh process is what a kill, a signal or a device count needs); the reference run
is in-process and shared.
"""

import pathlib
import shutil
import signal
import socket
import subprocess

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import (
  STEPS,
  TIMING,
  command_line,
  digest,
  run_command,
  run_in_process,
  start_train,
  subprocess_env,
  tiny_config,
  wait_for,
  without_timing,
)

from inception_jax.main import main
from inception_jax.models import build_model
from inception_jax.training import devices, optim
from inception_jax.training.reporting import read_metrics
from inception_jax.training.steps import make_train_step, train_state_program
from inception_jax.training.trainer import evaluate, train_and_evaluate


def _state(workdir, step=STEPS):
  """The saved state as {"params": {name: array}, ...}, whatever device count saved it."""
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here),
    checkpointer.metadata(path).item_metadata.tree,
  )
  state = checkpointer.restore(path, target)
  return {part: dict(_flatten(state[part])) for part in ("params", "batch_stats", "opt_state")}


def _flatten(tree, prefix=""):
  items = tree.items() if isinstance(tree, dict) else enumerate(tree)
  for key, value in items:
    if isinstance(value, (dict, list, tuple)):
      yield from _flatten(value, f"{prefix}{key}/")
    else:
      yield f"{prefix}{key}", np.asarray(value)


def _norm(arrays):
  return np.sqrt(sum(np.sum(np.square(a)) for a in arrays))


def _events(workdir) -> dict[tuple[str, int], list[float]]:
  """Every scalar in the workdir's TensorBoard files, read raw: (tag, step) -> values written."""
  import tensorflow as tf

  points = {}
  for path in sorted((pathlib.Path(workdir) / "tensorboard").glob("*tfevents*")):
    for record in tf.data.TFRecordDataset(str(path)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        points.setdefault((value.tag, event.step), []).append(float(tf.make_ndarray(value.tensor)))
  return points


def test_training_writes_config_metrics_checkpoints_and_events(tiny_run, tiny):
  assert (tiny_run / "config.json").exists()
  assert sorted(int(p.name) for p in (tiny_run / "checkpoints").iterdir()) == [4, 8, 12]
  assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
  records = read_metrics(tiny_run)
  assert [(r["step"], r["split"]) for r in records] == [
    (4, "train"),
    (8, "train"),
    (8, "eval"),
    (12, "train"),
    (12, "eval"),
  ]
  for record in records:
    assert {"loss", "top1"} <= record.keys() and np.isfinite(record["loss"])
  train = [r for r in records if r["split"] == "train"]
  assert all({"learning_rate", "images_per_second"} <= r.keys() for r in train)
  assert train[-1]["loss"] < train[0]["loss"]  # it learns
  final = records[-1]
  assert final["count"] == 360 and 0 < final["top1"] <= final["top5"] <= 1.0
  # `eval` re-evaluates the saved step and gets the numbers the run logged.
  again = evaluate(tiny_config(tiny), [str(tiny_run)])
  assert again["step"] == STEPS
  assert again["top1"] == final["top1"] and again["loss"] == pytest.approx(final["loss"], rel=1e-6)
  at_8 = evaluate(tiny_config(tiny), [str(tiny_run)], step=8)
  assert at_8["step"] == 8 and at_8["top1"] == records[2]["top1"]


def test_sigkill_then_resume_matches_the_uninterrupted_run(tiny_run, tiny, tmp_path):
  process = start_train(tmp_path, tiny)
  wait_for(tmp_path / "checkpoints" / "4", process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (tmp_path / "checkpoints" / str(STEPS)).exists(), "killed too late to test resuming"

  resumed = run_command("train", tmp_path, tiny)
  assert resumed.returncode == 0, resumed.stderr
  assert "Resuming at step" in resumed.stdout
  ours, theirs = _state(tmp_path)["params"], _state(tiny_run)["params"]
  assert ours.keys() == theirs.keys()
  for name in ours:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  assert without_timing(read_metrics(tmp_path)) == without_timing(read_metrics(tiny_run))
  _assert_same_events(tmp_path, tiny_run)


def _assert_same_events(workdir, tiny_run):
  """TensorBoard shows each step once, with the uninterrupted run's values."""
  ours, theirs = _events(workdir), _events(tiny_run)
  assert ours.keys() == theirs.keys()
  for (tag, step), values in ours.items():
    assert len(values) == 1, (tag, step, values)
    if tag.split("/")[1] not in TIMING:
      assert values == theirs[tag, step], (tag, step)


def test_steps_replayed_after_a_resume_are_recorded_once(tiny_run, tiny, tmp_path):
  """A kill after step 8 and 12 were logged but before their checkpoints were written (here: the
  finished run with checkpoints 8 and 12 removed, the events file ending in a record cut short).
  The resumed run trains 5-12 again; metrics.jsonl and TensorBoard end as the tiny_run's."""
  shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
  for step in (8, 12):
    shutil.rmtree(tmp_path / "checkpoints" / str(step))
  (events_file,) = (tmp_path / "tensorboard").glob("*tfevents*")
  with events_file.open("ab") as events:
    events.write((1000).to_bytes(8, "little") + bytes(6))  # a record's header, its data never came
  resumed = run_command("train", tmp_path, tiny)
  assert resumed.returncode == 0, resumed.stderr
  assert "Resuming at step 4" in resumed.stdout
  assert without_timing(read_metrics(tmp_path)) == without_timing(read_metrics(tiny_run))
  _assert_same_events(tmp_path, tiny_run)
  assert not list(tmp_path.glob("*.partial"))


def test_resuming_with_another_config_names_the_changes_and_keeps_the_earlier_one(
  tiny_run, tiny, tmp_path, capfd
):
  """A recipe changed halfway is said at the start, and the earlier config stays beside."""
  shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
  shutil.rmtree(tmp_path / "checkpoints" / str(STEPS))
  earlier = (tmp_path / "config.json").read_text()
  resumed = run_in_process(capfd, "train", tmp_path, {**tiny, "log_every_steps": 2})
  assert resumed.returncode == 0, resumed.stderr
  assert (
    "The config differs from the one used until step 8, kept as config.until-step-8.json:\n"
    "  log_every_steps: 4 -> 2\n"
  ) in resumed.stdout
  assert (tmp_path / "config.until-step-8.json").read_text() == earlier
  assert '"log_every_steps": 2' in (tmp_path / "config.json").read_text()


def test_a_stop_signal_while_compiling_leaves_at_once_with_nothing_to_save(tiny, tmp_path):
  """Compiling takes seconds on a CPU and a minute on a GPU; Ctrl-C meanwhile does not wait for
  it (an empty compilation cache, so that the steps do compile)."""
  process = subprocess.Popen(
    command_line("train", tmp_path / "run", tiny),
    env={**subprocess_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "empty_cache")},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in process.stdout:
    if line.startswith("Training:"):  # the programs are compiling
      break
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=60)
  assert process.returncode == 130, stderr
  assert "SIGINT before the first step (compiling): nothing trained yet" in stderr
  assert "First step done" not in stdout and not any((tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_saves_a_checkpoint_at_the_step_it_stopped(tiny, tmp_path, stop):
  """A scheduler's SIGTERM and a Ctrl-C (SIGINT) alike: checkpoint, message, exit 128 + signal."""
  process = start_train(tmp_path, tiny)
  wait_for(tmp_path / "checkpoints" / "4", process)
  process.send_signal(stop)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + stop, stderr  # 143 and 130
  assert f"inception-jax train: {stop.name}: saved a checkpoint" in stderr
  step = int(stderr.split("saved a checkpoint at step ")[1].split(";")[0])
  assert 4 < step < STEPS
  assert step in [int(p.name) for p in (tmp_path / "checkpoints").iterdir()]
  assert read_metrics(tmp_path)[-1]["step"] <= step
  if stop == signal.SIGTERM:  # resume with the first step a log step: its images/s lacks compiling
    resumed = run_command("train", tmp_path, tiny, extra=[f"--config.log_every_steps={step + 1}"])
    assert resumed.returncode == 0, resumed.stderr
    first = float(resumed.stdout.split("First step done ")[1].split("s")[0])
    (record,) = [
      r for r in read_metrics(tmp_path) if r["step"] == step + 1 and r["split"] == "train"
    ]
    batch = tiny_config(tiny).batch_size  # compiling takes over 10x a tiny step, from the cache too
    assert record["images_per_second"] > 3 * batch / first, (first, record)


def test_two_devices_give_the_one_device_result(tiny, tmp_path):
  """The first step on 2 devices against 1: same loss, BatchNorm statistics and gradient.

  Dropout masks and the photometric distortions' factors are drawn for the global batch, so they
  do not depend on the device count. The
  gradient is compared with a tolerance: BatchNorm + ReLU makes this tiny net's gradient
  discontinuous at rounding level (a channel constant over the batch normalises to +-1e-7, and
  ReLU passes it or not), so even reversing the batch on one device moves it by ~0.3%, and a few
  steps of training amplify that to order one. Without the pmean over devices the gradients
  would differ at order one from the first step.
  """
  overrides = {**tiny, "num_train_steps": 1, "warmup_epochs": 0.0, "log_every_steps": 1}
  two = run_command("train", tmp_path / "two", overrides, devices=2)
  assert two.returncode == 0, two.stderr
  assert "over 2 device(s)" in two.stdout
  train_and_evaluate(tiny_config(overrides), str(tmp_path / "one"))
  first_one, first_two = (read_metrics(tmp_path / run)[0] for run in ("one", "two"))
  assert first_one["step"] == first_two["step"] == 1
  for metric in ("loss", "aux_loss", "top1"):
    assert first_two[metric] == pytest.approx(first_one[metric], rel=1e-5), metric
  one, two = _state(tmp_path / "one", step=1), _state(tmp_path / "two", step=1)
  for name in one["batch_stats"]:
    np.testing.assert_allclose(
      two["batch_stats"][name], one["batch_stats"][name], rtol=1e-5, atol=1e-6, err_msg=name
    )
  # SGD's momentum buffer after one step is the gradient, averaged over the devices.
  gradients = [name for name in one["opt_state"] if "trace" in name]
  assert gradients
  difference = _norm(two["opt_state"][name] - one["opt_state"][name] for name in gradients)
  assert difference < 0.01 * _norm(one["opt_state"][name] for name in gradients)


def test_a_checkpoint_of_another_model_is_refused_and_left_untouched(tiny_run, tiny, tmp_path):
  workdir = tmp_path / "run"
  subprocess.run(["cp", "-r", str(tiny_run), str(workdir)], check=True)
  before = digest(workdir)
  result = run_command("train", workdir, {**tiny, "model.width_multiplier": 0.5})
  assert result.returncode == 2
  assert "holds a checkpoint (step 12) of a different model" in result.stderr
  assert (
    "params/aux_4a/conv/conv/kernel: (1, 1, 128, 32) in the checkpoint, (1, 1, 256, 64)"
    in result.stderr
    and "Nothing was changed" in result.stderr
  )
  assert digest(workdir) == before


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"model.widht_multiplier": 0.5}, "did you mean 'model.width_multiplier'"),
    ({"batch_size": "big"}, "config.batch_size expects an integer, got 'big'"),
    ({"data.name": "cifar100000"}, "is not a TFDS dataset"),
    ({"schedule": "cosin"}, "did you mean 'cosine'"),
  ],
)
def test_bad_config_is_one_clear_message(overrides, message, tiny, tmp_path, capsys):
  overrides = {**tiny, "data.dir": str(tmp_path / "tfds"), **overrides}
  code = main(command_line("train", tmp_path / "run", overrides)[3:])
  error = capsys.readouterr().err
  assert code == 2 and message in error, error
  assert error.count("error:") == 1
  assert not (tmp_path / "run").exists()


def test_imagenet_message_says_what_to_download_and_where(tmp_path, capsys):
  overrides = {"data.name": "imagenet2012", "data.dir": str(tmp_path), "model.num_classes": 1000}
  assert main(command_line("train", tmp_path / "run", overrides)[3:]) == 2
  error = capsys.readouterr().err
  assert (
    "needs files you download yourself" in error
    and "ILSVRC2012_img_train.tar" in error
    and str(tmp_path / "downloads" / "manual") in error
  )
  assert "--config.data.manual_dir" in error


def test_a_batch_that_does_not_split_over_the_devices_is_refused(tiny, tmp_path):
  result = run_command("train", tmp_path / "run", {**tiny, "batch_size": 127}, devices=2)
  assert result.returncode == 2, result.stderr
  assert "batch_size=127 does not divide over the 2 devices" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_two_processes_train_as_one_job(tiny, tmp_path):
  """Multi-host on one machine: two processes, one CPU device each, joined by the coordinator."""
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
  overrides = {
    **tiny,
    "num_train_steps": 4,
    "checkpoint_every_steps": 2,
    "log_every_steps": 2,
    "warmup_epochs": 0.0,
    "distributed.coordinator_address": f"localhost:{port}",
    "distributed.num_processes": 2,
  }
  env = dict(subprocess_env(), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  processes = [
    subprocess.Popen(
      command_line("train", tmp_path, {**overrides, "distributed.process_id": index}),
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for index in range(2)
  ]
  outputs = [process.communicate(timeout=600) for process in processes]
  assert [process.returncode for process in processes] == [0, 0], outputs
  assert "over 2 device(s)" in outputs[0][0] and "step 4/4" in outputs[0][0]
  assert "Training" not in outputs[1][0] and "step " not in outputs[1][0]  # only process 0 reports
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 4]
  final = read_metrics(tmp_path)[-1]
  assert final["split"] == "eval" and final["count"] == 360  # each process evaluated its half


def test_steps_compiled_from_shapes_are_the_steps_compiled_from_values(tiny):
  """`train` compiles its steps before the state and the first batch exist (beside the state's
  own compile): from shapes the program must be the one the values give, to the last attribute,
  so that the run stays the one it was."""
  config = tiny_config(tiny)
  model = build_model(config.model, batch_axis_name=devices.AXIS)
  tx = optim.optimizer(config, optax.constant_schedule(0.1))
  create, shapes = train_state_program(config, model, tx)
  state = devices.put_state(create())
  size = config.image_size
  host = {
    "image": np.zeros((config.batch_size, size, size, 3), np.uint8),
    "label": np.zeros((config.batch_size,), np.int32),
  }
  from_values = devices.parallel(make_train_step(model, tx, config)).lower(
    state, devices.put_batch(host)
  )
  from_shapes = devices.parallel(make_train_step(model, tx, config)).lower(
    devices.state_shapes(shapes),
    devices.batch_shapes({key: (value.shape, value.dtype) for key, value in host.items()}),
  )
  assert from_shapes.as_text() == from_values.as_text()
