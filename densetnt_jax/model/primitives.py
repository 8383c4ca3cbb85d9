"""The few ops every layer is built from: dense, layernorm, relu, masked max, matmul, softmax, add, concat,
mask add (and masked fill, log-softmax).

Each op exists twice here: a pure float function (`dense`, `layernorm`, ...) and a tiny linen module
(`Dense`, `LayerNorm`, ...) that owns the op's parameters and gives the op a unique name in the tree
(`encoder/traj_subgraph/layer_0/dense`). Layers call only the modules, never jnp math directly, so the
quantization stage swaps the float form for a fake-quant or integer form (and attaches its observers and
scales to the module's path) in this one file. Reshapes, transposes, broadcasts and gathers are not math and
stay in the layers.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Additive mask value (HAT's mask add: -100 at a fixed scale of 1; exp(-100) is 0 in float32 and in a
# [-12, 0] exp table alike). Real scores in this model differ by far less than 100, so a masked entry's weight
# relative to a real one is below 1e-30.
MASK_NEG = 100.0
# Dense layers with at most this many input features (the goals' (x, y)) run as broadcast multiply-adds in
# one fused loop instead of a matmul (a K=2 matmul over 131k goals ran at 6 GFLOP/s on this CPU), with a VJP
# that gets the kernel and bias gradients from one (K+1, rows) x (rows, O) matmul instead of K+1 reductions.
SMALL_K = 4


# ----------------------------------------------------------------------------------------------- float forms
def dense(x: jax.Array, kernel_IxO: jax.Array, bias_O: jax.Array | None = None) -> jax.Array:
  """x @ kernel + bias over the last axis."""
  if kernel_IxO.shape[0] <= SMALL_K:
    if bias_O is None:
      bias_O = jnp.zeros(kernel_IxO.shape[1], kernel_IxO.dtype)
    return _small_dense(x, kernel_IxO, bias_O)
  y = jax.lax.dot_general(x, kernel_IxO, (((x.ndim - 1,), (0,)), ((), ())))
  return y if bias_O is None else y + bias_O


@jax.custom_vjp
def _small_dense(x, kernel_IxO, bias_O):
  y = bias_O + x[..., 0:1] * kernel_IxO[0]
  for i in range(1, kernel_IxO.shape[0]):
    y = y + x[..., i:i + 1] * kernel_IxO[i]
  return y


def _small_dense_fwd(x, kernel_IxO, bias_O):
  return _small_dense(x, kernel_IxO, bias_O), (x, kernel_IxO)


def _small_dense_bwd(res, dy):
  x, kernel_IxO = res
  k = kernel_IxO.shape[0]
  rows_x = x.reshape(-1, k)
  rows_dy = dy.reshape(-1, dy.shape[-1])
  x1 = jnp.concatenate([rows_x, jnp.ones((rows_x.shape[0], 1), rows_x.dtype)], axis=1)
  dwb = jax.lax.dot_general(x1, rows_dy, (((0,), (0,)), ((), ())))   # (K+1, O): kernel rows, then bias
  dx = jax.lax.dot_general(dy, kernel_IxO, (((dy.ndim - 1,), (1,)), ((), ())))
  return dx, dwb[:k], dwb[k]


_small_dense.defvjp(_small_dense_fwd, _small_dense_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layernorm(x: jax.Array, scale_C: jax.Array, bias_C: jax.Array, eps: float = 1e-5) -> jax.Array:
  """LayerNorm over the last axis (biased variance, as PyTorch). Hand-written VJP: autodiff's took ~2x the
  passes over the activations."""
  return _layernorm_fwd(x, scale_C, bias_C, eps)[0]


def _layernorm_fwd(x, scale_C, bias_C, eps=1e-5):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centered = x - mean
  rstd = jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + eps)
  xhat = centered * rstd
  return xhat * scale_C + bias_C, (xhat, rstd, scale_C)


def _layernorm_bwd(eps, res, dy):
  xhat, rstd, scale_C = res
  lead = tuple(range(dy.ndim - 1))
  dscale, dbias = jnp.sum(dy * xhat, axis=lead), jnp.sum(dy, axis=lead)
  g = dy * scale_C
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True) - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  return dx, dscale, dbias


layernorm.defvjp(_layernorm_fwd, _layernorm_bwd)


def relu(x: jax.Array) -> jax.Array:
  return jnp.maximum(x, 0)


@jax.custom_vjp
def masked_max(x_xVxC: jax.Array, mask_xV: jax.Array) -> jax.Array:
  """Max over the vector axis (-2) of the entries where mask is True; rows with no True entry give 0.
  VJP: the gradient goes to the entries equal to the max (one fused select; autodiff's tie-averaging took
  four passes). Exact ties among real entries only happen at 0 after a ReLU, whose gradient is 0 anyway."""
  return _masked_max_fwd(x_xVxC, mask_xV)[0]


def _masked_max_fwd(x_xVxC, mask_xV):
  low = jnp.finfo(x_xVxC.dtype).min
  pooled = jnp.max(jnp.where(mask_xV[..., None], x_xVxC, low), axis=-2)
  out = jnp.where(jnp.any(mask_xV, axis=-1)[..., None], pooled, 0)
  return out, (x_xVxC, mask_xV, out)


def _masked_max_bwd(res, g_xC):
  x_xVxC, mask_xV, out = res
  hit = mask_xV[..., None] & (x_xVxC == out[..., None, :])
  return jnp.where(hit, g_xC[..., None, :], 0).astype(x_xVxC.dtype), None


masked_max.defvjp(_masked_max_fwd, _masked_max_bwd)


def matmul(a: jax.Array, b: jax.Array, *, transpose_b: bool = False, scale: float | None = None) -> jax.Array:
  """Batched a @ b (or a @ b^T) over the last two axes, leading axes are batch; `scale` folds a constant factor."""
  nb = a.ndim - 2
  batch = tuple(range(nb))
  contract_b = b.ndim - 1 if transpose_b else b.ndim - 2
  y = jax.lax.dot_general(a, b, (((a.ndim - 1,), (contract_b,)), (batch, batch)))
  return y if scale is None else y * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax with the max subtracted; hand-written VJP y * (g - sum(g * y)) (jax.nn.softmax's default
  autodiff path divides by the squared sum and costs several more passes over B x G x N scores)."""
  return _softmax_fwd(x, axis)[0]


