"""The few ops every layer is built from: dense, layernorm, relu, masked max, matmul, softmax, add, concat,
mask add (and masked fill, log-softmax), and the glue helpers layers reshape, index and gather with.

Each op exists as a pure float function (`dense`, `layernorm`, ...) and a tiny linen module (`Dense`,
`LayerNorm`, ...) that owns the op's parameters and gives it a unique name in the tree
(`encoder/traj_subgraph/layer_0/dense`). Layers call only the modules and the glue helpers, never jnp
directly, so this file alone defines the float, calibration, fake-quant and recorded (integer program)
graphs: on a `QTensor` (quant/qtensor.py) a module runs its quantized form, on a plain array its float form,
which is the float path unchanged.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from densetnt_jax.quant import arith as A
from densetnt_jax.quant import fakequant as FQ
from densetnt_jax.quant import qtensor as Q
from densetnt_jax.quant.qtensor import QTensor

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
  # As one 2-D (rows, I) x (I, O) matmul: the weight gradient is then a 2-D contraction over rows, which ran
  # 3x faster on this CPU than the same dot_general contracting two leading axes (53 -> ~150 GFLOP/s).
  rows_x = x.reshape(-1, x.shape[-1])
  y = jax.lax.dot_general(rows_x, kernel_IxO, (((1,), (0,)), ((), ()))).reshape(x.shape[:-1] + (-1,))
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


grid_lattice = A.float_lattice            # the dense goals' float forms: arith's float references
dense_grid = A.float_dense_grid
dense_grid_mask = A.float_dense_grid_mask


# ------------------------------------------------------------------------------------------------ glue
# Layers reshape, index and gather through these, never jnp directly: on a QTensor they keep the scale and
# bits, apply the same op to the calibration validity, and add a glue op to the program while recording.
def _glue(kind: str, fn, x, *others, **attrs):
  if not isinstance(x, QTensor):
    return fn(x, *others)
  vals = [Q.raw(o) for o in others]
  valid = None if x.valid is None else fn(Q.full_valid(x), *vals)
  out = QTensor(fn(x.value, *vals), x.scale, valid, x.bits, x.name)
  rec = Q.recorder()
  if rec is not None:
    out.name = rec.fresh(f"{x.name.split('~')[0]}~{kind}")
    rec.add(kind, out.name, [x, *others], out, attrs)
  return out


def reshape(x, shape: Sequence[int]):
  shape = tuple(int(d) for d in shape)
  return _glue("reshape", lambda v: v.reshape(shape), x, shape=shape)


def broadcast_to(x, shape: Sequence[int]):
  shape = tuple(int(d) for d in shape)
  return _glue("broadcast_to", lambda v: jnp.broadcast_to(v, shape), x, shape=shape)


def index(x, idx):
  """x[idx] for basic indices on the trailing axes (Ellipsis first): `P.index(x, np.s_[..., None, :])`."""
  idx = idx if isinstance(idx, tuple) else (idx,)
  return _glue("index", lambda v: v[idx], x, index=idx)


def tile(x, reps: Sequence[int]):
  reps = tuple(int(r) for r in reps)
  return _glue("tile", lambda v: jnp.tile(v, reps), x, reps=reps)


def moveaxis(x, source: int, destination: int):
  return _glue("moveaxis", lambda v: jnp.moveaxis(v, source, destination), x, source=source,
               destination=destination)


def take_along_axis(x, idx, axis: int):
  return _glue("take_along_axis", lambda v, i: jnp.take_along_axis(v, i, axis=axis), x, idx, axis=axis)


def concatenate(xs: Sequence, axis: int = -1):
  """Concatenation of masks (quantized activations go through `Concat`, which requantizes to one scale)."""
  if not any(isinstance(x, QTensor) for x in xs):
    return jnp.concatenate(xs, axis=axis)
  if any(Q.is_q(x) for x in xs):
    raise ValueError("P.concatenate joins masks; concatenate activations with the Concat module")
  return _glue("concatenate", lambda *vs: jnp.concatenate(vs, axis=axis), xs[0], *xs[1:], axis=axis)


def join(xs: Sequence, axis: int = -2):
  """Concatenation of code tensors on one scale (the sparse and the dense goals, and their logits: the same
  quantization points), a layout op; `convert` checks that the scales agree. Masks join with `concatenate`."""
  if not any(isinstance(x, QTensor) for x in xs):
    return jnp.concatenate(xs, axis=axis)
  if not all(Q.is_q(x) for x in xs):
    raise ValueError("P.join concatenates quantized activations of one scale; masks go through P.concatenate")
  valid = None if all(x.valid is None for x in xs) else \
      jnp.concatenate([Q.full_valid(x) for x in xs], axis=axis)
  out = QTensor(jnp.concatenate([x.value for x in xs], axis=axis), xs[0].scale, valid, xs[0].bits, xs[0].name)
  rec = Q.recorder()
  if rec is not None:
    out.name = rec.fresh(f"{xs[0].name.split('~')[0]}~concatenate")
    rec.add("concatenate", out.name, list(xs), out, {"axis": axis})
  return out


def masked_top_k(x, mask, k: int):
  """Indices (last axis) of the k largest entries where mask; masked ones last, ties to the lower index.
  On codes the order is the codes' (scale > 0), so the integer program picks the same goals."""
  idx = jax.lax.top_k(jnp.where(Q.raw(mask), Q.raw(x), -jnp.inf), k)[1]
  rec = Q.recorder()
  if rec is None or not isinstance(x, QTensor):
    return idx
  out = QTensor(idx, None, None, 0, rec.fresh(f"{x.name}~top_k"))
  rec.add("top_k", out.name, [x, mask], out, {"k": int(k)})
  return out


