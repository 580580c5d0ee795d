"""Shapes, channel counts, parameter counts and training behaviour of the Flax models."""

import functools

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.errors import ConfigError
from inception_jax.models import (
  TABLE1_WIDTHS,
  Branch,
  Conv,
  InceptionModule,
  ModuleWidths,
  Pool,
  build_model,
  init_variables,
  naive_branches,
  reduced_branches,
  variable_shapes,
)
from inception_jax.models.layers import (
  BatchNorm,
  ConvUnit,
  LocalResponseNorm,
  MaxPool,
  adaptive_avg_pool,
  ceil_mode_padding,
  max_pool,
  pointwise_convolution,
  winograd_convolution,
)

CONV = functools.partial(ConvUnit, batchnorm=False)
KEY = jax.random.key(0)


def param_count(tree) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def apply(model, variables, x, train=False, **kwargs):
  """The model's forward pass, jitted (op-by-op it is slow on a CPU)."""
  fn = jax.jit(lambda v, x: model.apply(v, x, train=train, rngs={"dropout": KEY}, **kwargs))
  return fn(variables, x)


def abstract_variables(model, image_size):
  return variable_shapes(model, image_size)


def test_branch_runs_its_steps_in_order():
  x = jnp.ones((2, 9, 9, 5))
  spec = (Pool(3), Conv(1, 7), Conv(5, 4))
  variables = Branch(spec, CONV).init(KEY, x)
  y = Branch(spec, CONV).apply(variables, x)
  assert y.shape == (2, 9, 9, 4)
  assert variables["params"]["conv1"]["conv"]["kernel"].shape == (1, 1, 5, 7)
  assert variables["params"]["conv2"]["conv"]["kernel"].shape == (5, 5, 7, 4)


@pytest.mark.parametrize("kind, expected", [(reduced_branches, 256), (naive_branches, 416)])
def test_inception_3a_output_channels(kind, expected):
  """Reduced 3a: 64+128+32+32 = 256. Naive 3a: 64+128+32 plus the 192 pooled input channels."""
  branches = kind(ModuleWidths(*TABLE1_WIDTHS["inception_3a"]), (1, 3, 5))
  x = jnp.ones((1, 28, 28, 192))
  module = InceptionModule(branches, CONV)
  y = jax.eval_shape(lambda: module.apply(module.init(KEY, x), x))
  assert y.shape == (1, 28, 28, expected)


def test_module_takes_any_number_of_branches_and_kernel_sizes():
  branches = ((Conv(1, 3),), (Conv(1, 2), Conv(7, 5)))
  x = jnp.ones((1, 10, 10, 4))
  module = InceptionModule(branches, CONV)
  assert module.apply(module.init(KEY, x), x).shape == (1, 10, 10, 8)
  wide = reduced_branches(ModuleWidths(1, 2, 3, 4, 5, 6), (3, 5, 7))
  assert [step.kernel for step in wide[2] if isinstance(step, Conv)] == [1, 7]


@pytest.mark.parametrize("spec, aux", [("imagenet.py", 2), ("imagenet.py:torchvision", 2)])
def test_network_shapes_at_224(load, spec, aux):
  config = load(spec)
  model = build_model(config.model)
  variables = abstract_variables(model, 224)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  rngs = {"dropout": KEY}
  train = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"])[0], variables, x
  )
  test = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert train.logits.shape == test.logits.shape == (2, 1000)
  assert [a.shape for a in train.aux_logits] == [(2, 1000)] * aux
  assert test.aux_logits == ()


def test_parameter_counts(load):
  """torchvision's googlenet exactly; the paper's widths with true 5x5 kernels about 7.0M."""
  for spec, without_aux, with_aux in [
    ("imagenet.py:torchvision", 6_624_904, 13_004_888),
    ("imagenet.py", 6_998_552, 13_378_280),
  ]:
    params = abstract_variables(build_model(load(spec).model), 224)["params"]
    aux = {k: v for k, v in params.items() if k.startswith("aux_")}
    assert param_count(params) == with_aux, spec
    assert param_count(params) - param_count(aux) == without_aux, spec


