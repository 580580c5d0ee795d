"""The paper's test-time crops and ensembles: window geometry, and averaging probabilities."""

import collections
import json
import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf
from helpers import STEPS, TINY_CONFIG

from inception_jax.data.crops import multi_crop
from inception_jax.main import main
from inception_jax.models import init_variables
from inception_jax.training import devices
from inception_jax.training.reporting import read_metrics
from inception_jax.training.steps import make_eval_step, stack_models

SIZE = 224


def _paper_windows(height: int, width: int) -> list[tuple[int, ...]]:
  """Section 7 written out: scales with the shorter side 256, 288, 320, 352; left, centre, right
  squares (top, centre, bottom for portrait); four corners, centre, whole square; mirrored."""
  windows = []
  for shorter in (256, 288, 320, 352):
    longer = round(max(height, width) * shorter / min(height, width))
    scaled = (longer, shorter) if height > width else (shorter, longer)
    for offset in (0, (longer - shorter) // 2, longer - shorter):
      top, left = (offset, 0) if height > width else (0, offset)
      far = shorter - SIZE
      for dy, dx in ((0, 0), (0, far), (far, 0), (far, far), (far // 2, far // 2)):
        windows.append((*scaled, top + dy, left + dx, SIZE))
      windows.append((*scaled, top, left, shorter))
  return [(*w, mirror) for mirror in (0, 1) for w in windows]


@pytest.mark.parametrize("height, width", [(300, 400), (400, 300)], ids=["landscape", "portrait"])
def test_the_144_windows_are_the_papers(height, width):
  image = tf.zeros([height, width, 3], tf.uint8)
  views, windows = multi_crop(image, SIZE, 144, 0.875)
  assert views.shape == (144, SIZE, SIZE, 3)
  got = collections.Counter(map(tuple, windows.numpy().tolist()))
  assert got == collections.Counter(_paper_windows(height, width))
  # Spelled out for the landscape image: 400 x 300 at shorter side 256 is 341 wide, and the
  # right-hand square starts at 341 - 256 = 85.
  if width > height:
    assert (256, 341, 0, 85, 256, 0) in got and (256, 341, 32, 85 + 32, SIZE, 1) in got


def test_ten_crops_are_the_corners_and_centre_and_their_mirrors():
  views, windows = multi_crop(tf.zeros([300, 400, 3], tf.uint8), SIZE, 10, 0.875)
  assert views.shape == (10, SIZE, SIZE, 3)
  scaled = (256, 341)  # the shorter side at 224 / 0.875
  corners = [(0, 0), (0, 341 - SIZE), (256 - SIZE, 0), (256 - SIZE, 341 - SIZE), (16, 58)]
  expected = [(*scaled, top, left, SIZE, mirror) for mirror in (0, 1) for top, left in corners]
  assert windows.numpy().tolist() == [list(w) for w in expected]


def test_views_hold_the_pixels_of_their_windows():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  views, windows = multi_crop(tf.constant(image), 8, 144, 1.0)
  views = views.numpy()
  for view, (height, width, top, left, side, mirror) in zip(views, windows.numpy(), strict=True):
    resized = tf.image.resize(image, [height, width], antialias=True).numpy()
    square = resized[top : top + side, left : left + side]
    if side != 8:
      square = tf.image.resize(square, [8, 8], antialias=True).numpy()
    expected = np.round(np.clip(square, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(view, expected[:, ::-1] if mirror else expected)


def test_ensembles_and_views_average_probabilities_not_logits(small):
  """Two models x three views: the eval step's loss and hits are those of the mean softmax."""
  model, variables = small
  other = init_variables(model, jax.random.key(1), (32, 32, 3))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 3, 32, 32, 3), dtype=np.uint8)
  labels = np.array([0, 3, 5, 9], np.int32)
  batch = {"image": images, "label": labels, "mask": np.ones(4, np.int32)}
  step = devices.parallel_eval(make_eval_step(model))
  sums, log_probs = step(stack_models([variables, other]), devices.put_batch(batch))
  sums = jax.tree.map(float, sums)

  apply = jax.jit(lambda v, x: model.apply(v, x, train=False).logits)
  logits = np.stack(
    [[np.asarray(apply(v, images[:, k])) for k in range(3)] for v in (variables, other)]
  ).astype(np.float64)  # [models, views, batch, classes]
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities = (probabilities / probabilities.sum(-1, keepdims=True)).mean(axis=(0, 1))
  expected_loss = -np.log(probabilities[np.arange(4), labels]).sum()
  assert sums["loss"] == pytest.approx(expected_loss, rel=1e-5)
  assert sums["top1"] == (probabilities.argmax(-1) == labels).sum()
  assert sums["count"] == 4
  np.testing.assert_allclose(np.exp(log_probs).reshape(4, -1), probabilities, rtol=1e-5)
  # Averaging logits instead would give another loss on these models.
  mean_logits = logits.mean(axis=(0, 1))
  log_softmax = mean_logits - np.log(np.exp(mean_logits).sum(-1, keepdims=True))
  assert abs(-log_softmax[np.arange(4), labels].sum() - expected_loss) > 1e-3 * expected_loss


def test_eval_with_144_crops_and_as_an_ensemble(tiny_run, tiny, tmp_path, capsys):
  """Through the command: one run at 1 and 144 crops, and an ensemble of the run with a copy of
  itself (averaging two equal softmaxes changes nothing)."""
  copy = shutil.copytree(tiny_run, tmp_path / "copy")

  def evaluate(*extra):
    args = ["eval", "--config", str(TINY_CONFIG), "--workdir", str(tiny_run), "--json"]
    assert main([*args, f"--config.data.dir={tiny['data.dir']}", *extra]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])

  one, many, pair = evaluate(), evaluate("--crops", "144"), evaluate("--workdir", str(copy))
  for result in (one, many, pair):
    assert result["count"] == 360 and 0 < result["top1"] <= result["top5"] <= 1
  assert one["step"] == many["step"] == STEPS and pair["step"] == [STEPS, STEPS]
  assert many["crops"] == 144 and many["loss"] != one["loss"]
  assert pair["top1"] == one["top1"] and pair["loss"] == pytest.approx(one["loss"], rel=1e-6)
  assert one["top1"] == read_metrics(tiny_run)[-1]["top1"]  # the run's own final evaluation


def test_an_ensemble_of_different_networks_is_refused(tiny_run, tmp_path, capsys):
  other = shutil.copytree(tiny_run, tmp_path / "other")
  config = json.loads((other / "config.json").read_text())
  config["model"]["module"] = "naive"
  (other / "config.json").write_text(json.dumps(config))
  assert main(["eval", "--workdir", str(tiny_run), "--workdir", str(other)]) == 2
  error = capsys.readouterr().err
  assert f"{other} cannot join an ensemble with {tiny_run}" in error
  assert "model.module ('naive' against 'reduced')" in error
