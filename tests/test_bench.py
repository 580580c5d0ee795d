"""The bench on the tiny network: real timings of ours (and of PyTorch where installed), its
files."""

import importlib
import importlib.util
import json
import os
import pathlib
import platform
import re

import jax
import pytest

from inception_jax.bench.cases import NETWORKS
from inception_jax.bench.run import markdown
from inception_jax.main import main
from inception_jax.models import build_model, init_variables
from inception_jax.training.devices import CPU_FEATURES, describe_line
from inception_jax.xla_flags import DEFAULT_XLA_FLAGS, apply_defaults

HAS_TORCH = importlib.util.find_spec("torch") is not None
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  argv = [
    "bench",
    "--networks",
    "tiny16",
    "--dtypes",
    "float32",
    "--batch-sizes",
    "8",
    "--steps",
    "3",
    "--warmup",
    "1",
    "--rounds",
    "2",
    "--torch-variants",
    "eager",
    "--pipeline-threads",
    "1",
    "--pipeline-seconds",
    "1",
    "--profile-steps",
    "1",
    "--out",
    str(out),
  ]
  assert main(argv) == 0
  return out, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_bench_times_train_and_eval_steps_and_writes_json_and_markdown(bench):
  _, results, report = bench
  ours = [r for r in results["rows"] if r["framework"] == "ours"]
  assert [(r["network"], r["dtype"], r["batch"], r["mode"]) for r in ours] == [
    ("tiny16", "float32", 8, "train"),
    ("tiny16", "float32", 8, "eval"),
  ]
  for row in ours:
    assert row["images_per_second"] > 0 and row["seconds_per_step"] > 0
    assert row["page_faults_per_step"] >= 0
    rounds = row["rounds_seconds_per_step"]  # --rounds 2: the reported step is their median
    assert len(rounds) == 2 and row["seconds_per_step"] == pytest.approx(sum(rounds) / 2)
    assert row["compile_seconds"] > 0 and row["memory_bytes"] > 0
    assert 0 < row["peak_share"] < 1
  train, evaluation = ours
  assert train["flops_per_image"] > 3 * evaluation["flops_per_image"]  # + backward, aux heads
  assert results["pipeline"][0]["images_per_second"] > 0
  assert "inception-jax bench --networks tiny16" in report
  assert "| tiny16 | float32 | 8 | train |" in report
  assert "| tf.data threads |" in report


def test_the_report_says_how_much_of_a_224_train_step_waits_for_input(bench):
  """With a 224x224 train step in the run (the GPU bench's), the report states the pipeline's
  share: measured rows of this run, the train step's rate replaced by a GPU-like one."""
  _, results, _ = bench
  (train,) = [r for r in results["rows"] if r["framework"] == "ours" and r["mode"] == "train"]
  step = {**train, "network": "torchvision224", "image_size": 224, "images_per_second": 7640.0}
  pipeline = [
    {"threads": 16, "images_per_second": 3051.0, "images_per_second_per_thread": 190.7},
    {"threads": 1, "images_per_second": 318.0, "images_per_second_per_thread": 318.0},
  ]
  report = markdown({**results, "rows": [*results["rows"], step], "pipeline": pipeline})
  assert "(torchvision224 float32 batch 8) runs 7,640 img/s" in report
  assert "the pipeline's 16 thread(s) give 3,051, so training would wait for input 60%" in report
  assert "At 191 img/s per thread, 41 thread(s) keep up." in report
  assert "wait for input" not in markdown(results)  # tiny16 only: no 224x224 step


