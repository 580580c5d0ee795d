"""read_pth against torch.save itself, in both its formats, and against files that must not load."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from inception_jax.errors import ConfigError
from inception_jax.weights.pth import read_pth

torch = pytest.importorskip("torch")

FORMATS = ["zip", "legacy"]


def save(obj, path, fmt: str):
  """torch.save in the zip format (torch >= 1.6) or the legacy one (torchvision's 2019 files)."""
  torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
  return path


def assert_same(arrays: dict, tensors: dict):
  assert list(arrays) == list(tensors)
  for name, tensor in tensors.items():
    assert arrays[name].dtype == tensor.numpy().dtype, name
    np.testing.assert_array_equal(arrays[name], tensor.numpy(), err_msg=name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_every_dtype_of_a_state_dict(tmp_path, fmt):
  generator = torch.Generator().manual_seed(0)
  tensors = {
    "f32": torch.randn(3, 4, generator=generator),
    "f16": torch.randn(5, generator=generator).half(),
    "f64": torch.randn(2, 2, generator=generator).double(),
    "num_batches_tracked": torch.tensor(7),  # 0-d int64, as BatchNorm keeps it
    "i32": torch.tensor([-1, 2**31 - 1], dtype=torch.int32),
    "i16": torch.tensor([-3, 4], dtype=torch.int16),
    "i8": torch.tensor([-128, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
    "mask": torch.tensor([True, False, True]),
    "u16": torch.tensor([1, 65535]).to(torch.uint16),  # pickled by _rebuild_tensor_v3
  }
  assert_same(read_pth(save(tensors, tmp_path / "w.pth", fmt)), tensors)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_bfloat16(tmp_path, fmt):
  tensor = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)).bfloat16()
  array = read_pth(save({"w": tensor}, tmp_path / "w.pth", fmt))["w"]
  assert array.dtype.name == "bfloat16"
  np.testing.assert_array_equal(array.astype(np.float32), tensor.float().numpy())


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_views_that_share_one_storage(tmp_path, fmt):
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  tensors = {
    "transposed": base.t(),
    "block": base[1:, 2:5],
    "row": base[2],
    "column": base[:, 3],
    "base": base,
  }
  arrays = read_pth(save(tensors, tmp_path / "w.pth", fmt))
  assert_same(arrays, tensors)
  assert all(array.flags.c_contiguous and array.flags.writeable for array in arrays.values())


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_a_module_state_dict_and_its_parameters(tmp_path, fmt):
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  model(torch.randn(2, 3, 8, 8))  # moves the running statistics and num_batches_tracked
  state = model.state_dict()
  assert hasattr(state, "_metadata")
  assert_same(read_pth(save(state, tmp_path / "state.pth", fmt)), state)
  parameters = dict(model.named_parameters())  # nn.Parameter: pickled by _rebuild_parameter
  arrays = read_pth(save(parameters, tmp_path / "parameters.pth", fmt))
  assert_same(arrays, {name: p.detach() for name, p in parameters.items()})


def test_respects_a_big_endian_byte_order_record(tmp_path):
  tensor = torch.tensor([1.5, -2.0, 3.25])
  little = save({"w": tensor}, tmp_path / "little.pth", "zip")
  big = tmp_path / "big.pth"
  with zipfile.ZipFile(little) as source, zipfile.ZipFile(big, "w") as target:
    for name in source.namelist():
      content = source.read(name)
      if name.endswith("/byteorder"):
        content = b"big"
      elif "/data/" in name and not name.endswith("serialization_id"):
        content = np.frombuffer(content, "<f4").astype(">f4").tobytes()
      target.writestr(name, content)
  np.testing.assert_array_equal(read_pth(big)["w"], tensor.numpy())


class _Runs:
  """Pickles as a call of `function(argument)`: what a malicious .pth would hold."""

  def __init__(self, function, argument):
    self.call = (function, (argument,))

  def __reduce__(self):
    return self.call


def write_torch_layout(payload: bytes, path, fmt: str):
  """`payload` as the object pickle of a file laid out like torch.save's."""
  if fmt == "zip":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", payload)
      archive.writestr("archive/byteorder", "little")
      archive.writestr("archive/version", "3\n")
  else:
    sys_info = {
      "protocol_version": 1001,
      "little_endian": True,
      "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    path.write_bytes(
      b"".join(
        [
          pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
          pickle.dumps(1001, protocol=2),
          pickle.dumps(sys_info, protocol=2),
          payload,
          pickle.dumps([], protocol=2),
        ]
      )
    )
  return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("call", ["os.system", "eval"])
def test_refuses_to_call_what_the_pickle_names(tmp_path, fmt, call):
  marker = tmp_path / "executed"
  runs = (
    _Runs(os.system, f"touch {marker}")
    if call == "os.system"
    else _Runs(eval, f"open({str(marker)!r}, 'w')")
  )
  payload = pickle.dumps({"weight": runs}, protocol=2)
  with pytest.raises(ConfigError, match="only state dicts of tensors are read") as error:
    read_pth(write_torch_layout(payload, tmp_path / "evil.pth", fmt))
  assert call.split(".")[-1] in str(error.value)
  assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_a_whole_pickled_module(tmp_path, fmt):
  model = torch.nn.Sequential(torch.nn.Linear(2, 2))
  with pytest.raises(ConfigError, match=r"torch\.save\(model\.state_dict\(\), path\)"):
    read_pth(save(model, tmp_path / "model.pth", fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_what_is_not_a_mapping_of_names_to_tensors(tmp_path, fmt):
  with pytest.raises(ConfigError, match="holds a list, not a state dict"):
    read_pth(save([torch.ones(2)], tmp_path / "list.pth", fmt))
  checkpoint = {"state_dict": {"w": torch.ones(2)}, "epoch": 3}
  with pytest.raises(ConfigError, match="maps 'state_dict' to a dict"):
    read_pth(save(checkpoint, tmp_path / "checkpoint.pth", fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kept", [0.05, 0.5])
def test_a_truncated_file_is_reported_as_damaged(tmp_path, fmt, kept):
  path = save({"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "w.pth", fmt)
  content = path.read_bytes()
  path.write_bytes(content[: int(len(content) * kept)])
  with pytest.raises(ConfigError, match="truncated or damaged.*download it again"):
    read_pth(path)


def test_random_bytes_are_not_a_pytorch_file(tmp_path):
  path = tmp_path / "noise.pth"
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(ConfigError, match="is not a PyTorch weights file"):
    read_pth(path)


def test_a_zip_without_data_pkl_is_not_a_pytorch_file(tmp_path):
  path = tmp_path / "other.zip"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("readme.txt", "hello")
  with pytest.raises(ConfigError, match="is not a PyTorch weights file"):
    read_pth(path)


def test_a_missing_file_says_so(tmp_path):
  with pytest.raises(ConfigError, match="No such file or directory.*check the path"):
    read_pth(tmp_path / "absent.pth")