def test_aux_heads_off_means_no_aux_parameters_or_outputs(load, small):
  model = build_model(load("default.py", {"model.aux_heads": "false"}).model)
  params = abstract_variables(model, 32)["params"]
  assert params and not any(k.startswith("aux_") for k in params)
  _, variables = small
  without_aux = dict(
    variables, params={k: v for k, v in variables["params"].items() if not k.startswith("aux_")}
  )
  out, _ = apply(model, without_aux, jnp.ones((1, 32, 32, 3)), train=True, mutable=["batch_stats"])
  assert out.aux_logits == ()


def test_small_network_runs_and_aux_heads_only_in_training(small):
  model, variables = small
  x = jax.random.normal(KEY, (3, 32, 32, 3))
  out, _ = apply(model, variables, x, train=True, mutable=["batch_stats"])
  assert out.logits.shape == (3, 10) and len(out.aux_logits) == 2
  assert all(a.shape == (3, 10) for a in out.aux_logits)
  test = apply(model, variables, x)
  assert test.aux_logits == () and np.isfinite(test.logits).all()


def test_batchnorm_statistics_update_in_training_only(small):
  model, variables = small
  x = jax.random.normal(KEY, (4, 32, 32, 3)) * 3 + 1
  _, updated = apply(model, variables, x, train=True, mutable=["batch_stats"])
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updated["batch_stats"])
  assert all(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
  _, unchanged = apply(model, variables, x, mutable=["batch_stats"])
  for b, a in zip(before, jax.tree.leaves(unchanged["batch_stats"]), strict=True):
    np.testing.assert_array_equal(b, a)


def test_bfloat16_compute_keeps_float32_params(load, small):
  model = build_model(load("default.py", {"model.dtype": "bfloat16"}).model)
  params = abstract_variables(model, 32)["params"]
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  x = jnp.ones((2, 32, 32, 3))
  out, state = apply(model, small[1], x, capture_intermediates=True, mutable=["intermediates"])
  assert state["intermediates"]["inception_3a"]["__call__"][0].dtype == jnp.bfloat16
  assert out.logits.dtype == jnp.float32


def test_ceil_mode_pooling_matches_pytorch_sizes():
  """PyTorch: out = ceil((n + 2p - k) / s) + 1, less one if the last window starts in padding."""
  for size, window, strides, pad, expected in [
    (112, 3, 2, 0, 56),
    (15, 3, 2, 0, 7),
    (14, 2, 2, 0, 7),
    (7, 3, 1, 1, 7),
    (8, 3, 2, 0, 4),
  ]:
    before, after = ceil_mode_padding(size, window, strides, pad)
    assert (size + before + after - window) // strides + 1 == expected
  x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
  y = MaxPool(3, 2).apply({}, x)
  np.testing.assert_array_equal(y[0, :, :, 0], [[12, 14], [22, 24]])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("axis_name", [None, "batch"])
def test_batch_norm_is_flaxs_with_the_same_gradient(dtype, axis_name):
  """Variables, output and running averages to the bit; gradients of x and the parameters to
  rounding (bfloat16's for x); with axis_name, statistics and gradients over both shares of the
  batch (vmap stands in for pmap's devices)."""
  rng = np.random.default_rng(0)
  shape = (2, 4, 5, 5, 6) if axis_name else (8, 5, 5, 6)
  x = jnp.asarray(rng.normal(3.0, 2.0, shape), dtype)
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)

  def run(module):
    variables = module.init(KEY, x[0] if axis_name else x)

    def loss(params, x):
      y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
      return (y.astype(jnp.float32) * (weights[0] if axis_name else weights)).sum(), (y, updates)

    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
    if axis_name:
      grad = jax.vmap(grad, in_axes=(None, 0), axis_name=axis_name)
    return variables, *grad(variables["params"], x)

  settings = dict(momentum=0.9, epsilon=1e-3, axis_name=axis_name, dtype=dtype)
  ours = run(BatchNorm(use_running_average=False, **settings))
  flax_ = run(flax.linen.BatchNorm(use_running_average=False, use_fast_variance=False, **settings))
  jax.tree.map(np.testing.assert_array_equal, ours[0], flax_[0])
  jax.tree.map(np.testing.assert_array_equal, ours[2], flax_[2])  # y, batch_stats
  (params, dx), (flax_params, flax_dx) = ours[1], flax_[1]
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5), params, flax_params
  )
  scale = float(jnp.abs(flax_dx.astype(jnp.float32)).max())
  tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(
    dx.astype(jnp.float32), flax_dx.astype(jnp.float32), atol=tolerance * scale
  )
  inference = {**settings, "use_running_average": True}
  np.testing.assert_array_equal(
    BatchNorm(**inference).apply(ours[0], x),
    flax.linen.BatchNorm(use_fast_variance=False, **inference).apply(flax_[0], x),
  )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pointwise_convolution_is_xlas_with_the_same_gradient(dtype):
  """The 1x1 convolution with its CPU weight gradient against flax's nn.Conv: output and input
  gradient to the bit, kernel and bias gradients to rounding; a GPU's program keeps the
  convolution for the kernel's gradient."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 6, 6, 12)), dtype)
  weights = jnp.asarray(rng.normal(size=(4, 6, 6, 8)), jnp.float32)

  def run(**options):
    conv = flax.linen.Conv(8, (1, 1), dtype=dtype, **options)
    variables = conv.init(KEY, x)

    def loss(params, x):
      y = conv.apply({"params": params}, x)
      return (y.astype(jnp.float32) * weights).sum(), y

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True)), variables["params"]

  ours, params = run(conv_general_dilated=pointwise_convolution)
  theirs, _ = run()
  (grads, dx), y = ours(params, x)
  (their_grads, their_dx), their_y = theirs(params, x)
  np.testing.assert_array_equal(y, their_y)
  np.testing.assert_array_equal(dx, their_dx)
  tolerance = 1e-5 if dtype == jnp.float32 else 1e-2
  for name in ("kernel", "bias"):
    scale = float(jnp.abs(their_grads[name]).max())
    np.testing.assert_allclose(grads[name], their_grads[name], atol=tolerance * scale)
  assert "conditional" not in ours.lower(params, x).compile().as_text()  # chosen at compile
  gpu = jax.export.export(ours, platforms=["cuda"])(params, x).mlir_module()
  assert gpu.count("stablehlo.convolution") == 3 and "dot_general" not in gpu


@pytest.mark.parametrize("shape", [(2, 7, 7, 5), (3, 8, 6, 4), (1, 1, 2, 3), (2, 16, 16, 64)])
def test_winograd_convolution_matches_xlas_and_its_gradients(shape):
  """Winograd's 3x3 convolution (odd, even and one-pixel maps, the width ConvUnit picks it at)
  against XLA's direct one inside flax's nn.Conv: output and both gradients within 1e-5 of their
  largest value (F(4x4, 3x3)'s float32 accuracy); a GPU's program keeps XLA's convolutions."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(*shape[:3], 6)), jnp.float32)

  def run(**options):
    conv = flax.linen.Conv(6, (3, 3), padding=((1, 1), (1, 1)), **options)
    params = conv.init(KEY, x)["params"]

    def loss(params, x):
      y = conv.apply({"params": params}, x)
      return (y * weights).sum(), y

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True)), params

  ours, params = run(conv_general_dilated=winograd_convolution)
  theirs, _ = run()
  for got, want in zip(
    jax.tree.leaves(ours(params, x)), jax.tree.leaves(theirs(params, x)), strict=True
  ):
    np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))
  assert "convolution(" not in ours.lower(params, x).compile().as_text()
  gpu = jax.export.export(ours, platforms=["cuda"])(params, x).mlir_module()
  assert gpu.count("stablehlo.convolution") == 3 and "dot_general" not in gpu
  kernel = params["kernel"]
  for strides, padding in (((2, 2), ((1, 1), (1, 1))), ((1, 1), "VALID")):
    with pytest.raises(ValueError, match="3x3, stride-1, SAME"):
      winograd_convolution(x, kernel, strides, padding)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
  "kernel_size,strides,channels,expected",
  [
    (3, 1, 64, "winograd_convolution"),
    (3, 1, 32, None),  # too few channels for the transforms to pay
    (3, 2, 64, None),
    (1, 1, 64, "pointwise_convolution"),
    (5, 1, 64, None),
  ],
)
def test_conv_unit_chooses_its_convolution(dtype, kernel_size, strides, channels, expected):
  """Winograd for float32 3x3 stride-1 layers of WINOGRAD_MIN_CHANNELS inputs or more."""
  unit = ConvUnit(8, kernel_size, strides, dtype=dtype)
  x = jnp.zeros((1, 4, 4, channels), dtype)
  chosen = unit._convolution(x)
  if expected == "winograd_convolution" and dtype != jnp.float32:
    expected = None
  assert (chosen and chosen.__name__) == expected


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
  "shape,window,strides,pads",
  [
    ((2, 15, 15, 4), 3, 2, ((0, 1), (0, 1))),  # stem pool, ceil mode
    ((2, 7, 7, 8), 3, 1, ((1, 1), (1, 1))),  # the pool branch
    ((2, 14, 14, 4), 2, 2, ((0, 0), (0, 0))),  # small preset's 2x2 stage pool
    ((1, 57, 57, 2), 3, 2, ((0, 0), (0, 0))),  # a large map: XLA's reduce_window forward
  ],
)
def test_max_pool_matches_xla_and_its_gradient_selects_the_same_maxima(
  dtype, shape, window, strides, pads
):
  """Ties (zeros after ReLU, repeated values) go to the first maximum, as select_and_scatter."""
  x = jnp.maximum(jax.random.normal(jax.random.key(0), shape, dtype), 0).at[:, ::3].set(1)
  reference = functools.partial(
    flax.linen.max_pool, window_shape=(window, window), strides=(strides, strides), padding=pads
  )
  ours = functools.partial(max_pool, window=window, strides=strides, pads=pads)
  y, ours_vjp = jax.vjp(ours, x)
  y_reference, reference_vjp = jax.vjp(reference, x)
  np.testing.assert_array_equal(y, y_reference)
  np.testing.assert_array_equal(ours(x), y_reference)  # undifferentiated: reduce_window if large
  ones = jnp.ones_like(y)  # integer sums: exact whatever the order of the adds
  np.testing.assert_array_equal(ours_vjp(ones)[0], reference_vjp(ones)[0])
  grad = jax.random.normal(jax.random.key(1), y.shape, dtype)
  assert ours_vjp(grad)[0].dtype == dtype
  # ours adds in float32 and rounds once; bfloat16's select_and_scatter rounds every add
  exact = jax.vjp(reference, x.astype(jnp.float32))[1](grad.astype(jnp.float32))[0]
  np.testing.assert_allclose(
    np.float32(ours_vjp(grad)[0]), exact, rtol=1e-6 if dtype == jnp.float32 else 2.0**-8
  )