def _softmax_fwd(x, axis=-1):
  e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
  y = e / jnp.sum(e, axis=axis, keepdims=True)
  return y, y


def _softmax_bwd(axis, y, g):
  return (y * (g - jnp.sum(g * y, axis=axis, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  return jax.nn.log_softmax(x, axis=axis)


def add(x: jax.Array, y: jax.Array) -> jax.Array:
  return x + y


def concat(xs: Sequence[jax.Array], axis: int = -1) -> jax.Array:
  return jnp.concatenate(xs, axis=axis)


def mask_add(x: jax.Array, mask: jax.Array, neg: float = MASK_NEG) -> jax.Array:
  """x + (0 where mask else -neg): an additive mask, finite even when a whole row is masked."""
  return x + jnp.where(mask, 0.0, -neg).astype(x.dtype)


def masked_fill(x: jax.Array, mask: jax.Array, value: float = 0.0) -> jax.Array:
  """x where mask else value: zeroes padded inputs so garbage there cannot reach any output or gradient."""
  return jnp.where(mask, x, jnp.asarray(value, x.dtype))


# ---------------------------------------------------------------------------------------------- modules
class Dense(nn.Module):
  """Linear layer on the last axis (HAT's 1x1 conv)."""
  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
    return dense(x, kernel, bias)


class LayerNorm(nn.Module):
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return layernorm(x, scale, bias, self.eps)


class ReLU(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return relu(x)


class MaskedMax(nn.Module):
  @nn.compact
  def __call__(self, x_xVxC: jax.Array, mask_xV: jax.Array) -> jax.Array:
    return masked_max(x_xVxC, mask_xV)


class MatMul(nn.Module):
  transpose_b: bool = False
  scale: float | None = None

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    return matmul(a, b, transpose_b=self.transpose_b, scale=self.scale)


class Softmax(nn.Module):
  axis: int = -1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return softmax(x, self.axis)


class LogSoftmax(nn.Module):
  axis: int = -1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return log_softmax(x, self.axis)


class Add(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    return add(x, y)


class Concat(nn.Module):
  axis: int = -1

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> jax.Array:
    return concat(xs, self.axis)


class MaskAdd(nn.Module):
  neg: float = MASK_NEG

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    return mask_add(x, mask, self.neg)


class MaskedFill(nn.Module):
  value: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_fill(x, mask, self.value)


class MLP(nn.Module):
  """Dense -> LayerNorm -> ReLU, the building block of every subgraph (HAT's MLP; `use_layernorm=False`
  drops the norm, as HAT's goal subgraph does)."""
  features: int
  use_layernorm: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Dense(self.features, kernel_init=self.kernel_init, name="dense")(x)
    if self.use_layernorm:
      y = LayerNorm(name="norm")(y)
    return ReLU(name="relu")(y)