def quantize_as(x: jax.Array, like):
  """A float tensor (the ground-truth endpoint in training) on `like`'s grid, as the program would see it."""
  if not Q.is_q(like):
    return x
  if Q.recorder() is not None:
    raise NotImplementedError("quantize_as is for the train path; the program records predict")
  if like.scale is None:
    return QTensor(x, None, None, like.bits, like.name)
  return QTensor(FQ.fake_quant(x, like.scale, like.bits), like.scale, None, like.bits, like.name)


def value(x) -> jax.Array:
  """The float value (fake-quant: codes * scale) of an activation; arrays pass."""
  return Q.raw(x)


def outputs(**named) -> dict:
  """The model's final tensors as floats (dequantized); while recording, they become the program's outputs."""
  rec = Q.recorder()
  if rec is not None:
    for role, x in named.items():
      rec.output(role, x)
  return {k: Q.raw(v) for k, v in named.items()}


# ---------------------------------------------------------------------------------------------- modules
# Each module runs its float form on plain arrays; on a QTensor it runs the calibration form (float +
# observer on its quantization point, `Q.Point`) or the fake-quant form (`fakequant.*`, which returns
# exactly codes * scale of the integer kernel), see quant/qtensor.py for the modes.
class Dense(nn.Module):
  """Linear layer on the last axis (HAT's 1x1 conv)."""
  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
    if not Q.is_q(x):
      return dense(x, kernel, bias)
    pt = Q.Point(self)
    if Q.calibrating(x):
      return pt.observed(dense(x.value, kernel, bias), Q.rows(x.valid))
    y = FQ.dense(x.value, kernel, bias, x.scale, pt.scale, x_bits=x.bits, y_bits=pt.bits)
    return pt.emit("dense", y, [x])


class LayerNorm(nn.Module):
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    if not Q.is_q(x):
      return layernorm(x, scale, bias, self.eps)
    pt = Q.Point(self)
    if Q.calibrating(x):
      return pt.observed(layernorm(x.value, scale, bias, self.eps), Q.rows(x.valid))
    y = FQ.layernorm(x.value, scale, bias, x.scale, pt.scale, x_bits=x.bits, y_bits=pt.bits, eps=self.eps)
    return pt.emit("layernorm", y, [x], {"eps": float(self.eps)})


class ReLU(nn.Module):
  @nn.compact
  def __call__(self, x):
    if not Q.is_q(x):
      return relu(x)
    if Q.calibrating(x):
      return Q.passed(self, relu(x.value), x, x.valid)
    return Q.emit(self, "relu", FQ.relu(x.value, x.scale, bits=x.bits), x.scale, x.bits, [x])


