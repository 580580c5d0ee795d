"""An independent reference for BVLC GoogLeNet: its file format and its network, by hand.

Nothing here imports inception_jax, so that a mistake in our reader or in our port cannot hide by
being made twice. `write_caffemodel` encodes the protobuf wire format itself (varints, tags,
length-delimited fields, packed floats) from the field numbers of Caffe's public caffe.proto,
rather than through the protobuf package our reader uses. `BVLCReference` is BVLC's
deploy.prototxt (and train_val.prototxt's auxiliary heads) written in PyTorch, the way Caffe
computes it: ceil-mode pooling, across-channel LRN, biases, true 5x5 convolutions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Inception modules, paper Table 1 / deploy.prototxt: input channels, then the widths of
# 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj.
INCEPTION = {
  "3a": (192, 64, 96, 128, 16, 32, 32),
  "3b": (256, 128, 128, 192, 32, 96, 64),
  "4a": (480, 192, 96, 208, 16, 48, 64),
  "4b": (512, 160, 112, 224, 24, 64, 64),
  "4c": (512, 128, 128, 256, 24, 64, 64),
  "4d": (512, 112, 144, 288, 32, 64, 64),
  "4e": (528, 256, 160, 320, 32, 128, 128),
  "5a": (832, 256, 160, 320, 32, 128, 128),
  "5b": (832, 384, 192, 384, 48, 128, 128),
}
# The auxiliary heads (train_val.prototxt): on 4a's and 4d's outputs.
AUX = {"loss1": ("4a", 512), "loss2": ("4d", 528)}
# BVLC's train_val.prototxt, transform_param: mean_value 104, 117, 123 (BGR order), no scale.
BGR_MEAN = (104.0, 117.0, 123.0)

# V1LayerParameter.LayerType values, and the LayerParameter type strings that replaced them.
_V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Pooling": 17, "ReLU": 18, "Data": 5}


def bvlc_layer_shapes(num_classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
  """Every BVLC GoogLeNet layer with weights -> [weight shape, bias shape], in train_val's order.

  Convolutions are [out, in, kh, kw], inner products [out, in] (Caffe's and torch's layout).
  """
  shapes: dict[str, list[tuple[int, ...]]] = {}

  def conv(name, c_in, c_out, kernel):
    shapes[name] = [(c_out, c_in, kernel, kernel), (c_out,)]

  def fc(name, c_in, c_out):
    shapes[name] = [(c_out, c_in), (c_out,)]

  conv("conv1/7x7_s2", 3, 64, 7)
  conv("conv2/3x3_reduce", 64, 64, 1)
  conv("conv2/3x3", 64, 192, 3)
  for module, (c_in, c1, c3r, c3, c5r, c5, cp) in INCEPTION.items():
    prefix = f"inception_{module}/"
    conv(prefix + "1x1", c_in, c1, 1)
    conv(prefix + "3x3_reduce", c_in, c3r, 1)
    conv(prefix + "3x3", c3r, c3, 3)
    conv(prefix + "5x5_reduce", c_in, c5r, 1)
    conv(prefix + "5x5", c5r, c5, 5)
    conv(prefix + "pool_proj", c_in, cp, 1)
    for head, (source, channels) in AUX.items():
      if source == module:
        conv(f"{head}/conv", channels, 128, 1)
        fc(f"{head}/fc", 128 * 4 * 4, 1024)
        fc(f"{head}/classifier", 1024, num_classes)
  fc("loss3/classifier", 1024, num_classes)
  return shapes


def random_bvlc_blobs(
  seed: int, num_classes: int = 1000, aux: bool = True
) -> dict[str, list[np.ndarray]]:
  """Random float32 weights, He-scaled (std sqrt(2 / fan_in)), so activations stay O(1..100)."""
  rng = np.random.default_rng(seed)
  blobs = {}
  for name, (weight, bias) in bvlc_layer_shapes(num_classes).items():
    if not aux and name.startswith(tuple(AUX)):
      continue
    fan_in = int(np.prod(weight[1:]))
    blobs[name] = [
      (rng.standard_normal(weight) * np.sqrt(2 / fan_in)).astype(np.float32),
      (rng.standard_normal(bias) * 0.1).astype(np.float32),
    ]
  return blobs


def caffe_input(images: np.ndarray) -> torch.Tensor:
  """uint8 RGB NHWC images -> what Caffe fed BVLC GoogLeNet: float32 NCHW, BGR, minus the mean."""
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected uint8 RGB images [N, H, W, 3], got {images.dtype} {images.shape}")
  bgr = images[..., ::-1].astype(np.float32) - np.array(BGR_MEAN, np.float32)
  return torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)))


# --- The protobuf wire format, by hand -------------------------------------------------------


def varint(value: int) -> bytes:
  """A base-128 varint, least significant group first (non-negative values only)."""
  out = bytearray()
  while True:
    low, value = value & 0x7F, value >> 7
    out.append(low | (0x80 if value else 0))
    if not value:
      return bytes(out)


def varint_field(number: int, value: int) -> bytes:
  """Field `number`, wire type 0 (int32, int64, enum)."""
  return varint(number << 3) + varint(value)


def length_delimited(number: int, payload: bytes | str) -> bytes:
  """Field `number`, wire type 2 (string, message, packed repeated scalars)."""
  payload = payload.encode() if isinstance(payload, str) else payload
  return varint(number << 3 | 2) + varint(len(payload)) + payload


def _blob(array: np.ndarray, legacy: bool) -> bytes:
  """A BlobProto: the legacy num/channels/height/width (1..4 padded with leading 1s), or shape."""
  if legacy:
    dims = (1,) * (4 - array.ndim) + array.shape
    shape = b"".join(
      varint_field(number, dim) for number, dim in zip((1, 2, 3, 4), dims, strict=True)
    )
  else:
    shape = length_delimited(7, length_delimited(1, b"".join(varint(d) for d in array.shape)))
  return shape + length_delimited(5, np.ascontiguousarray(array, "<f4").tobytes())


def _layer(
  name: str,
  kind: str,
  bottoms: Sequence[str],
  tops: Sequence[str],
  blobs: Sequence[np.ndarray],
  v1: bool,
) -> bytes:
  """A V1LayerParameter (v1) or LayerParameter, with one field our reader must skip."""
  if v1:  # bottom 2, top 3, name 4, type 5 (enum), blobs 6, blobs_lr 7 (unpacked floats)
    fields = [length_delimited(2, b) for b in bottoms] + [length_delimited(3, t) for t in tops]
    fields += [length_delimited(4, name), varint_field(5, _V1_TYPES[kind])]
    fields += [length_delimited(6, _blob(blob, legacy=True)) for blob in blobs]
    fields += [varint(7 << 3 | 5) + np.float32(lr).tobytes() for lr in (1, 2)[: len(blobs)]]
  else:  # name 1, type 2 (string), bottom 3, top 4, param 6 (ParamSpec, lr_mult 3), blobs 7
    fields = [length_delimited(1, name), length_delimited(2, kind)]
    fields += [length_delimited(3, b) for b in bottoms] + [length_delimited(4, t) for t in tops]
    fields += [length_delimited(6, varint(3 << 3 | 5) + np.float32(1).tobytes()) for _ in blobs]
    fields += [length_delimited(7, _blob(blob, legacy=False)) for blob in blobs]
  return b"".join(fields)


def write_caffemodel(
  path: str | os.PathLike, layers: Mapping[str, Sequence[np.ndarray]], format: str
) -> None:
  """Writes `layers` (name -> blobs) as a .caffemodel: "v1" as BVLC's 2014 files, or "v2".

  v1 puts the layers in NetParameter.layers (2) with V1 enum types and legacy 4-D blob shapes
  ([1, 1, out, in] for inner-product weights, [1, 1, 1, out] for biases); v2 in
  NetParameter.layer (100) with string types and BlobShape. 4-D weights are convolutions, others
  inner products. A Data layer, a ReLU and a Pooling layer (no blobs) come along, as in real
  files; the layers are chained one after the other (the reader does not look at the wiring).
  """
  if format not in ("v1", "v2"):
    raise ValueError(f"format must be 'v1' or 'v2', not {format!r}")
  v1, number = format == "v1", 2 if format == "v1" else 100
  encoded = [_layer("data", "Data", [], ["data", "label"], [], v1)]
  previous = "data"
  for index, (name, blobs) in enumerate(layers.items()):
    kind = "Convolution" if np.ndim(blobs[0]) == 4 else "InnerProduct"
    encoded.append(_layer(name, kind, [previous], [name], [np.asarray(b) for b in blobs], v1))
    previous = name
    if index == 0:
      encoded.append(_layer("relu", "ReLU", [name], [name], [], v1))
      encoded.append(_layer("pool", "Pooling", [name], ["pool"], [], v1))
      previous = "pool"
  content = length_delimited(1, "GoogleNet") + b"".join(
    length_delimited(number, layer) for layer in encoded
  )
  with open(path, "wb") as file:
    file.write(content)


# --- The network --------------------------------------------------------------------------------


def _max_pool(x: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
  """Caffe's pooling rounds the output size up (ceil), keeping windows that start inside."""
  return F.max_pool2d(x, kernel, stride, padding, ceil_mode=True)


