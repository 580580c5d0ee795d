"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, 2015).

Each 4x4 output tile then costs 36 multiply-adds per input-output channel pair instead of 144:
the input's overlapping 6x6 tiles (stride 4) and the kernel go through fixed linear transforms,
the 36 transformed positions become 36 independent matrix products over the channels, and a
last transform turns each product's 6x6 tile into the 4x4 output. The gradients are the same
algorithm: the input's is the convolution of the output's gradient with the flipped kernel, the
kernel's is 36 products of the transformed input with the transformed output gradient.

Only XLA's CPU backend gets it (`layers.ConvUnit` decides where): GPU and TPU convolution
libraries choose their own algorithms. The transforms' coefficients (up to 8, and 1/24 in the
kernel's) cost accuracy: float32 results differ from the direct convolution's by about 1e-5 of
the output's largest value (F(2x2, 3x3): 1e-6, at 1.2-1.7x the time on maps of 14x14 and more).
Measurements: experiments/results/winograd.md.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2 (Lavin and Gray's): each 6x6 input
# tile d (stride 4) becomes B^T d B, the kernel k becomes G k G^T, and the 6x6 products' tile m
# becomes the 4x4 output A^T m A.
_OUTPUT_TILE = 4
_INPUT_TILE = _OUTPUT_TILE + 2
_INPUT_TRANSFORM = np.array(  # B^T
  [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
  ]
)
_KERNEL_TRANSFORM = np.array(  # G
  [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
  ]
)
_OUTPUT_TRANSFORM = np.array(  # A^T
  [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
  ]
)
_POSITIONS = _INPUT_TILE**2
# Both kernel axes at once: G (x) G, one product with the kernel's 9 taps.
_KERNEL_PRODUCT = np.kron(_KERNEL_TRANSFORM, _KERNEL_TRANSFORM).astype(np.float32)
# Batched matrix products over the tile positions: [positions, tiles, in] x [positions, in, out].
_POSITION_PRODUCT = (((2,), (1,)), ((0,), (0,)))


def _tiles(size: int) -> int:
  return -(-size // _OUTPUT_TILE)


def _combine(coefficients: np.ndarray, terms: list[jnp.ndarray]) -> jnp.ndarray:
  """sum_k coefficients[k] * terms[k], leaving out the zeros and multiplying by no +-1."""
  total = None
  for coefficient, term in zip(coefficients, terms, strict=True):
    if coefficient == 0:
      continue
    scaled = term if abs(coefficient) == 1 else term * np.float32(abs(coefficient))
    if total is None:
      total = scaled if coefficient > 0 else -scaled
    else:
      total = total + scaled if coefficient > 0 else total - scaled
  return total


def _transform(
  matrix: np.ndarray,
  rows: list[jnp.ndarray],
  columns: Callable[[jnp.ndarray, int], jnp.ndarray],
) -> jnp.ndarray:
  """matrix (x) matrix applied to each tile: over the tiles' rows (`rows`, one strided view of
  the map per row of a tile), then over their columns (`columns(stacked, k)`, the k-th column's
  view of the stacked rows). One stack over the rows, then one over the columns: XLA fuses each
  into one loop (3 fusions a transform; a single stack of every position made each position a
  fusion of its own, compiled on its own, and ran 1.3-5x slower at F(2x2, 3x3))."""
  stacked = jnp.stack([_combine(row, rows) for row in matrix])
  views = [columns(stacked, k) for k in range(matrix.shape[1])]
  return jnp.stack([_combine(row, views) for row in matrix], axis=1)


def _kernel_transform(kernel: jnp.ndarray) -> jnp.ndarray:
  """G k G^T for each channel pair: [3, 3, in, out] -> [positions, in, out]."""
  product = jnp.asarray(_KERNEL_PRODUCT, kernel.dtype) @ kernel.reshape(9, -1)
  return product.reshape(_POSITIONS, *kernel.shape[2:])


def _kernel_gradient(position_gradient: jnp.ndarray) -> jnp.ndarray:
  """The transpose of `_kernel_transform`: [positions, in, out] -> [3, 3, in, out]."""
  product = jnp.asarray(_KERNEL_PRODUCT.T, position_gradient.dtype) @ position_gradient.reshape(
    _POSITIONS, -1
  )
  return product.reshape(3, 3, *position_gradient.shape[1:])


def _input_transform(x: jnp.ndarray) -> jnp.ndarray:
  """B^T d B of every 6x6 tile d of x padded by one (SAME): [n, h, w, c] -> [36, tiles, c]."""
  n, h, w, c = x.shape
  th, tw = _tiles(h), _tiles(w)
  step = _OUTPUT_TILE
  padded = jnp.pad(x, ((0, 0), (1, 1 + step * th - h), (1, 1 + step * tw - w), (0, 0)))
  rows = [padded[:, k : k + step * th : step] for k in range(_INPUT_TILE)]
  positions = _transform(
    _INPUT_TRANSFORM, rows, lambda stacked, k: stacked[:, :, :, k : k + step * tw : step]
  )
  return positions.reshape(_POSITIONS, n * th * tw, c)


def _output_transform(m: jnp.ndarray, shape: tuple[int, int, int]) -> jnp.ndarray:
  """A^T m A of every tile's 6x6 products: [36, tiles, c] -> [n, h, w, c]."""
  n, h, w = shape
  th, tw = _tiles(h), _tiles(w)
  m = m.reshape(_INPUT_TILE, _INPUT_TILE, n, th, tw, -1)
  rows = jnp.stack([_combine(row, list(m)) for row in _OUTPUT_TRANSFORM], axis=3)
  columns = [rows[j] for j in range(_INPUT_TILE)]  # each [n, th, 4, tw, c]
  tiles = jnp.stack([_combine(row, columns) for row in _OUTPUT_TRANSFORM], axis=-2)
  return tiles.reshape(n, _OUTPUT_TILE * th, _OUTPUT_TILE * tw, -1)[:, :h, :w]


def _output_gradient_transform(g: jnp.ndarray) -> jnp.ndarray:
  """The transpose of `_output_transform`, A g A^T per 4x4 tile: [n, h, w, c] -> [36, tiles, c]."""
  n, h, w, c = g.shape
  th, tw = _tiles(h), _tiles(w)
  step = _OUTPUT_TILE
  g = jnp.pad(g, ((0, 0), (0, step * th - h), (0, step * tw - w), (0, 0)))
  rows = [g[:, a::step] for a in range(step)]
  positions = _transform(_OUTPUT_TRANSFORM.T, rows, lambda stacked, b: stacked[:, :, :, b::step])
  return positions.reshape(_POSITIONS, n * th * tw, c)


def _convolve(x: jnp.ndarray, kernel: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The convolution, and its input's transform (kept for the kernel's gradient)."""
  transformed = _input_transform(x)
  products = lax.dot_general(transformed, _kernel_transform(kernel), _POSITION_PRODUCT)
  return _output_transform(products, x.shape[:3]), transformed


@jax.custom_vjp
def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """The 3x3, stride-1, SAME convolution of x (NHWC) with kernel (HWIO)."""
  return _convolve(x, kernel)[0]


def _conv3x3_forward(x, kernel):
  y, transformed_x = _convolve(x, kernel)
  return y, (transformed_x, kernel)


def _conv3x3_backward(residuals, grad):
  transformed_x, kernel = residuals
  grad_x = _convolve(grad, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))[0]
  # The products contract over the tiles; with the tiles minor in the left operand XLA's product
  # packs it quickly (as in layers.pointwise_convolution).
  transposed = lax.optimization_barrier(transformed_x.swapaxes(1, 2))
  per_position = lax.dot_general(transposed, _output_gradient_transform(grad), _POSITION_PRODUCT)
  return grad_x, _kernel_gradient(per_position)


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)