class MaskedMax(nn.Module):
  @nn.compact
  def __call__(self, x_xVxC, mask_xV):
    if not Q.is_q(x_xVxC):
      return masked_max(x_xVxC, mask_xV)
    x, m = x_xVxC, Q.raw(mask_xV)
    if Q.calibrating(x):
      return Q.passed(self, masked_max(x.value, m), x, jnp.any(Q.full_valid(x) & m[..., None], axis=-2))
    y = FQ.masked_max(x.value, m[..., None], x.scale, bits=x.bits, axis=-2)
    return Q.emit(self, "masked_max", y, x.scale, x.bits, [x, mask_xV])


class MatMul(nn.Module):
  transpose_b: bool = False
  scale: float | None = None

  @nn.compact
  def __call__(self, a, b):
    if not Q.is_q(a):
      return matmul(a, b, transpose_b=self.transpose_b, scale=self.scale)
    pt = Q.Point(self)
    if Q.calibrating(a):
      rows_a = Q.rows(Q.full_valid(a))                                   # (..., M, 1)
      vb = Q.full_valid(b)
      cols_b = jnp.swapaxes(Q.rows(vb), -1, -2) if self.transpose_b else jnp.any(vb, axis=-2, keepdims=True)
      y = matmul(a.value, b.value, transpose_b=self.transpose_b, scale=self.scale)
      return pt.observed(y, rows_a & cols_b)
    alpha = 1.0 if self.scale is None else float(self.scale)
    y = FQ.matmul(a.value, b.value, a.scale, b.scale, pt.scale, a_bits=a.bits, b_bits=b.bits, y_bits=pt.bits,
                  transpose_b=self.transpose_b, alpha=alpha)
    return pt.emit("matmul", y, [a, b], {"transpose_b": self.transpose_b, "alpha": alpha, "k": a.shape[-1]})


def _last_axis_only(axis: int, ndim: int, what: str) -> None:
  if axis not in (-1, ndim - 1):
    raise ValueError(f"quantized {what} runs over the last axis only; got axis={axis}")


class Softmax(nn.Module):
  axis: int = -1

  @nn.compact
  def __call__(self, x):
    if not Q.is_q(x):
      return softmax(x, self.axis)
    _last_axis_only(self.axis, x.ndim, "softmax")
    pt = Q.Point(self)
    if Q.calibrating(x):
      return pt.observed(softmax(x.value, -1), x.valid)
    return pt.emit("softmax", FQ.softmax(x.value, x.scale, pt.scale, x_bits=x.bits, y_bits=pt.bits), [x])


class LogSoftmax(nn.Module):
  """Float in every mode: in the quantized ones it is the epilogue that reads the dequantized scores."""
  axis: int = -1

  @nn.compact
  def __call__(self, x):
    if not Q.is_q(x):
      return log_softmax(x, self.axis)
    _last_axis_only(self.axis, x.ndim, "log-softmax")
    y = log_softmax(x.value, -1)
    rec = Q.recorder()
    if rec is None:
      return y
    out = QTensor(y, None, None, 0, Q.path(self))
    rec.add("log_softmax", out.name, [x], out)
    return out


class Add(nn.Module):
  @nn.compact
  def __call__(self, x, y):
    if not Q.is_q(x):
      return add(x, y)
    pt = Q.Point(self)
    if Q.calibrating(x):
      return pt.observed(add(x.value, y.value), Q.full_valid(x) & Q.full_valid(y))
    z = FQ.add(x.value, y.value, x.scale, y.scale, pt.scale, x_bits=x.bits, y_bits=y.bits, out_bits=pt.bits)
    return pt.emit("add", z, [x, y])


class Concat(nn.Module):
  axis: int = -1

  @nn.compact
  def __call__(self, xs):
    if not any(Q.is_q(x) for x in xs):
      return concat(xs, self.axis)
    pt = Q.Point(self)
    if Q.calibrating(xs[0]):
      valid = jnp.concatenate([Q.full_valid(x) for x in xs], axis=self.axis)
      return pt.observed(concat([x.value for x in xs], self.axis), valid)
    y = FQ.concat([x.value for x in xs], [x.scale for x in xs], pt.scale, bits=[x.bits for x in xs],
                  out_bits=pt.bits, axis=self.axis)
    return pt.emit("concat", y, list(xs), {"axis": self.axis})