def _lrn(x: torch.Tensor) -> torch.Tensor:
  """Caffe's LRN (across channels, local_size 5, alpha 1e-4, beta 0.75, k 1).

  Caffe's scale is k + alpha / size * (sum of squares over the window, zero padded);
  torch's local_response_norm averages the zero-padded squares, which is the same.
  """
  return F.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)


class BVLCReference(nn.Module):
  """BVLC GoogLeNet in PyTorch (NCHW), from a blobs dict such as `random_bvlc_blobs` gives.

  Blobs are reshaped by element count to `bvlc_layer_shapes`, so a reader's legacy 4-D shapes
  also load; the auxiliary heads exist where the dict has `loss1/conv`. Dropout is off: this is
  the network at test time. Cast with `.to(torch.float64)` for a tighter comparison.
  """

  def __init__(self, blobs: Mapping[str, Sequence[np.ndarray]]):
    super().__init__()
    num_classes = np.size(blobs["loss3/classifier"][1])
    self.aux = "loss1/conv" in blobs
    self.layers = nn.ModuleDict()
    for name, (weight, bias) in bvlc_layer_shapes(num_classes).items():
      if name.startswith(tuple(AUX)) and not self.aux:
        continue
      if len(weight) == 4:
        stride = 2 if name == "conv1/7x7_s2" else 1
        layer = nn.Conv2d(weight[1], weight[0], weight[2], stride, padding=weight[2] // 2)
      else:
        layer = nn.Linear(weight[1], weight[0])
      with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(blobs[name][0], np.float32).reshape(weight)))
        layer.bias.copy_(torch.from_numpy(np.asarray(blobs[name][1], np.float32).reshape(bias)))
      self.layers[name] = layer

  def tops(self, x: torch.Tensor, aux: bool = False) -> dict[str, torch.Tensor]:
    """Every named output, keyed as Caffe's top blobs (convolutions after their in-place ReLU)."""
    if aux and not self.aux:
      raise ValueError("these blobs have no auxiliary heads (no 'loss1/conv')")
    tops: dict[str, torch.Tensor] = {}

    def keep(name, value):
      tops[name] = value
      return value

    def conv(name, value):  # every convolution and hidden inner product is followed by ReLU
      return keep(name, F.relu(self.layers[name](value)))

    x = conv("conv1/7x7_s2", x)
    x = keep("pool1/3x3_s2", _max_pool(x, 3, 2))
    x = keep("pool1/norm1", _lrn(x))
    x = conv("conv2/3x3", conv("conv2/3x3_reduce", x))
    x = keep("conv2/norm2", _lrn(x))
    x = keep("pool2/3x3_s2", _max_pool(x, 3, 2))
    for module in INCEPTION:
      p = f"inception_{module}/"
      branches = [
        conv(p + "1x1", x),
        conv(p + "3x3", conv(p + "3x3_reduce", x)),
        conv(p + "5x5", conv(p + "5x5_reduce", x)),
        conv(p + "pool_proj", keep(p + "pool", _max_pool(x, 3, 1, 1))),
      ]
      x = keep(p + "output", torch.cat(branches, dim=1))
      if module in ("3b", "4e"):
        x = keep(f"pool{module[0]}/3x3_s2", _max_pool(x, 3, 2))
      for head, (source, _) in AUX.items():
        if aux and module == source:  # train_val.prototxt; dropout (0.7) off
          pooled = keep(f"{head}/ave_pool", F.avg_pool2d(x, 5, 3, ceil_mode=True))
          hidden = conv(f"{head}/fc", conv(f"{head}/conv", pooled).flatten(1))  # channel-major
          keep(f"{head}/classifier", self.layers[f"{head}/classifier"](hidden))
    # deploy.prototxt: 7x7/1 average pool (the whole 7x7 map at 224); global, so any size runs.
    x = keep("pool5/7x7_s1", x.mean(dim=(2, 3), keepdim=True))
    keep("loss3/classifier", self.layers["loss3/classifier"](x.flatten(1)))
    return tops

  def forward(
    self, x: torch.Tensor, aux: bool = False
  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [N, classes]; with aux=True, (logits, aux1 logits from 4a, aux2 logits from 4d)."""
    tops = self.tops(x, aux)
    if not aux:
      return tops["loss3/classifier"]
    return tops["loss3/classifier"], tops["loss1/classifier"], tops["loss2/classifier"]