def test_reports_name_the_cpus_generation_and_vector_extensions(bench):
  """Speed ratios depend on the CPU's generation, AVX-512 and AMX: every report's machine line
  names its family and model and says which extensions it has (where /proc/cpuinfo tells);
  saved results from before they were recorded still print."""
  machine = bench[1]["machine"]
  if os.path.exists("/proc/cpuinfo"):
    assert set(machine["cpu_features"]) <= set(CPU_FEATURES.values())
    assert ("AMX" in machine["cpu_features"]) != ("no AMX" in bench[2])
    if platform.machine() == "x86_64":  # ARM's /proc/cpuinfo names no family
      assert re.fullmatch(r"family \d+ model \d+", machine["cpu_generation"])
      assert f"{machine['processor']}, {machine['cpu_generation']}; " in bench[2]
  saved = {
    key: value for key, value in machine.items() if key not in ("cpu_features", "cpu_generation")
  }
  assert (
    describe_line(saved)
    == f"{saved['cpu_cores']} CPU cores ({saved['processor']}), jax {saved['jax']}"
  )


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra")
def test_bench_times_the_pytorch_peer_in_the_same_run(bench):
  _, results, report = bench
  theirs = [r for r in results["rows"] if r["framework"] == "pytorch"]
  assert [(r["mode"], r["variant"]) for r in theirs] == [("train", "eager"), ("eval", "eager")]
  assert all(r["images_per_second"] > 0 for r in theirs)
  assert "ours / eager" in report


def test_bench_profiles_where_each_steps_time_goes(bench):
  """Every part of ours is a known layer kind and pass; the report lays the parts side by side."""
  _, results, report = bench
  for row in results["rows"]:
    parts = row["profile"]
    assert all(seconds >= 0 for seconds in parts.values())
    assert parts["convolution, forward"] > 0
    if row["mode"] == "train":
      assert parts["convolution, backward"] > 0 and parts["BatchNorm, backward"] > 0
      assert parts["max pool, backward"] > 0
    if row["framework"] == "ours":
      assert not {part for part in parts if part.startswith("other,")} - {"other, forward"}
  assert "Where the time goes: tiny16 float32 8 train" in report
  assert "| convolution, backward |" in report


def test_profile_parts_follow_the_ops_module_and_pass():
  from inception_jax.bench.profile import hlo_part, torch_part

  backward = "jit(_fun)/transpose(jvp(GoogLeNet))/inception_3a/branch3/pool0/pad"
  assert hlo_part("select_pad_fusion.2", backward) == "max pool, backward"
  forward = "jit(_fun)/jvp(GoogLeNet)/inception_3a/branch1/conv1/bn/sub"
  assert hlo_part("broadcast_subtract_fusion", forward) == "BatchNorm, forward"
  assert hlo_part("fusion.3", "jit(_fun)/GoogLeNet/inception_4a/concatenate") == (
    "concatenation, forward"
  )
  assert hlo_part("transpose_copy_fusion.9", "") == "layout copies, XLA's own"
  weight_gradient = "jit(_fun)/transpose(jvp(GoogLeNet))/conv2/conv0/conv/cond/branch_0_fun/dot"
  assert hlo_part("ynn_fusion.3", weight_gradient) == "convolution, backward"
  assert hlo_part("multiply_add_fusion", "jit(_fun)/add") == "loss, update and metrics"
  evaluate = "autograd::engine::evaluate_function: "
  assert torch_part(evaluate + "ConvolutionBackward0") == "convolution, backward"
  assert torch_part(evaluate + "MaxPool2DWithIndicesBackward0") == "max pool, backward"
  assert torch_part("aten::batch_norm") == "BatchNorm, forward"
  assert torch_part("aten::cat") == "concatenation, forward"
  assert torch_part("Optimizer.step#SGD.step") == "loss, update and metrics"


def test_bench_refuses_bad_options(capsys, tmp_path):
  assert main(["bench", "--networks", "tiny", "--out", str(tmp_path / "b")]) == 2
  assert "tiny16" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()
  assert main(["bench", "--rounds", "0", "--out", str(tmp_path / "b")]) == 2
  assert "--rounds 0: needs at least 1" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()


def test_bench_without_tensorflow_says_so_before_timing_anything(capsys, tmp_path, monkeypatch):
  """GPU images often lack TensorFlow; the pipeline part, which alone needs it, runs last."""
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *a: None if name == "tensorflow" else find_spec(name, *a),
  )
  assert main(["bench", "--pipeline-threads", "1", "--out", str(tmp_path / "b")]) == 2
  assert "needs TensorFlow, which is not installed" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra")
