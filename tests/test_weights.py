"""Imported weights compute what their own framework computes: torchvision's googlenet (through a
PyTorch mirror with torchvision's keys and shapes) and BVLC's Caffe network (through an
independent PyTorch reference), on random weights, imported with the `import-weights` command.
"""

import json
import pathlib

import jax
import numpy as np
import pytest
import torch
from caffe_reference import BVLCReference, caffe_input, random_bvlc_blobs, write_caffemodel
from PIL import Image

from inception_jax.bench.torch_googlenet import IMAGENET_MEAN, IMAGENET_STD, MirrorGoogLeNet
from inception_jax.config import load_workdir_config
from inception_jax.data.labels import class_names
from inception_jax.data.preprocess import eval_image_file
from inception_jax.main import main
from inception_jax.models import build_model
from inception_jax.training import devices
from inception_jax.training.checkpoints import Checkpoints

SIZES = [(224, 224), (227, 251)]  # the paper's, and an odd one (ceil-mode pools, adaptive heads)
TOLERANCE = 1e-5  # of the logits' scale, float32


def random_mirror(model, seed=0):
  """torchvision's googlenet with random weights and BatchNorm statistics near the real ones.

  He-normal weights and random BatchNorm scales and offsets; the running statistics are those of
  a batch of random images (momentum None: the average over what was seen), so activations keep
  their scale through 22 layers and the logits depend on every layer.
  """
  torch.manual_seed(seed)
  mirror = MirrorGoogLeNet(model, transform_input=True)
  with torch.no_grad():
    for module in mirror.modules():
      if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        torch.nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
          module.bias.normal_(0, 0.1)
      elif isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.2)
        module.momentum = None
    mirror.train()
    mirror(torch.randn(8, 3, 224, 224))
  return mirror.eval().double()


def imagenet_normalised(pixels):
  """uint8 NHWC -> what a torchvision user feeds: NCHW in [0, 1], normalised per channel (in
  float64: PyTorch computes the reference in double precision, so only our float32 rounding
  counts against the tolerance)."""
  x = torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 255
  mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
  return (x - mean) / torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)


def import_weights(source, weights, workdir, *extra):
  return main(
    [
      "import-weights",
      "--from",
      source,
      "--weights",
      str(weights),
      "--workdir",
      str(workdir),
      *extra,
    ]
  )


def restored(workdir):
  """The imported network (from its config.json) and its variables (from its checkpoint)."""
  config = load_workdir_config(workdir)
  with Checkpoints(workdir, read_only=True) as checkpoints:
    variables, _ = checkpoints.restore_variables(devices.checkpoint_sharding())
  return config, variables


def assert_close(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape
  scale = np.abs(theirs).max()
  assert scale > 0.1 and np.std(theirs) > 0.01 * scale  # logits that depend on the input
  assert np.abs(ours - theirs).max() <= TOLERANCE * scale, np.abs(ours - theirs).max() / scale


def pixels(size, count=2, seed=0):
  """Images with structure, as photographs have: smooth random colour fields plus noise.

  (Independent noise per pixel would make every deep feature nearly constant over the batch, and
  training-mode BatchNorm's (x - mean) / std would then cancel away float32's digits.)"""
  rng = np.random.default_rng(seed)
  height, width = size
  fields = [
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
      (width, height), Image.Resampling.BICUBIC
    )
    for _ in range(count)
  ]
  noise = rng.normal(0, 8, (count, *size, 3))
  noisy = np.stack([np.asarray(field, np.float64) for field in fields]) + noise
  return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def with_dropout_off(config):
  config = config.copy_and_resolve_references()
  config.model.dropout = config.model.aux_dropout = 0.0
  return build_model(config.model)


# ---------------------------------------------------------------- torchvision


@pytest.fixture(scope="module")
def torchvision(load, tmp_path_factory):
  """A random torchvision googlenet saved as a .pth, imported; (mirror, .pth, workdir)."""
  folder = tmp_path_factory.mktemp("torchvision")
  mirror = random_mirror(build_model(load("imagenet.py:torchvision").model))
  torch.save(mirror.float().state_dict(), folder / "googlenet.pth")  # as published: float32
  mirror.double()
  assert import_weights("torchvision", folder / "googlenet.pth", folder / "run") == 0
  return mirror, folder / "googlenet.pth", folder / "run"


def test_torchvision_state_dict_keys_and_shapes_are_torchvision_s(torchvision):
  state = torchvision[0].state_dict()
  assert len(state) == 364  # 59 conv units x 6, the aux heads' 2 x 2 linear layers, fc
  assert (
    sum(v.numel() for k, v in state.items() if "running" not in k and "num_b" not in k)
    == 13_004_888
  )
  assert tuple(state["inception3a.branch3.1.conv.weight"].shape) == (32, 16, 3, 3)  # the "5x5"
  assert tuple(state["aux1.conv.conv.weight"].shape) == (128, 512, 1, 1)
  assert tuple(state["aux2.fc1.weight"].shape) == (1024, 2048)
  assert tuple(state["fc.weight"].shape) == (1000, 1024)
  assert "inception4e.branch4.1.bn.running_var" in state


