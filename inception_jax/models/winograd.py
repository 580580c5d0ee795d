"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2015).

Each 2x2 output tile then costs 16 multiply-adds per input-output channel pair instead of 36:
the input's overlapping 4x4 tiles (stride 2) and the kernel go through fixed linear transforms,
the 16 transformed positions become 16 independent matrix products over the channels, and a
last transform turns each product's 4x4 tile into the 2x2 output. The gradients are the same
algorithm: the input's is the convolution of the output's gradient with the flipped kernel, the
kernel's is 16 products of the transformed input with the transformed output gradient.

Only XLA's CPU backend gets it (`layers.ConvUnit` decides where): GPU and TPU convolution
libraries choose their own algorithms. The transforms add and subtract only, so float32 results
differ from the direct convolution's by rounding (relative 1e-6). Measurements:
experiments/results/winograd.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(2x2, 3x3)'s kernel transform G (4x3), applied to both kernel axes at once as G (x) G (16x9);
# the input's B^T and the output's A^T are applied below as the sums and differences they are.
_KERNEL_TRANSFORM = np.kron(
  *[np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)] * 2
)
# Batched matrix products over the 16 tile positions: [16, tiles, in] x [16, in, out].
_POSITION_PRODUCT = (((2,), (1,)), ((0,), (0,)))


def _tiles(size: int) -> int:
  return -(-size // 2)


def _kernel_transform(kernel: jnp.ndarray) -> jnp.ndarray:
  """G k G^T for each channel pair, one product: [3, 3, in, out] -> [16, in, out]."""
  transform = jnp.asarray(_KERNEL_TRANSFORM, kernel.dtype)
  return (transform @ kernel.reshape(9, -1)).reshape(16, *kernel.shape[2:])


def _kernel_gradient(position_gradient: jnp.ndarray) -> jnp.ndarray:
  """The transpose of `_kernel_transform`: [16, in, out] -> [3, 3, in, out]."""
  transform = jnp.asarray(_KERNEL_TRANSFORM, position_gradient.dtype)
  return (transform.T @ position_gradient.reshape(16, -1)).reshape(
    3, 3, *position_gradient.shape[1:]
  )


# Each transform is a stack over rows, then a stack over columns: XLA fuses each stack of four
# into one loop (three fusions a transform, where one stack of all 16 positions took 17, each
# compiled on its own, and ran 1.3-5x slower).


def _input_transform(x: jnp.ndarray) -> jnp.ndarray:
  """B^T d B of every 4x4 tile d of x padded by one (SAME): [n, h, w, c] -> [16, tiles, c]."""
  n, h, w, c = x.shape
  th, tw = _tiles(h), _tiles(w)
  padded = jnp.pad(x, ((0, 0), (1, 1 + 2 * th - h), (1, 1 + 2 * tw - w), (0, 0)))

  def combine(d: list[jnp.ndarray]) -> list[jnp.ndarray]:  # B^T's rows
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]

  rows = jnp.stack(combine([padded[:, k : k + 2 * th : 2] for k in range(4)]))
  positions = jnp.stack(combine([rows[:, :, :, k : k + 2 * tw : 2] for k in range(4)]), axis=1)
  return positions.reshape(16, n * th * tw, c)


def _output_transform(m: jnp.ndarray, shape: tuple[int, int, int]) -> jnp.ndarray:
  """A^T m A of every tile's 4x4 products: [16, tiles, c] -> [n, h, w, c]."""
  n, h, w = shape
  th, tw = _tiles(h), _tiles(w)
  m = m.reshape(4, 4, n, th, tw, -1)

  def combine(d: jnp.ndarray) -> list[jnp.ndarray]:  # A^T's rows
    return [d[0] + d[1] + d[2], d[1] - d[2] - d[3]]

  rows = jnp.stack(combine(m), axis=3)  # [4, n, th, 2, tw, c]
  tiles = jnp.stack(combine(rows), axis=-2)  # [n, th, 2, tw, 2, c]
  return tiles.reshape(n, 2 * th, 2 * tw, -1)[:, :h, :w]


def _output_gradient_transform(g: jnp.ndarray) -> jnp.ndarray:
  """The transpose of `_output_transform`, A g A^T per 2x2 tile: [n, h, w, c] -> [16, tiles, c]."""
  n, h, w, c = g.shape
  th, tw = _tiles(h), _tiles(w)
  g = jnp.pad(g, ((0, 0), (0, 2 * th - h), (0, 2 * tw - w), (0, 0)))

  def combine(d: list[jnp.ndarray]) -> list[jnp.ndarray]:  # A's rows
    return [d[0], d[0] + d[1], d[0] - d[1], -d[1]]

  rows = jnp.stack(combine([g[:, 0::2], g[:, 1::2]]))
  positions = jnp.stack(combine([rows[:, :, :, 0::2], rows[:, :, :, 1::2]]), axis=1)
  return positions.reshape(16, n * th * tw, c)


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