@pytest.mark.parametrize("network", ["torchvision224", "small32", "tiny16"])
def test_the_pytorch_mirror_is_our_network(network):
  import torch

  from inception_jax.bench.cases import NETWORKS
  from inception_jax.bench.torch_googlenet import MirrorGoogLeNet, parameter_count
  from inception_jax.cost import layer_costs
  from inception_jax.models import build_model

  spec = NETWORKS[network]
  model = build_model(spec.model())
  size = spec.image_size
  ours = sum(layer.params for layer in layer_costs(model, (size, size, 3), train=True))
  mirror = MirrorGoogLeNet(model)
  assert parameter_count(mirror) == ours
  if network == "torchvision224":
    assert ours == 13_004_888  # torchvision's googlenet with its aux heads
  mirror.train()
  logits, *aux = mirror(torch.zeros(2, 3, size, size))
  assert logits.shape == (2, model.num_classes) and len(aux) == len(model.aux_from)


def test_default_xla_flags_fill_in_only_what_the_user_did_not_name(bench):
  name, value = next(iter(DEFAULT_XLA_FLAGS.items()))
  assert f"--{name}={value}" in bench[1]["xla_flags"]  # set at import, seen by the bench
  environ = {}
  apply_defaults(environ)
  assert environ["XLA_FLAGS"] == f"--{name}={value}"
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/hlo"}
  apply_defaults(environ)
  assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/hlo --{name}={value}"
  environ = {"XLA_FLAGS": f"--{name}=+individual_convolution"}
  apply_defaults(environ)
  assert environ["XLA_FLAGS"] == f"--{name}=+individual_convolution"


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra")
def test_conv_layers_experiment_times_every_convolution_of_the_network(tmp_path, monkeypatch):
  """experiments/conv_layers.py finds each nn.Conv call (aux heads included) and times its
  passes in both frameworks; the first layer has no input gradient."""
  monkeypatch.syspath_prepend(ROOT / "experiments")
  conv_layers = importlib.import_module("conv_layers")
  counts, first = conv_layers.network_layers("tiny16", batch=2)
  kernels = [
    leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(_tiny_params())
    if path[-1].key == "kernel" and leaf.ndim == 4
  ]
  assert sum(counts.values()) == len(kernels)
  assert first.input_shape == (2, 16, 16, 3)
  out = tmp_path / "conv_layers"
  conv_layers.main(
    ["--network", "tiny16", "--batch", "2", "--steps", "1", "--warmup", "1", "--out", str(out)]
  )
  results = json.loads(out.with_suffix(".json").read_text())
  assert len(results["rows"]) == len(counts)
  assert all(row["ours weight gradient ms"] > 0 for row in results["rows"])
  assert [row["first"] for row in results["rows"] if "ours input gradient ms" not in row] == [True]
  assert "| all |" in out.with_suffix(".md").read_text()


def test_paired_steps_experiment_times_variants_in_turn_in_their_own_processes(
  tmp_path, monkeypatch
):
  """experiments/paired_steps.py runs each variant in its own worker processes under its own
  XLA_FLAGS, a step of each in turn, and reports each process and the paired ratios."""
  monkeypatch.syspath_prepend(ROOT / "experiments")
  paired_steps = importlib.import_module("paired_steps")
  out = tmp_path / "paired"
  flags = "--xla_cpu_prefer_vector_width=256"  # XLA's default, named
  paired_steps.main(
    [
      *("--networks", "tiny16", "--pairs", "3", "--processes", "1", "--out", str(out)),
      *("--variant", "defaults=", "--variant", f"other={flags}"),
      *("--checkout", f"other={ROOT}"),  # this checkout again, through PYTHONPATH
    ]
  )
  results = json.loads(out.with_suffix(".json").read_text())
  (row,) = results["networks"]
  assert [len(times) for times in row["times"].values()] == [3, 3]
  assert set(row["ratio_to_first"]) == {"other"} and row["ratio_to_first"]["other"]["median"] > 0
  assert results["checkouts"] == {"other": str(ROOT.resolve())}
  assert f"`{flags}`, code at `{ROOT.resolve()}`" in out.with_suffix(".md").read_text()
  for wrong in (["--variant", "no-equals-sign"], ["--checkout", f"unknown={ROOT}"]):
    with pytest.raises(SystemExit):
      paired_steps.main(wrong)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra")