class MaskAdd(nn.Module):
  neg: float = MASK_NEG

  @nn.compact
  def __call__(self, x, mask):
    if not Q.is_q(x):
      return mask_add(x, mask, self.neg)
    if self.neg != -A.MASK_NEG_Q:
      raise ValueError(f"the integer mask add adds {A.MASK_NEG_Q} at scale 1; MaskAdd.neg is {self.neg}")
    pt = Q.Point(self)
    m = Q.raw(mask)
    if Q.calibrating(x):
      # Masked entries are padding and not observed (so more padding moves nothing), but -100 must stay
      # representable: one sample, the lowest real entry - 100, stands for them when a real row has any.
      valid = Q.full_valid(x)
      lowest = jnp.min(jnp.where(valid, x.value, jnp.inf)) - self.neg
      has_masked = jnp.any(Q.rows(valid) & ~jnp.broadcast_to(m, x.shape))
      return pt.observed(mask_add(x.value, m, self.neg), valid, extra=(lowest, has_masked))
    y = FQ.mask_add(x.value, m, x.scale, pt.scale, x_bits=x.bits, out_bits=pt.bits)
    return pt.emit("mask_add", y, [x, mask])


class MaskedFill(nn.Module):
  """x where mask else `value`. On the raw inputs in a quantized mode this is the input quantization point:
  padded entries (possibly NaN) are zeroed, then the rest quantized; the observer sees the real entries."""
  value: float = 0.0

  @nn.compact
  def __call__(self, x, mask):
    if Q.is_q(x):
      m = Q.raw(mask)
      if Q.calibrating(x):
        return Q.passed(self, masked_fill(x.value, m, self.value), x, x.valid)
      if self.value != 0.0:
        raise ValueError(f"a quantized masked fill fills with code 0; got value={self.value}")
      return Q.emit(self, "masked_fill", FQ.masked_fill(x.value, m, x.scale, bits=x.bits), x.scale, x.bits,
                    [x, mask])
    if not Q.in_quant_mode(self):
      return masked_fill(x, mask, self.value)
    if self.value != 0.0:
      raise ValueError(f"an input quantization point fills with 0; got value={self.value}")
    pt = Q.Point(self)
    m = Q.raw(mask)
    xf = jnp.where(m, Q.raw(x), 0.0)
    if self.is_mutable_collection("quant"):
      return pt.observed(xf, m)
    return pt.emit("quantize", FQ.fake_quant(xf, pt.scale, pt.bits), [x, mask])


class DenseGrid(nn.Module):
  """DenseTNT's dense goals: the lattice grid around each seed goal (B, M, 2) -> (B, M*D, 2), D = (2r+1)^2.
  Keeps the seeds' scale: on codes the lattice step is `arith.grid_step(scale, spacing)` codes."""
  spacing: float = 1.0
  radius: int = 2

  @nn.compact
  def __call__(self, seeds_BxMx2):
    if not Q.is_q(seeds_BxMx2):
      return dense_grid(seeds_BxMx2, self.spacing, self.radius)
    x = seeds_BxMx2
    d = (2 * self.radius + 1)**2
    if Q.calibrating(x):
      valid = None if x.valid is None else jnp.repeat(Q.full_valid(x), d, axis=-2)
      return Q.passed(self, dense_grid(x.value, self.spacing, self.radius), x, valid)
    y = FQ.dense_grid(x.value, x.scale, spacing=self.spacing, radius=self.radius, bits=x.bits)
    return Q.emit(self, "dense_grid", y, x.scale, x.bits, [x], {"spacing": float(self.spacing),
                                                                "radius": int(self.radius)})


class DenseGridMask(nn.Module):
  """(B, M*D) bool of `DenseGrid`'s points: a valid seed's, not in an earlier seed's grid, and (on codes)
  inside the code range."""
  spacing: float = 1.0
  radius: int = 2

  @nn.compact
  def __call__(self, seeds_BxMx2, seed_valid_BxM):
    x, valid = seeds_BxMx2, Q.raw(seed_valid_BxM)
    if not Q.is_q(x) or Q.calibrating(x):
      return dense_grid_mask(Q.raw(x), valid, self.spacing, self.radius)
    y = FQ.dense_grid_mask(x.value, valid, x.scale, spacing=self.spacing, radius=self.radius, bits=x.bits)
    rec = Q.recorder()
    if rec is None:
      return y
    out = QTensor(y, None, None, 0, Q.path(self))
    rec.add("dense_grid_mask", out.name, [x, seed_valid_BxM], out, {"spacing": float(self.spacing),
                                                                     "radius": int(self.radius)})
    return out


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
