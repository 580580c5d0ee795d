"""Reading PyTorch state dicts (.pth) with no PyTorch installed, and without running the file.

torchvision's GoogLeNet weights are a pickled state dict; torch.load needs PyTorch, and a pickle
may call any Python callable it names. Here only the globals that rebuild tensors are resolved,
to stand-ins that record where each tensor lies in its storage (anything else is refused before it
can run); numpy then cuts the arrays from the raw storages. Both formats of torch/serialization.py
are read: the zip (torch >= 1.6) and the legacy stream of torchvision's 2019 files.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
import zlib
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from inception_jax.errors import ConfigError, read_input_file

_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER and PROTOCOL_VERSION
_PROTOCOL = 1001

_DTYPES = {
  name: np.dtype(kind)
  for name, kind in [
    ("float64", np.float64),
    ("float32", np.float32),
    ("float16", np.float16),
    ("bfloat16", ml_dtypes.bfloat16),
    ("int64", np.int64),
    ("int32", np.int32),
    ("int16", np.int16),
    ("int8", np.int8),
    ("uint64", np.uint64),
    ("uint32", np.uint32),
    ("uint16", np.uint16),
    ("uint8", np.uint8),
    ("bool", np.bool_),
  ]
}
# torch's globals that stand for a dtype: the dtypes themselves (torch.uint16, named by
# _rebuild_tensor_v3) and the storage classes of persistent ids (torch 2 names its byte storage
# torch.storage.UntypedStorage).
_TORCH_DTYPES = {
  **{name: name for name in _DTYPES},
  "DoubleStorage": "float64",
  "FloatStorage": "float32",
  "HalfStorage": "float16",
  "BFloat16Storage": "bfloat16",
  "LongStorage": "int64",
  "IntStorage": "int32",
  "ShortStorage": "int16",
  "CharStorage": "int8",
  "ByteStorage": "uint8",
  "BoolStorage": "bool",
  "UntypedStorage": "uint8",
}


class _Storage(NamedTuple):
  key: str
  dtype: str
  offset: int  # bytes; non-zero only for the legacy format's storage views


class _Tensor(NamedTuple):
  key: str
  dtype: str
  offset: int  # bytes
  size: tuple[int, ...]
  strides: tuple[int, ...]  # bytes


# Stand-ins for torch._utils': (storage, offset, size, stride, requires_grad, hooks, ...).
def _rebuild_tensor_v3(
  storage: _Storage,
  offset: int,
  size: Any,
  stride: Any,
  _requires_grad: Any,
  _hooks: Any,
  dtype: str,
  *_metadata: Any,
) -> _Tensor:
  itemsize = _DTYPES[dtype].itemsize
  return _Tensor(
    storage.key,
    dtype,
    storage.offset + offset * itemsize,
    tuple(size),
    tuple(itemsize * step for step in stride),
  )


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
  return _rebuild_tensor_v3(storage, offset, size, stride, None, None, storage.dtype)


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
  return data


_REBUILDS = {
  "_rebuild_tensor": _rebuild_tensor,
  "_rebuild_tensor_v2": _rebuild_tensor,
  "_rebuild_tensor_v3": _rebuild_tensor_v3,
  "_rebuild_parameter": _rebuild_parameter,
  "_rebuild_parameter_with_state": _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals of a state dict of tensors; records the storages it meets."""

  def __init__(self, file: io.BytesIO, path: str):
    super().__init__(file, encoding="utf-8")
    self.path = path
    self.storages: dict[str, tuple[str, int]] = {}  # key -> (dtype, element count)

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in _REBUILDS:
      rebuild = _REBUILDS[name]
      return lambda *args: rebuild(*args)  # a fresh function: the pickle's BUILD cannot alter ours
    if module in ("torch", "torch.storage") and name in _TORCH_DTYPES:
      return _TORCH_DTYPES[name]  # a dtype's name: a str, which the pickle cannot call or alter
    raise ConfigError(
      f"{self.path!r} refers to {module}.{name}, which is not part of a tensor, so it is not "
      f"loaded: only state dicts of tensors are read. Was it saved with torch.save(model)? "
      f"Save the weights with torch.save(model.state_dict(), path) instead."
    )

  def persistent_load(self, pid: Any) -> _Storage:
    if not (
      isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[1] in _DTYPES
    ):
      raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
    _, dtype, key, _location, count, *view = pid
    self.storages.setdefault(key, (dtype, count))
    offset = view[0][1] if view and view[0] else 0  # legacy view: (view_key, offset, size)
    return _Storage(key, dtype, offset * _DTYPES[dtype].itemsize)


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Name -> array for a state dict that torch.save wrote (zip or legacy format)."""
  path = os.fspath(path)
  content = read_input_file(path, "the PyTorch weights", "check the path, or download the file")
  try:
    if content.startswith(b"PK\x03\x04"):
      state, storages, data, byteorder = _read_zip(content, path)
    else:
      state, storages, data, byteorder = _read_legacy(content, path)
    return _arrays(state, storages, data, byteorder, path)
  except ConfigError:
    raise
  except (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
  ) as error:
    raise ConfigError(
      f"{path!r} is truncated or damaged ({type(error).__name__}: {error}); download it again."
    ) from None


def _not_pytorch(path: str) -> ConfigError:
  return ConfigError(
    f"{path!r} is not a PyTorch weights file (neither torch.save's zip format "
    f"nor its legacy one); pass the .pth file that torch.save wrote."
  )


def _read_zip(content: bytes, path: str) -> tuple[Any, dict, dict[str, bytes], str]:
  with zipfile.ZipFile(io.BytesIO(content)) as archive:
    names = archive.namelist()
    pickled = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
    if pickled is None:
      raise _not_pytorch(path)
    prefix = pickled[: -len("data.pkl")]
    byteorder = "little"  # torch's default for files without the record
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode()
    unpickler = _Unpickler(io.BytesIO(archive.read(pickled)), path)
    state = unpickler.load()
    data = {key: archive.read(f"{prefix}data/{key}") for key in unpickler.storages}
  return state, unpickler.storages, data, byteorder


def _read_legacy(content: bytes, path: str) -> tuple[Any, dict, dict[str, bytes], str]:
  stream = io.BytesIO(content)
  try:
    magic = _Unpickler(stream, path).load()
  except Exception:  # whatever these bytes are, they do not start with torch's magic number
    raise _not_pytorch(path) from None
  if not (isinstance(magic, int) and magic == _MAGIC):
    raise _not_pytorch(path)
  if (version := _Unpickler(stream, path).load()) != _PROTOCOL:
    raise ValueError(f"protocol version {version!r}, not {_PROTOCOL}")
  _Unpickler(stream, path).load()  # sys_info: sizes of C types; the storages are little-endian
  unpickler = _Unpickler(stream, path)
  state = unpickler.load()
  data = {}
  for key in _Unpickler(stream, path).load():
    count = stream.read(8)
    if len(count) < 8:
      raise EOFError(f"the file ends before storage {key}")
    itemsize = _DTYPES[unpickler.storages[key][0]].itemsize
    data[key] = stream.read(int.from_bytes(count, "little") * itemsize)
  return state, unpickler.storages, data, "little"


def _arrays(
  state: Any,
  storages: dict[str, tuple[str, int]],
  data: dict[str, bytes],
  byteorder: str,
  path: str,
) -> dict[str, np.ndarray]:
  """Checks that `state` is a state dict of tensors and cuts each one from its storage."""
  if not isinstance(state, dict):
    found = "a single tensor" if isinstance(state, _Tensor) else f"a {type(state).__name__}"
    raise ConfigError(
      f"{path!r} holds {found}, not a state dict: only state dicts of tensors "
      f"are read; save one with torch.save(model.state_dict(), path)."
    )
  for name, value in state.items():
    if not (isinstance(name, str) and isinstance(value, _Tensor)):
      kind = "tensor" if isinstance(value, _Tensor) else type(value).__name__
      raise ConfigError(
        f"{path!r} maps {name!r} to a {kind}: only state dicts of tensors "
        f"(name -> tensor) are read. A checkpoint that keeps the state dict under "
        f"a key: save that alone, with torch.save(checkpoint[key], path)."
      )
  for key, (dtype, count) in storages.items():
    if len(data[key]) < count * _DTYPES[dtype].itemsize:
      raise EOFError(
        f"storage {key} holds {len(data[key])} bytes of the "
        f"{count * _DTYPES[dtype].itemsize} declared"
      )
  if byteorder not in ("little", "big"):
    raise ValueError(f"byte order {byteorder!r}")
  arrays = {}
  for name, tensor in state.items():
    array = np.ndarray(
      tensor.size, _DTYPES[tensor.dtype], data[tensor.key], tensor.offset, tensor.strides
    ).copy()  # numpy checks that the view fits in the storage
    arrays[name] = array if byteorder == sys.byteorder else array.byteswap()
  return arrays