def test_import_writes_a_workdir_as_a_run_leaves_it(torchvision):
  _, weights, workdir = torchvision
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["dtype"] == "float32" and config["model"]["aux_heads"] is True
  assert config["model"]["input_transform"] == "symmetric"
  (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert record["split"] == "import" and record["source"] == "torchvision"
  assert record["file"] == str(weights.absolute()) and len(record["sha256"]) == 64
  assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["0"]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_torchvision_eval_logits_match_pytorch(torchvision, size):
  mirror, _, workdir = torchvision
  config, variables = restored(workdir)
  images = pixels(size)
  ours = jax.jit(lambda v, x: build_model(config.model).apply(v, x).logits)(variables, images)
  with torch.no_grad():
    theirs = mirror(imagenet_normalised(images))
  assert_close(ours, theirs.numpy())


def test_torchvision_train_mode_aux_logits_match_pytorch(torchvision):
  """Training mode (BatchNorm on batch statistics), dropout off: main and both aux heads."""
  mirror, _, workdir = torchvision
  config, variables = restored(workdir)
  model = with_dropout_off(config)
  images = pixels((224, 224), count=4)
  (logits, aux), _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
    variables, images
  )
  train_mirror = MirrorGoogLeNet(model, transform_input=True).double()
  train_mirror.load_state_dict(mirror.state_dict())
  with torch.no_grad():
    theirs = train_mirror.train()(imagenet_normalised(images))
  assert len(aux) == 2
  for ours, reference in zip(
    (logits, *aux), theirs, strict=True
  ):  # main, then the heads on 4a and 4d
    assert_close(ours, reference.numpy())


def test_state_dict_without_aux_heads_imports_a_network_without_them(load, tmp_path):
  mirror = random_mirror(build_model(load("imagenet.py:torchvision").model), seed=1)
  state = {k: v.float() for k, v in mirror.state_dict().items() if not k.startswith("aux")}
  torch.save(state, tmp_path / "no_aux.pth")
  assert import_weights("torchvision", tmp_path / "no_aux.pth", tmp_path / "run") == 0
  config, variables = restored(tmp_path / "run")
  assert config.model.aux_heads is False and "aux_4a" not in variables["params"]
  images = pixels((224, 224))
  ours = jax.jit(lambda v, x: build_model(config.model).apply(v, x).logits)(variables, images)
  with torch.no_grad():
    assert_close(ours, mirror(imagenet_normalised(images)).numpy())


def test_safetensors_and_legacy_pth_import_the_same_weights(torchvision, tmp_path):
  from safetensors.torch import save_file

  mirror, _, workdir = torchvision
  state = {k: v.float().contiguous() for k, v in mirror.state_dict().items()}
  save_file(state, tmp_path / "googlenet.safetensors")
  torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
  expected = jax.tree.leaves(restored(workdir)[1])
  for name in ("googlenet.safetensors", "legacy.pth"):
    assert import_weights("torchvision", tmp_path / name, tmp_path / name.split(".")[0]) == 0
    got = jax.tree.leaves(restored(tmp_path / name.split(".")[0])[1])
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_predict_agrees_with_pytorch_top5(torchvision, tmp_path, capsys):
  mirror, _, workdir = torchvision
  rng = np.random.default_rng(3)
  paths = []
  for i, (height, width) in enumerate([(300, 260), (180, 240), (256, 256)]):
    path = tmp_path / f"image{i}.{'png' if i % 2 else 'jpg'}"
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    paths.append(str(path))
  capsys.readouterr()
  assert main(["predict", "--workdir", str(workdir), "--json", *paths]) == 0
  results = json.loads(capsys.readouterr().out)
  config = load_workdir_config(workdir)
  names = class_names(config.data)
  seen = np.stack([eval_image_file(p, 224, config.data.eval_crop_fraction) for p in paths])
  with torch.no_grad():
    probabilities = torch.softmax(mirror(imagenet_normalised(seen)), -1)
  for result, path, row in zip(results, paths, probabilities, strict=True):
    assert result["image"] == path
    top = torch.topk(row, 5)
    assert [entry["class"] for entry in result["top"]] == top.indices.tolist()
    np.testing.assert_allclose([e["probability"] for e in result["top"]], top.values, rtol=1e-4)
    assert [entry["label"] for entry in result["top"]] == [names[c] for c in top.indices]
  assert names[0] == "tench, Tinca tinca" and len(names) == 1000


