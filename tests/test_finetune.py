"""Fine-tuning from an imported network (`--config.init_from`), heads only or all of it.

The source is the tiny test network with 7 classes, written by PyTorch (our mirror of it, random
weights) and imported with `import-weights`; the runs fine-tune it on the 10 digits.
"""

import json

import jax
import numpy as np
import pytest
import torch
from helpers import TINY_CONFIG

from inception_jax.bench.torch_googlenet import MirrorGoogLeNet
from inception_jax.config import load_config
from inception_jax.main import main
from inception_jax.models import build_model
from inception_jax.training import devices
from inception_jax.training.checkpoints import Checkpoints

SOURCE_CLASSES = 7


def import_tiny(workdir, classes):
  """A workdir imported from a PyTorch state dict of the tiny network with `classes` classes."""
  config = load_config(str(TINY_CONFIG), {"model.num_classes": classes})
  torch.manual_seed(classes)
  mirror = MirrorGoogLeNet(build_model(config.model))
  with torch.no_grad():
    for module in mirror.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  torch.save(mirror.state_dict(), workdir.with_suffix(".pth"))
  assert (
    main(
      [
        "import-weights",
        "--from",
        "torchvision",
        "--weights",
        str(workdir.with_suffix(".pth")),
        "--workdir",
        str(workdir),
        "--config",
        str(TINY_CONFIG),
        f"--config.model.num_classes={classes}",
      ]
    )
    == 0
  )
  return workdir


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return import_tiny(tmp_path_factory.mktemp("finetune") / "source", SOURCE_CLASSES)


def variables(workdir):
  with Checkpoints(workdir, read_only=True) as checkpoints:
    return jax.device_get(checkpoints.restore_variables(devices.checkpoint_sharding())[0])


def finetune(workdir, source, data_dir, *overrides):
  return main(
    [
      "train",
      "--config",
      str(TINY_CONFIG),
      "--workdir",
      str(workdir),
      f"--config.init_from={source}",
      f"--config.data.dir={data_dir}",
      "--config.num_train_steps=3",
      "--config.log_every_steps=3",
      "--config.warmup_epochs=0",
      *overrides,
    ]
  )


def backbone(tree):
  return {
    layer: value
    for layer, value in tree.items()
    if layer != "classifier" and not layer.startswith("aux_")
  }


def test_head_only_fine_tuning_leaves_the_backbone_as_it_was(source, data_dir, tmp_path, capfd):
  assert finetune(tmp_path / "run", source, data_dir, "--config.trainable=head") == 0
  out = capfd.readouterr().out
  assert f"Fine-tuning from {source}" in out and "trainable=head" in out
  assert "112 of 116 arrays taken" in out
  assert (
    "Initialised anew (shapes differ from the source's, or it has none): aux_4a/fc2, "
    "classifier." in out
  )
  before, after = variables(source), variables(tmp_path / "run")
  for collection in ("params", "batch_stats"):
    same = jax.tree.map(np.array_equal, backbone(before[collection]), backbone(after[collection]))
    assert jax.tree.leaves(same) and all(jax.tree.leaves(same)), collection
  assert after["params"]["classifier"]["kernel"].shape[-1] == 10
  assert (
    after["params"]["aux_4a"]["fc1"]["kernel"].shape
    == before["params"]["aux_4a"]["fc1"]["kernel"].shape
  )  # same shape: taken from the source
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert [r["split"] for r in records] == ["train", "eval"]


def test_fine_tuning_everything_starts_from_the_source_and_trains_it(
  source, data_dir, tmp_path, capfd
):
  assert finetune(tmp_path / "run", f"{source}:0", data_dir, "--config.learning_rate=0.01") == 0
  assert "(its checkpoint at step 0)" in capfd.readouterr().out
  before, after = variables(source), variables(tmp_path / "run")
  changed = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), backbone(before["params"]), backbone(after["params"])
  )
  assert all(jax.tree.leaves(changed))
  # Three small steps move the weights only a little from the source's.
  conv = ("inception_3a", "branch1", "conv1", "conv", "kernel")
  first, last = (
    tree[conv[0]][conv[1]][conv[2]][conv[3]][conv[4]]
    for tree in (before["params"], after["params"])
  )
  assert np.abs(last - first).max() < 0.1 * np.abs(first).max()
  # eval reads the run's own config.json when --config is not given
  assert main(["eval", "--workdir", str(tmp_path / "run")]) == 0
  assert "eval at step 3" in capfd.readouterr().out


def test_a_different_backbone_is_refused(source, data_dir, tmp_path, capfd):
  assert (
    finetune(
      tmp_path / "run",
      source,
      data_dir,
      "--config.model.kernel_sizes=(1,3,3)",
      "--config.model.width_multiplier=0.5",
    )
    == 2
  )
  err = capfd.readouterr().err
  assert "model.kernel_sizes: (1, 3, 5) in the source, (1, 3, 3) here" in err
  assert "model.width_multiplier" in err and "Nothing was written" in err
  assert not (tmp_path / "run").exists()


def test_a_step_without_a_checkpoint_is_refused(source, data_dir, tmp_path, capfd):
  assert finetune(tmp_path / "run", f"{source}:5", data_dir) == 2
  assert "no checkpoint at step 5" in capfd.readouterr().err
  assert not (tmp_path / "run").exists()


def test_training_an_imported_workdir_is_refused(data_dir, tmp_path, capfd):
  imported = import_tiny(tmp_path / "digits", 10)
  before = {p: p.read_bytes() for p in imported.rglob("*") if p.is_file()}
  assert (
    main(
      [
        "train",
        "--workdir",
        str(imported),
        "--config",
        str(TINY_CONFIG),
        f"--config.data.dir={data_dir}",
      ]
    )
    == 2
  )
  err = capfd.readouterr().err
  assert "holds imported weights" in err and "--config.init_from=" in err
  assert {p: p.read_bytes() for p in imported.rglob("*") if p.is_file()} == before
