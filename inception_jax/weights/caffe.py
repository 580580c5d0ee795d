"""Reading Caffe models (.caffemodel) with no Caffe installed.

BVLC GoogLeNet is the one public set of weights for the paper's own network (LRN, true 5x5
convolutions, biases, no BatchNorm); torchvision's set is a different network. A .caffemodel is a
serialised protobuf `NetParameter`. We declare the few messages of Caffe's public caffe.proto that
hold the weights, with Caffe's field numbers, and let the protobuf package parse the file: no
protoc, no generated module, and every field we do not declare is skipped as unknown. Old files
(BVLC GoogLeNet, 2014) keep their layers in the deprecated V1 `layers` field with 4-D
num/channels/height/width blob shapes; newer ones use `layer` and `shape`; both are read.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from inception_jax.errors import ConfigError, read_input_file
from inception_jax.weights.sources import BVLC_GOOGLENET_URL

_F = descriptor_pb2.FieldDescriptorProto
# message -> (field, number, label, type, message type); from caffe.proto (proto2, package caffe).
# caffe.proto marks the repeated numbers [packed = true]; a parser reads packed or not alike.
_CAFFE_PROTO = {
  "BlobShape": [("dim", 1, _F.LABEL_REPEATED, _F.TYPE_INT64, None)],
  "BlobProto": [
    ("shape", 7, _F.LABEL_OPTIONAL, _F.TYPE_MESSAGE, ".caffe.BlobShape"),
    ("data", 5, _F.LABEL_REPEATED, _F.TYPE_FLOAT, None),
    ("double_data", 8, _F.LABEL_REPEATED, _F.TYPE_DOUBLE, None),
    ("num", 1, _F.LABEL_OPTIONAL, _F.TYPE_INT32, None),
    ("channels", 2, _F.LABEL_OPTIONAL, _F.TYPE_INT32, None),
    ("height", 3, _F.LABEL_OPTIONAL, _F.TYPE_INT32, None),
    ("width", 4, _F.LABEL_OPTIONAL, _F.TYPE_INT32, None),
  ],
  "LayerParameter": [
    ("name", 1, _F.LABEL_OPTIONAL, _F.TYPE_STRING, None),
    ("blobs", 7, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".caffe.BlobProto"),
  ],
  "V1LayerParameter": [
    ("name", 4, _F.LABEL_OPTIONAL, _F.TYPE_STRING, None),
    ("blobs", 6, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".caffe.BlobProto"),
  ],
  "NetParameter": [
    ("name", 1, _F.LABEL_OPTIONAL, _F.TYPE_STRING, None),
    ("layer", 100, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".caffe.LayerParameter"),
    ("layers", 2, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".caffe.V1LayerParameter"),
  ],
}


@functools.cache
def _net_parameter() -> type:
  """The NetParameter class, built once in a private pool (no clash with any other caffe.proto)."""
  file = descriptor_pb2.FileDescriptorProto(
    name="caffe_subset.proto", package="caffe", syntax="proto2"
  )
  for message, fields in _CAFFE_PROTO.items():
    declared = file.message_type.add(name=message)
    for name, number, label, kind, type_name in fields:
      field = declared.field.add(name=name, number=number, label=label, type=kind)
      if type_name:
        field.type_name = type_name
  pool = descriptor_pool.DescriptorPool()
  described = pool.AddSerializedFile(file.SerializeToString())
  return message_factory.GetMessageClass(described.message_types_by_name["NetParameter"])


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
  """Layer name -> its blobs as float32 arrays, for every layer of the file that has blobs.

  A blob is shaped by its `shape` where it has one, else by its legacy (num, channels, height,
  width) as stored: an old file's inner-product weight comes back [1, 1, out, in] and a bias
  [1, 1, 1, out]; the caller reshapes by element count (the order of the elements is Caffe's).
  """
  file_name = repr(os.fspath(path))
  source = f"{BVLC_GOOGLENET_URL} (BVLC GoogLeNet's) or the model's own page"
  fix = f"download it again from {source}"
  content = read_input_file(
    path, "the Caffe model", f"check the path, or download it from {source}"
  )
  net = _net_parameter()()
  try:
    net.ParseFromString(content)
  except DecodeError as error:
    raise ConfigError(
      f"{file_name} is not a Caffe model (.caffemodel) or is truncated ({error}): {fix}."
    ) from None
  layers: dict[str, list[np.ndarray]] = {}
  for layer in [*net.layers, *net.layer]:
    if not layer.blobs:
      continue
    if layer.name in layers:
      raise ConfigError(
        f"{file_name} has two layers named {layer.name!r} with weights; "
        f"a Caffe model names each layer once: {fix}."
      )
    layers[layer.name] = [
      _array(blob, f"{file_name}: layer {layer.name!r} blob {index}", fix)
      for index, blob in enumerate(layer.blobs)
    ]
  if not layers:
    raise ConfigError(
      f"{file_name} holds no layer with weights, so it is not a trained Caffe "
      f"model (.caffemodel; a .prototxt only describes the network): {fix}."
    )
  return layers


def _array(blob, where: str, fix: str) -> np.ndarray:
  """One blob's values (float, else double) in its declared shape, or why they do not fit it."""
  if blob.HasField("shape"):
    shape = tuple(blob.shape.dim)
  else:
    shape = (blob.num, blob.channels, blob.height, blob.width)
  values = blob.data if len(blob.data) else blob.double_data
  array = np.asarray(values, np.float32)  # upb's containers convert without a Python loop
  if array.size != np.prod(shape, dtype=np.int64):
    raise ConfigError(
      f"{where} holds {array.size} values for the shape {shape}; the file is damaged: {fix}."
    )
  return array.reshape(shape)