def test_predict_prints_names_and_probabilities(torchvision, tmp_path, capsys):
  path = tmp_path / "x.png"
  Image.fromarray(np.full((240, 240, 3), 128, np.uint8)).save(path)
  assert main(["predict", "--workdir", str(torchvision[2]), "--top", "3", str(path)]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == str(path) and len(lines) == 4
  assert lines[1].lstrip().startswith("1.") and "%" in lines[1] and "(class " in lines[1]


def test_predict_names_an_unreadable_image(torchvision, tmp_path, capsys):
  bad = tmp_path / "notes.jpg"
  bad.write_text("not an image")
  assert main(["predict", "--workdir", str(torchvision[2]), str(bad)]) == 2
  err = capsys.readouterr().err
  assert str(bad) in err and "decode" in err and "Traceback" not in err


# ------------------------------------------------------------------------ BVLC


@pytest.fixture(scope="module")
def bvlc(tmp_path_factory):
  """Random BVLC GoogLeNet blobs written as a (V1-format) caffemodel and imported."""
  folder = tmp_path_factory.mktemp("bvlc")
  blobs = random_bvlc_blobs(0)
  write_caffemodel(folder / "bvlc_googlenet.caffemodel", blobs, "v1")
  assert import_weights("bvlc", folder / "bvlc_googlenet.caffemodel", folder / "run") == 0
  return BVLCReference(blobs).eval(), folder / "run"


def test_bvlc_import_records_caffe_s_input(bvlc):
  config = load_workdir_config(bvlc[1])
  assert config.model.input_transform == "caffe_bgr" and config.model.norm == "lrn"
  assert config.model.kernel_sizes == (1, 3, 5) and config.model.aux_heads is True


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bvlc_eval_logits_match_the_caffe_reference(bvlc, size):
  reference, workdir = bvlc
  config, variables = restored(workdir)
  images = pixels(size, seed=1)
  ours = jax.jit(lambda v, x: build_model(config.model).apply(v, x).logits)(variables, images)
  with torch.no_grad():
    theirs = reference.double()(caffe_input(images).double())
  assert_close(ours, theirs.numpy())


def test_bvlc_train_mode_aux_logits_match_the_caffe_reference(bvlc):
  reference, workdir = bvlc
  config, variables = restored(workdir)
  model = with_dropout_off(config)
  images = pixels((224, 224), seed=2)
  logits, aux = jax.jit(
    lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(0)})
  )(variables, images)
  with torch.no_grad():
    theirs = reference.double()(caffe_input(images).double(), aux=True)
  for ours, want in zip((logits, *aux), theirs, strict=True):
    assert_close(ours, want.numpy())


def test_v2_caffemodel_imports_the_same_weights(bvlc, tmp_path):
  write_caffemodel(tmp_path / "v2.caffemodel", random_bvlc_blobs(0), "v2")
  assert import_weights("bvlc", tmp_path / "v2.caffemodel", tmp_path / "run") == 0
  got, expected = (jax.tree.leaves(restored(w)[1]) for w in (tmp_path / "run", bvlc[1]))
  assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


# ------------------------------------------------------------- bad input


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(capsys, source, weights, workdir, *phrases):
  before = _tree(workdir.parent)
  assert import_weights(source, weights, workdir) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err and err.count("error:") == 1
  for phrase in phrases:
    assert phrase in err, err
  assert _tree(workdir.parent) == before  # nothing written or overwritten
  return err


def test_another_network_s_state_dict_is_refused(tmp_path, capsys):
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
  torch.save(net.state_dict(), tmp_path / "other.pth")
  _refused(
    capsys,
    "torchvision",
    tmp_path / "other.pth",
    tmp_path / "run",
    "does not match",
    "conv1.conv.weight: (64, 3, 7, 7) needed",
    "0.weight: (8, 3, 3, 3)",
    "not part of this network",
  )


def test_missing_and_misshaped_tensors_are_listed(torchvision, tmp_path, capsys):
  state = {k: v.float() for k, v in torchvision[0].state_dict().items()}
  del state["inception4b.branch2.1.bn.running_var"]
  state["fc.weight"] = torch.zeros(10, 1024)
  torch.save(state, tmp_path / "broken.pth")
  _refused(
    capsys,
    "torchvision",
    tmp_path / "broken.pth",
    tmp_path / "run",
    "1 of the network's",
    "inception4b.branch2.1.bn.running_var: (224,) needed",
    "fc.weight: (10, 1024) in the file, (1000, 1024) needed for classifier/kernel",
  )


def test_truncated_files_are_refused(torchvision, tmp_path, capsys):
  data = torchvision[1].read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
  _refused(capsys, "torchvision", tmp_path / "cut.pth", tmp_path / "run", "truncated")
  write_caffemodel(tmp_path / "full.caffemodel", random_bvlc_blobs(1, aux=False), "v1")
  data = (tmp_path / "full.caffemodel").read_bytes()
  (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) // 2])
  _refused(capsys, "bvlc", tmp_path / "cut.caffemodel", tmp_path / "run2", "truncated")


def test_a_torchvision_file_is_not_taken_for_a_caffemodel(torchvision, tmp_path, capsys):
  _refused(capsys, "bvlc", torchvision[1], tmp_path / "run", "not a Caffe model")


def test_a_workdir_that_holds_a_run_is_left_alone(torchvision, tmp_path, capsys):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 3}\n')
  _refused(capsys, "torchvision", torchvision[1], tmp_path / "run", "not empty")