def test_local_response_norm_matches_caffe_formula():
  x = jax.random.normal(KEY, (1, 2, 3, 7))
  y = LocalResponseNorm(size=5, alpha=1e-2, beta=0.75, k=2.0).apply({}, x)
  xn = np.asarray(x)
  expected = np.empty_like(xn)
  for c in range(7):
    window = xn[..., max(0, c - 2) : c + 3]
    expected[..., c] = xn[..., c] / (2.0 + 1e-2 / 5 * (window**2).sum(-1)) ** 0.75
  np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_adaptive_avg_pool_matches_pytorch_bins():
  x = jax.random.normal(KEY, (1, 14, 14, 2))
  y = adaptive_avg_pool(x, 4)
  bins = [(0, 4), (3, 7), (7, 11), (10, 14)]  # floor(i*14/4) .. ceil((i+1)*14/4)
  for i, (r0, r1) in enumerate(bins):
    for j, (c0, c1) in enumerate(bins):
      np.testing.assert_allclose(y[0, i, j], x[0, r0:r1, c0:c1].mean((0, 1)), rtol=1e-5)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"model.module": "wide"}, "choose one of: naive, reduced"),
    ({"model.norm": "layernorm"}, "model.norm"),
    ({"model.kernel_sizes": "(1,3,4)"}, "must be odd"),
    ({"model.kernel_sizes": "(1,3)"}, "3 positive integers"),
    ({"model.dropout": "1.5"}, "model.dropout must be in"),
    ({"model.widths.inception_3a": "(64,96,128)"}, "6 positive integers"),
    ({"model.aux_from": "('inception_9z',)"}, "do not exist"),
  ],
)
def test_bad_model_values_are_clear_errors(load, override, message):
  with pytest.raises(ConfigError, match=message):
    build_model(load("imagenet.py", override).model)


def test_paper_aux_pool_on_tiny_maps_is_a_clear_error(load):
  model = build_model(
    load("default.py", {"model.aux_pool": "paper", "model.width_multiplier": "0.1"}).model
  )
  with pytest.raises(
    ConfigError,
    match="inception_4a's output is smaller than its aux head's "
    r"5x5 pool. The smallest size it takes is 10x10",
  ):
    jax.eval_shape(lambda: init_variables(model, KEY, (8, 8, 3)))
