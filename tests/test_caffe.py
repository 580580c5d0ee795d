"""Reading .caffemodel files, and the PyTorch reference for BVLC GoogLeNet that checks our port.

The files are written by tests/caffe_reference.py's hand encoder, not by the protobuf package
the reader uses, so that the reader's field numbers are checked against an independent writer.
"""

import numpy as np
import pytest
import torch
from caffe_reference import (
  BVLCReference,
  bvlc_layer_shapes,
  caffe_input,
  length_delimited,
  random_bvlc_blobs,
  varint_field,
  write_caffemodel,
)

from inception_jax.errors import ConfigError
from inception_jax.weights.caffe import read_caffemodel


@pytest.fixture(scope="module")
def blobs():
  return random_bvlc_blobs(0)


@pytest.fixture(scope="module")
def reference(blobs):
  return BVLCReference(blobs).eval()


@pytest.mark.parametrize("format", ["v1", "v2"])
def test_read_caffemodel_returns_every_layer_with_weights(tmp_path, blobs, format):
  path = tmp_path / f"{format}.caffemodel"
  write_caffemodel(path, blobs, format)
  read = read_caffemodel(path)
  assert list(read) == list(blobs)  # the Data, ReLU and Pooling layers have no blobs
  for name, written in blobs.items():
    assert len(read[name]) == len(written)
    for got, want in zip(read[name], written, strict=True):
      # v1: legacy num/channels/height/width as stored; v2: the shape as written.
      shape = (1,) * (4 - want.ndim) + want.shape if format == "v1" else want.shape
      assert got.dtype == np.float32 and got.shape == shape, name
      np.testing.assert_array_equal(got.ravel(), want.ravel())


def test_read_caffemodel_reads_double_data(tmp_path):
  values = np.array([[0.5, -1.25, 3.0], [1e-3, 2.0, -7.5]])  # [out=2, in=3]
  blob = b"".join(varint_field(n, d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 3), strict=True))
  blob += length_delimited(8, values.astype("<f8").tobytes())  # double_data, packed
  layer = length_delimited(4, "fc") + varint_field(5, 14) + length_delimited(6, blob)
  path = tmp_path / "double.caffemodel"
  path.write_bytes(length_delimited(2, layer))
  (weight,) = read_caffemodel(path)["fc"]
  assert weight.dtype == np.float32 and weight.shape == (1, 1, 2, 3)
  np.testing.assert_array_equal(weight[0, 0], values.astype(np.float32))


def test_read_caffemodel_rejects_a_blob_that_does_not_fit_its_shape(tmp_path):
  blob = length_delimited(7, length_delimited(1, bytes([2, 3])))  # shape [2, 3] ...
  blob += length_delimited(5, np.zeros(5, "<f4").tobytes())  # ... with 5 values
  path = tmp_path / "short.caffemodel"
  path.write_bytes(length_delimited(100, length_delimited(1, "conv") + length_delimited(7, blob)))
  with pytest.raises(ConfigError, match=r"'conv' blob 0 holds 5 values for the shape \(2, 3\)"):
    read_caffemodel(path)


def test_read_caffemodel_rejects_two_layers_of_one_name(tmp_path):
  blob = length_delimited(7, length_delimited(1, bytes([1]))) + length_delimited(5, bytes(4))
  layer = length_delimited(100, length_delimited(1, "fc") + length_delimited(7, blob))
  path = tmp_path / "twice.caffemodel"
  path.write_bytes(layer + layer)
  with pytest.raises(ConfigError, match="two layers named 'fc'"):
    read_caffemodel(path)


@pytest.mark.parametrize("damage", ["half", "random", "empty", "missing"])
def test_read_caffemodel_explains_a_bad_file(tmp_path, damage):
  path = tmp_path / "bvlc_googlenet.caffemodel"
  if damage != "missing":
    write_caffemodel(path, random_bvlc_blobs(1, num_classes=10, aux=False), "v1")
    content = path.read_bytes()
    path.write_bytes(
      {
        "half": content[: len(content) // 2],
        "random": np.random.default_rng(0).bytes(4096),
        "empty": b"",
      }[damage]
    )
  with pytest.raises(ConfigError) as error:
    read_caffemodel(path)
  message = str(error.value)
  assert str(path) in message and "http://dl.caffe.berkeleyvision.org/" in message
  corrupt = "is not a Caffe model (.caffemodel) or is truncated"
  empty = "holds no layer with weights"
  expected = {
    "half": [corrupt],
    "random": [corrupt, empty],  # random bytes may parse, into nothing
    "empty": [empty],
    "missing": ["No such file or directory"],
  }[damage]
  assert any(text in message for text in expected), message


def test_caffe_input_is_bgr_minus_the_mean():
  images = np.zeros((1, 2, 2, 3), np.uint8)
  images[..., 0], images[..., 2] = 200, 10  # R, B
  x = caffe_input(images)
  assert x.dtype == torch.float32 and x.shape == (1, 3, 2, 2)
  np.testing.assert_array_equal(x[0, :, 0, 0].numpy(), [10 - 104, 0 - 117, 200 - 123])


def test_bvlc_layer_shapes_follow_table_1():
  shapes = bvlc_layer_shapes()
  assert shapes["inception_4e/5x5"] == [(128, 32, 5, 5), (128,)]
  assert shapes["loss2/conv"] == [(128, 528, 1, 1), (128,)]
  assert shapes["loss1/fc"] == [(1024, 2048), (1024,)]
  main = sum(int(np.prod(s)) for n, b in shapes.items() if not n.startswith("loss") for s in b)
  assert main + 1024 * 1000 + 1000 == 6_998_552  # BVLC GoogLeNet without the aux heads


def test_reference_runs_at_224_with_deploy_prototxt_shapes(reference):
  images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
  with torch.no_grad():
    tops = reference.tops(caffe_input(images), aux=True)
    logits, aux1, aux2 = reference(caffe_input(images), aux=True)
  expected = {
    "conv1/7x7_s2": (64, 112, 112),
    "pool1/3x3_s2": (64, 56, 56),
    "conv2/3x3": (192, 56, 56),
    "pool2/3x3_s2": (192, 28, 28),
    "inception_3a/output": (256, 28, 28),
    "inception_3b/output": (480, 28, 28),
    "pool3/3x3_s2": (480, 14, 14),
    "inception_4a/output": (512, 14, 14),
    "inception_4b/output": (512, 14, 14),
    "inception_4c/output": (512, 14, 14),
    "inception_4d/output": (528, 14, 14),
    "inception_4e/output": (832, 14, 14),
    "pool4/3x3_s2": (832, 7, 7),
    "inception_5a/output": (832, 7, 7),
    "inception_5b/output": (1024, 7, 7),
    "pool5/7x7_s1": (1024, 1, 1),
    "loss1/ave_pool": (512, 4, 4),
    "loss1/conv": (128, 4, 4),
    "loss1/fc": (1024,),
    "loss2/ave_pool": (528, 4, 4),
    "loss2/conv": (128, 4, 4),
    "loss2/fc": (1024,),
  }
  assert {name: tuple(tops[name].shape[1:]) for name in expected} == expected
  for out in (logits, aux1, aux2):
    assert out.shape == (2, 1000) and torch.isfinite(out).all() and out.std() > 0
  torch.testing.assert_close(tops["loss3/classifier"], logits)


def test_reference_runs_at_other_sizes(reference):
  images = np.random.default_rng(1).integers(0, 256, (1, 227, 251, 3), dtype=np.uint8)
  with torch.no_grad():
    logits = reference(caffe_input(images))
  assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
