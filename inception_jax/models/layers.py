"""The building blocks every GoogLeNet variant shares (NHWC throughout)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception_jax.models import winograd

Dtype = Any

# He initialisation keeps activations at scale through 22 ReLU layers, with or without BatchNorm.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
# 3x3 float32 convolutions with this many input channels or more go through Winograd's
# algorithm on a CPU; below it the transforms cost more than the products save (winograd.md).
WINOGRAD_MIN_CHANNELS = 64


class ConvUnit(nn.Module):
  """conv -> [BatchNorm] -> ReLU: every convolution of GoogLeNet, reductions included.

  Padding is symmetric (k // 2 on each side), as in Caffe and torchvision, so odd kernels keep
  the size at stride 1 and weights can be exchanged with those implementations. With BatchNorm
  the conv has no bias (the BatchNorm offset replaces it), as in torchvision. The batch variance
  is the two-pass mean((x - mean)^2): the one-pass E[x^2] - E[x]^2 cancels catastrophically when
  a channel's mean dwarfs its spread.
  """

  features: int
  kernel_size: int
  strides: int = 1
  batchnorm: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  batch_axis_name: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    pad = self.kernel_size // 2
    x = nn.Conv(
      self.features,
      (self.kernel_size, self.kernel_size),
      strides=(self.strides, self.strides),
      padding=((pad, pad), (pad, pad)),
      use_bias=not self.batchnorm,
      kernel_init=conv_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      conv_general_dilated=self._convolution(x),
      name="conv",
    )(x)
    if self.batchnorm:
      x = BatchNorm(
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=self.bn_epsilon,
        axis_name=self.batch_axis_name,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="bn",
      )(x)
    return nn.relu(x)

  def _convolution(self, x: jnp.ndarray) -> Callable[..., jnp.ndarray] | None:
    """How this layer convolves (None: flax's default, `lax.conv_general_dilated`)."""
    if self.kernel_size == self.strides == 1:
      return pointwise_convolution
    if (
      self.kernel_size == 3
      and self.strides == 1
      and jnp.dtype(self.dtype) == jnp.float32
      and x.shape[-1] >= WINOGRAD_MIN_CHANNELS
    ):
      return winograd_convolution
    return None


def pointwise_convolution(
  lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Any, padding: Any, **options: Any
) -> jnp.ndarray:
  """`lax.conv_general_dilated` (and its arguments) for a 1x1, stride-1 convolution of NHWC by
  HWIO, whose weight gradient on a CPU is a matrix product on a transposed copy of the input.

  That gradient is X^T dY over the batch's pixels, X (pixels x in) and dY (pixels x out). XLA's
  CPU backend computes it as a convolution over transposed operands, or, written as a product,
  contracts both operands over their major dimension: over small32's 1x1 layers 188 and 146 ms
  against PyTorch's 78 (2-core AMD EPYC). XLA's product with the contracted dimension minor in
  its left operand, which the copy makes it, runs at PyTorch's speed (85 ms; 129 with the
  copy), and the train step 1.02-1.03x as fast at small32, 1.01x at 224
  (experiments/results/pointwise_gradient_*.md; with YNNPACK's dots, and level with Eigen's,
  which xla_flags.py has chosen since: paired_steps_eigen_dots.md). Other platforms keep the
  convolution's own gradient (cuDNN's on a GPU).
  """
  convolve = functools.partial(
    lax.conv_general_dilated, window_strides=window_strides, padding=padding, **options
  )
  return with_weight_gradient(convolve, _pointwise_weight_gradient, lhs, rhs)


def winograd_convolution(
  lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Any, padding: Any, **options: Any
) -> jnp.ndarray:
  """`lax.conv_general_dilated` (and its arguments) for a 3x3, stride-1, SAME convolution of
  NHWC by HWIO, by Winograd's F(4x4, 3x3) on a CPU (`winograd.conv3x3`: XLA's CPU convolutions
  are Eigen's direct ones; measurements in experiments/results/winograd.md). Other platforms
  keep the convolution."""
  plain = all(
    tuple(options.get(name) or (1, 1)) == (1, 1) for name in ("lhs_dilation", "rhs_dilation")
  )
  if not (
    rhs.shape[:2] == (3, 3)
    and tuple(window_strides) == (1, 1)
    and tuple(map(tuple, padding)) == ((1, 1), (1, 1))
    and options.get("feature_group_count", 1) == 1
    and plain
  ):
    raise ValueError("winograd_convolution computes 3x3, stride-1, SAME, undilated convolutions")
  convolve = functools.partial(
    lax.conv_general_dilated, window_strides=window_strides, padding=padding, **options
  )
  return lax.platform_dependent(lhs, rhs, cpu=winograd.conv3x3, default=convolve)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def with_weight_gradient(
  convolve: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
  weight_gradient: Callable[..., jnp.ndarray],
  lhs: jnp.ndarray,
  rhs: jnp.ndarray,
) -> jnp.ndarray:
  """`convolve(lhs, rhs)`, its input's gradient by autodiff, its kernel's gradient
  `weight_gradient(convolve, lhs, rhs, grad)`: for computing that one pass another way."""
  return convolve(lhs, rhs)


def _with_weight_gradient_forward(convolve, weight_gradient, lhs, rhs):
  return convolve(lhs, rhs), (lhs, rhs)


def _with_weight_gradient_backward(convolve, weight_gradient, residuals, grad):
  lhs, rhs = residuals
  grad_lhs = jax.vjp(lambda x: convolve(x, rhs), lhs)[1](grad)[0]
  return grad_lhs, weight_gradient(convolve, lhs, rhs, grad)


with_weight_gradient.defvjp(_with_weight_gradient_forward, _with_weight_gradient_backward)


def _convolution_weight_gradient(convolve, lhs, rhs, grad):
  """The kernel's gradient by autodiff of the convolution (XLA's own)."""
  return jax.vjp(lambda kernel: convolve(lhs, kernel), rhs)[1](grad)[0]


def _pointwise_weight_gradient(convolve, lhs, rhs, grad):
  """The product on a CPU, the convolution's own gradient elsewhere (chosen at compile time)."""
  return lax.platform_dependent(
    lhs,
    rhs,
    grad,
    cpu=_product_weight_gradient,
    default=functools.partial(_convolution_weight_gradient, convolve),
  )


def _product_weight_gradient(lhs, rhs, grad):
  """X^T dY with X^T in a buffer of its own: without the barrier XLA folds the transpose back
  into the product's dimension numbers, the slow form."""
  pixels_in = lhs.reshape(-1, lhs.shape[-1])
  transposed = lax.optimization_barrier(pixels_in.T)
  product = lax.dot(
    transposed, grad.reshape(-1, grad.shape[-1]), preferred_element_type=jnp.float32
  )
  return product.reshape(rhs.shape).astype(rhs.dtype)


class BatchNorm(nn.Module):
  """flax's `nn.BatchNorm` with `use_fast_variance=False` (the same variables, float32 two-pass
  statistics averaged over `axis_name`, running averages and forward pass, to the bit), with its
  gradient written out: autodiff of the statistics and the normalisation left XLA about 20
  fusions a layer to compile, most of the train step's compile time on a CPU. Written out, the
  train step has ~300 fewer fusions and compiles 1.5-2.5 s sooner on 2 cores, at the same speed
  (experiments/results/compile_time.md).
  """

  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
    if self.use_running_average:
      y = _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
    else:
      axis_name = None if self.is_initializing() else self.axis_name
      y, mean, var = _batch_norm(x, scale, bias, self.epsilon, axis_name)
      if not self.is_initializing():  # the statistics feed only these: no gradient through them
        mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return jnp.asarray(y, nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype))


def _normalize(x, mean, var, scale, bias, epsilon):
  """In flax's order of operations, in float32 (the statistics promote x)."""
  return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def _moments(x: jnp.ndarray, axis_name: str | None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean and two-pass variance over all axes but the last, and over `axis_name`, in float32."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = x.mean(axes)
  mean = mean if axis_name is None else lax.pmean(mean, axis_name)
  var = lax.square(x - mean).mean(axes)
  return mean, var if axis_name is None else lax.pmean(var, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm(x, scale, bias, epsilon: float, axis_name: str | None):
  """(normalized x, batch mean, batch variance); the gradient is for the first output only."""
  return _batch_norm_forward(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_forward(x, scale, bias, epsilon, axis_name):
  mean, var = _moments(x, axis_name)
  return (_normalize(x, mean, var, scale, bias, epsilon), mean, var), (x, mean, var, scale)


def _batch_norm_backward(epsilon, axis_name, residuals, cotangents):
  """The textbook gradient over the whole batch, every device's share: the mean of dy and of
  dy * x_hat summed over `axis_name` (what autodiff of the pmeans gives), the parameters' own
  sums local (the train step averages gradients over devices). The two sums go to psum as a
  pair: stacked into one array they cost a fusion per layer to compile (59 in the digits' train
  step), for the same values."""
  x, mean, var, scale = residuals
  dy = cotangents[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  inverse = lax.rsqrt(var + epsilon)
  x_hat = (x.astype(jnp.float32) - mean) * inverse
  dbias, dscale = dy.sum(axes), (dy * x_hat).sum(axes)
  sums, count = (dbias, dscale), math.prod(x.shape[:-1])
  if axis_name is not None:
    sums, count = lax.psum(sums, axis_name), count * lax.psum(1, axis_name)
  mean_dy, mean_dy_x_hat = sums[0] / count, sums[1] / count
  dx = (scale * inverse) * (dy - mean_dy - x_hat * mean_dy_x_hat)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchDropout(nn.Module):
  """Dropout whose mask is drawn for the whole batch, even when pmap splits it over devices.

  With `batch_axis_name`, every device draws the global batch's mask from the same key and keeps
  its own rows, so the device count changes neither the masks nor the result.
  """

  rate: float
  batch_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    rng = self.make_rng("dropout")
    draw = functools.partial(jax.random.bernoulli, rng, keep)
    if self.batch_axis_name is None or self.is_initializing():  # init runs outside pmap
      mask = draw(x.shape)
    else:
      mask = rows_of_global_draw(draw, x.shape, self.batch_axis_name)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


def rows_of_global_draw(
  draw: Callable[[tuple[int, ...]], jax.Array], shape: tuple[int, ...], axis_name: str
) -> jax.Array:
  """This device's rows (`shape`) of `draw(shape of the whole batch)`: every device draws the
  global batch's values from the same key and keeps its own, so that how many devices share the
  batch changes no random draw (dropout's masks, the photometric distortions' factors)."""
  devices = jax.lax.axis_size(axis_name)
  whole = draw((devices * shape[0], *shape[1:]))
  return jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(axis_name) * shape[0], shape[0])


def ceil_mode_padding(size: int, window: int, strides: int, pad: int) -> tuple[int, int]:
  """(before, after) padding that makes a VALID pool count like Caffe/PyTorch `ceil_mode`.

  The output has ceil((size + 2*pad - window) / strides) + 1 positions, less one if the last
  window would start in the padding; the extra right padding is filled with the pool's identity.
  """
  out = math.ceil((size + 2 * pad - window) / strides) + 1
  if (out - 1) * strides >= size + pad:
    out -= 1
  return pad, max((out - 1) * strides + window - size - pad, 0)


Pads = tuple[tuple[int, int], tuple[int, int]]


def _window_views(
  padded: jnp.ndarray, window: int, strides: int, out_hw: tuple[int, int]
) -> list[tuple[int, int, jnp.ndarray]]:
  """(row, col, view) per window offset in row-major order: view[n, h, w, c] is the element at
  that offset of output position (h, w)'s window."""
  n, _, _, c = padded.shape
  rows, cols = ((size - 1) * strides + 1 for size in out_hw)
  step = (1, strides, strides, 1)
  return [
    (i, j, lax.slice(padded, (0, i, j, 0), (n, i + rows, j + cols, c), step))
    for i in range(window)
    for j in range(window)
  ]


# Maps at least this large (H x W) pool faster with XLA's reduce_window when strided and not
# differentiated: 2.2-2.8x on the 224x224 stem's 112x112 and 56x56 stride-2 pools (batch 16,
# 2-core AMD EPYC); the slices' maximum is as fast or faster on smaller maps (1.2-2x from 28x28
# down) and 2-4x at stride 1.
REDUCE_WINDOW_MIN_AREA = 56 * 56


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jnp.ndarray, window: int, strides: int, pads: Pads) -> jnp.ndarray:
  """Square max pooling over H and W of an NHWC array, padding with -inf.

  Both passes are elementwise ops on the window's strided slices, which XLA fuses into one loop
  each. XLA's CPU reduce_window took 2-5x as long as the slices' maximum (same values: a maximum
  is exact) on all but the largest maps pooled with a stride, which keep it outside training
  (REDUCE_WINDOW_MIN_AREA); its select_and_scatter gradient, expanded into iotas, a variadic
  reduce_window and a scatter, was a quarter of the 224x224 train step on a 2-core CPU
  (experiments/results/xla_cpu_flags.md). The gradient is select_and_scatter's exactly: each
  window's gradient goes to its first maximum in row-major order.
  """
  if strides > 1 and x.shape[1] * x.shape[2] >= REDUCE_WINDOW_MIN_AREA:
    return lax.reduce_window(
      x,
      -jnp.inf,
      lax.max,
      (1, window, window, 1),
      (1, strides, strides, 1),
      ((0, 0), *pads, (0, 0)),
    )
  return _slices_maximum(x, window, strides, pads)


def _padded(x: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  return lax.pad(
    x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0))
  )


def _slices_maximum(x, window, strides, pads):
  out_hw = tuple((x.shape[d] + sum(pads[d - 1]) - window) // strides + 1 for d in (1, 2))
  views = _window_views(_padded(x, pads), window, strides, out_hw)
  return functools.reduce(jnp.maximum, (view for _, _, view in views))


def _max_pool_forward(x, window, strides, pads):
  """Under differentiation the slices serve every map: the gradient compares the same slices
  with the maximum and XLA shares them with this pass. With reduce_window here the 224x224
  train step's profile had the max-pool gradient 21 ms slower and the ReLU before it no longer
  fused into the pool (+32 ms), eating the forward's 17 ms gain."""
  y = _slices_maximum(x, window, strides, pads)
  return y, (x, y)


def _max_pool_backward(window, strides, pads, residuals, grad):
  """Each input position sums the gradients of the windows whose first maximum it is: with each
  window's first-maximum offset and gradient spread over the padded input's grid (at the
  window's start, interior padding for the strides), that is one elementwise sum over the
  window's offsets of shifted slices, fused by XLA into one loop. Compares and adds run in
  float32 (exact for bfloat16 inputs, and faster on CPU); the adds go in offset order, as
  select_and_scatter's."""
  x, y = (r.astype(jnp.float32) for r in residuals)
  grad_dtype, grad = grad.dtype, grad.astype(jnp.float32)
  padded = _padded(x, pads)
  views = _window_views(padded, window, strides, y.shape[1:3])
  first = jnp.full(y.shape, len(views), jnp.int8)  # offset index of each window's first maximum
  for index in reversed(range(len(views))):
    first = jnp.where(views[index][2] == y, jnp.int8(index), first)
  (n, height, width, c), (out_h, out_w) = padded.shape, y.shape[1:3]
  margin = window - 1  # in front, so that the slice of every offset starts at 0 or later

  def spread(values: jnp.ndarray, fill: jnp.ndarray) -> jnp.ndarray:
    return lax.pad(
      values,
      fill,
      (
        (0, 0, 0),
        (margin, height - (out_h - 1) * strides - 1, strides - 1),
        (margin, width - (out_w - 1) * strides - 1, strides - 1),
        (0, 0, 0),
      ),
    )

  first_grid, grad_grid = spread(first, jnp.int8(-1)), spread(grad, jnp.float32(0))

  def shifted(grid: jnp.ndarray, i: int, j: int) -> jnp.ndarray:
    """At input position (p, q): the value of the window that starts at (p - i, q - j)."""
    return lax.slice(
      grid, (0, margin - i, margin - j, 0), (n, margin - i + height, margin - j + width, c)
    )

  padded_grad = sum(
    jnp.where(shifted(first_grid, i, j) == index, shifted(grad_grid, i, j), jnp.float32(0))
    for index, (i, j, _) in enumerate(views)
  )
  top, left = pads[0][0], pads[1][0]
  grad_x = lax.slice(padded_grad, (0, top, left, 0), (n, top + x.shape[1], left + x.shape[2], c))
  return (grad_x.astype(grad_dtype),)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


class MaxPool(nn.Module):
  """Max pooling with ceil-mode output size (Caffe's GoogLeNet, torchvision)."""

  window: int
  strides: int
  padding: int = 0

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    pads = tuple(
      ceil_mode_padding(n, self.window, self.strides, self.padding) for n in x.shape[1:3]
    )
    return max_pool(x, self.window, self.strides, pads)


class LocalResponseNorm(nn.Module):
  """Cross-channel LRN as in the paper's Caffe model: x / (k + alpha/n * sum_window x^2)^beta.

  `alpha` is divided by the window size `n` (Caffe's convention, not TensorFlow's). Computed in
  float32 whatever the compute dtype, since the sum of squares overflows bfloat16's precision.
  """

  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    squares = jnp.square(x.astype(jnp.float32))
    half = self.size // 2
    window_sum = lax.reduce_window(
      squares,
      0.0,
      lax.add,
      (1, 1, 1, self.size),
      (1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)),
    )
    scale = (self.k + self.alpha / self.size * window_sum) ** self.beta
    return (x.astype(jnp.float32) / scale).astype(x.dtype)


def _adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging matrix with PyTorch's adaptive-pool bins
  [floor(i*n/m), ceil((i+1)*n/m))."""
  matrix = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -(-((i + 1) * size) // out)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jnp.ndarray, output_size: int) -> jnp.ndarray:
  """PyTorch's AdaptiveAvgPool2d to output_size x output_size, as two small matmuls."""
  rows = jnp.asarray(_adaptive_pool_matrix(x.shape[1], output_size), x.dtype)
  cols = jnp.asarray(_adaptive_pool_matrix(x.shape[2], output_size), x.dtype)
  return jnp.einsum("nhwc,ih,jw->nijc", x, rows, cols)


class GlobalAvgPool(nn.Module):
  """Average over height and width: the paper's 7x7/1 average pool at any input size."""

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x, axis=(1, 2))