def test_winograd_layers_experiment_times_each_3x3_layer_three_ways(tmp_path, monkeypatch):
  """experiments/winograd_layers.py times every 3x3 stride-1 layer directly, by Winograd and in
  PyTorch, each pass, and says which one the model uses."""
  monkeypatch.syspath_prepend(ROOT / "experiments")
  winograd_layers = importlib.import_module("winograd_layers")
  out = tmp_path / "winograd"
  winograd_layers.main(
    ["--networks", "tiny16", "--batch", "2", "--steps", "1", "--warmup", "1", "--out", str(out)]
  )
  (network,) = json.loads(out.with_suffix(".json").read_text())["networks"]
  assert network["rows"] and all(row["layer"].startswith("3x3") for row in network["rows"])
  assert all(row["Winograd forward ms"] > 0 for row in network["rows"])
  assert "| used with Winograd |" in out.with_suffix(".md").read_text()


def test_pointwise_gradient_experiment_times_each_formulation(tmp_path, monkeypatch):
  """experiments/pointwise_gradient.py times each 1x1 layer's weight gradient every way, then
  the train step with each formulation installed, against the model's own."""
  monkeypatch.syspath_prepend(ROOT / "experiments")
  pointwise_gradient = importlib.import_module("pointwise_gradient")
  out = tmp_path / "pointwise"
  pointwise_gradient.main(
    ["--network", "tiny16", "--steps", "1", "--rounds", "1", "--pairs", "2", "--out", str(out)]
  )
  results = json.loads(out.with_suffix(".json").read_text())
  assert results["kernels"] and all(row["layer"].startswith("1x1") for row in results["kernels"])
  ratios = results["step"]["ratio_to_main"]
  assert len(ratios) == len(pointwise_gradient.FORMULATIONS)  # the others and the A/A control
  assert "**over the network**" in out.with_suffix(".md").read_text()


def _tiny_params():
  network = NETWORKS["tiny16"]
  model = build_model(network.model())
  size = network.image_size
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (size, size, 3)))["params"]


def test_cpu_samples_experiment_sorts_perf_samples_by_kind_of_code(monkeypatch):
  """experiments/cpu_samples.py: JIT code under XLA's kernel thunks is XLA's fused loops, other
  JIT code the GEMM micro-kernels; named code goes by its symbol, then by its library."""
  monkeypatch.syspath_prepend(ROOT / "experiments")
  cpu_samples = importlib.import_module("cpu_samples")
  samples = {  # perf script -F ip,sym,dso: one sample's frames, innermost first -> its kind
    "7f01 [unknown] (/tmp/perf-1.map)\n"
    "5a xla::cpu::Worker::Parallelize<xla::cpu::Kernel::Task<true> > (libjax_common.so)": (
      "XLA's fused loops (JIT, its LLVM kernels)"
    ),
    "7f02 [unknown] (/tmp/perf-1.map)\nb6f9 [unknown] ([unknown])": (
      "GEMM and convolution micro-kernels (JIT, oneDNN)"
    ),
    "5b Eigen::internal::gemm_pack_colmajor_block<TensorImagePatchOp<> > (libjax_common.so)": (
      "Eigen: packing convolution patches for GEMM (im2col)"
    ),
    "5c Eigen::internal::gemm_pack_colmajor_block<TensorMap<> > (libjax_common.so)": (
      "Eigen: packing other GEMM operands"
    ),
    "5d ynn::sum_kn_fp32_avx512 (libjax_common.so)": "YNNPACK (dots, reductions)",
    "9f mkl_blas_def_sgemm_kernel_0_zen (libtorch_cpu.so)": "oneDNN and MKL, compiled code",
    "9e at::native::cpu_max_pool_channels_last (libtorch_cpu.so)": (
      "PyTorch's own operators (elementwise, pooling, BatchNorm)"
    ),
    "1de62 [unknown] (libgomp.so.1)": "OpenMP runtime (threads waiting for work)",
    "ffff clear_page_erms ([kernel.kallsyms])": "Linux kernel (clearing new pages, faults)",
  }
  kinds = cpu_samples.count_kinds("\n\n".join(samples) + "\n\n")
  assert kinds == {kind: list(samples.values()).count(kind) for kind in samples.values()}
