"""Fake-quant (QAT) twins of the integer kernels: float in, float out, forward value EXACTLY
`arith.<op>(quantized inputs) * output_scale` (bit for bit), backward from a float surrogate.

The forward runs the integer kernel itself (int32; `arith`), so the QAT graph and the integer program agree
by construction as long as both derive their constants with the same `arith.*_params` calls. Gradients come
from `jax.custom_vjp`: the backward is the VJP of the float op applied to fake-quantized inputs, with the
clipped straight-through estimator (zero gradient where an input or the output saturates beyond half an LSB)
and an identity STE for weights (their per-channel scale comes from their own absmax: nothing is clipped).
Scales get no gradient (no LSQ): activation scales are frozen after calibration, weight scales are
recomputed from the weights every step.

Why not `y_ref + stop_gradient(y_fq - y_ref)`: in float32 a + (b - a) != b (3 + (1e-8 - 3) == 0), so that
form is not bit-exact; `stop_gradient(q) + (x - stop_gradient(x))` is (x - x == 0 for finite x), and is what
`fake_quant` uses. Codes from an output: `arith.quantize(y, s, bits)`, never `y / s` (q * s / s != q for
11% of int16 codes in float32).

Chaining: give an op's input the producing op's output scale; quantize is idempotent on its own grid.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from densetnt_jax.quant import arith as A

sg = jax.lax.stop_gradient


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ste(value_fn: Callable, ref_fn: Callable, args: tuple) -> jax.Array:
  """value_fn(*args) forward; gradients of ref_fn(*args) backward (ref_fn recomputed in the backward)."""
  return value_fn(*args)


def _ste_fwd(value_fn, ref_fn, args):
  return value_fn(*args), args


def _ste_bwd(value_fn, ref_fn, args, g):
  _, vjp = jax.vjp(ref_fn, *args)
  return (vjp(g),)


_ste.defvjp(_ste_fwd, _ste_bwd)


# -------------------------------------------------------------------------------------- quantizers
def fake_quant(x: jax.Array, scale, bits: int = 8) -> jax.Array:
  """quantize(x) * s with the clipped STE: gradient 1 on [(qmin - 0.5) s, (qmax + 0.5) s], 0 outside."""
  s = sg(jnp.asarray(scale, jnp.float32))
  qmin, qmax = A.qrange(bits)
  x = jnp.asarray(x, jnp.float32)
  inside = (x >= (qmin - 0.5) * s) & (x <= (qmax + 0.5) * s)
  q = sg(A.dequantize(A.quantize(x, s, bits), s))
  return q + jnp.where(inside, x - sg(x), 0.0)


def fake_quant_weight(w_KxN: jax.Array, bits: int = 8) -> jax.Array:
  """Per-output-channel weight fake-quant (narrow codes [-127, 127]) with an identity STE."""
  s_N = sg(A.weight_scale_per_channel(w_KxN, bits))
  return sg(A.dequantize(A.quantize(w_KxN, s_N, bits, narrow=True), s_N)) + (w_KxN - sg(w_KxN))


def _out_ste(y: jax.Array, scale, bits: int) -> jax.Array:
  """Surrogate output: value y, gradient masked where the output code saturates."""
  s = sg(jnp.asarray(scale, jnp.float32))
  qmin, qmax = A.qrange(bits)
  inside = (y >= (qmin - 0.5) * s) & (y <= (qmax + 0.5) * s)
  return jnp.where(inside, y, sg(y))


def _deq(q, scale):
  return A.dequantize(q, scale)


# ------------------------------------------------------------------------------------------- dense
def _dense_value(x, w, b, x_scale, y_scale, *, x_bits, w_bits, y_bits, relu, two_shift):
  p = A.dense_params(w, b, x_scale, y_scale, x_bits, w_bits, two_shift)
  return _deq(A.dense(A.quantize(x, x_scale, x_bits), p, y_bits, x_bits, w_bits, relu), y_scale)


def _dense_ref(x, w, b, x_scale, y_scale, *, x_bits, w_bits, y_bits, relu, two_shift):
  y = jnp.matmul(fake_quant(x, x_scale, x_bits), fake_quant_weight(w, w_bits))
  if b is not None:
    y = y + b
  if relu:
    y = jnp.maximum(y, 0.0)
  return _out_ste(y, y_scale, y_bits)


def dense(x: jax.Array, w_KxN: jax.Array, b_N: jax.Array | None, x_scale, y_scale, *, x_bits: int = 8,
          w_bits: int = 8, y_bits: int = 8, relu: bool = False, two_shift: bool = False) -> jax.Array:
  """Linear over the last axis; per-channel int8 weights, bias on the accumulator grid; optional fused ReLU."""
  kw = dict(x_bits=x_bits, w_bits=w_bits, y_bits=y_bits, relu=relu, two_shift=two_shift)
  return _ste(functools.partial(_dense_value, **kw), functools.partial(_dense_ref, **kw),
              (x, w_KxN, b_N, x_scale, y_scale))


# --------------------------------------------------------------------------------- pointwise / pooling
def relu(x: jax.Array, scale, *, bits: int = 8) -> jax.Array:
  """ReLU on the codes; the output keeps the input scale."""
  value = lambda x, s: _deq(A.relu(A.quantize(x, s, bits)), s)
  ref = lambda x, s: jnp.maximum(fake_quant(x, s, bits), 0.0)
  return _ste(value, ref, (x, scale))


def masked_max(x: jax.Array, mask: jax.Array, scale, *, bits: int = 8, axis: int = -2) -> jax.Array:
  """Max over `axis` of entries where mask (broadcastable to x, e.g. mask_xV[..., None]); all-masked -> 0."""
  value = lambda x, m, s: _deq(A.masked_max(A.quantize(x, s, bits), m, axis), s)
  ref = lambda x, m, s: A.masked_max(fake_quant(x, s, bits), m, axis)
  return _ste(value, ref, (x, mask, scale))


def masked_fill(x: jax.Array, mask: jax.Array, scale, *, bits: int = 8) -> jax.Array:
  """x where mask else 0 (code 0 at any scale)."""
  value = lambda x, m, s: _deq(A.masked_fill(A.quantize(x, s, bits), m), s)
  ref = lambda x, m, s: jnp.where(m, fake_quant(x, s, bits), 0.0)
  return _ste(value, ref, (x, mask, scale))


def dense_grid(x: jax.Array, scale, *, spacing: float, radius: int, bits: int = 16) -> jax.Array:
  """arith.dense_grid on the seeds' codes, dequantized (same scale). No gradient: goals are data."""
  q = A.quantize(sg(x), scale, bits)
  return sg(_deq(A.dense_grid(q, A.grid_step(scale, spacing), radius, bits), scale))


def dense_grid_mask(x: jax.Array, seed_valid: jax.Array, scale, *, spacing: float, radius: int,
                    bits: int = 16) -> jax.Array:
  """arith.dense_grid_mask on the seeds' codes."""
  return A.dense_grid_mask(A.quantize(sg(x), scale, bits), seed_valid, A.grid_step(scale, spacing), radius, bits)


# ------------------------------------------------------------------------------------------- matmul
def matmul(a: jax.Array, b: jax.Array, a_scale, b_scale, y_scale, *, a_bits: int = 8, b_bits: int = 8,
           y_bits: int = 8, transpose_b: bool = False, alpha: float = 1.0) -> jax.Array:
  """Batched activation x activation a @ b (or a @ b^T) times a constant alpha folded into the requant."""
  k = a.shape[-1]

  def value(a, b, sa, sb, sy):
    rq = A.matmul_params(sa, sb, sy, k, a_bits, b_bits, alpha)
    return _deq(A.matmul(A.quantize(a, sa, a_bits), A.quantize(b, sb, b_bits), rq, y_bits, a_bits, b_bits,
                         transpose_b), sy)

  def ref(a, b, sa, sb, sy):
    bq = fake_quant(b, sb, b_bits)
    return _out_ste(A.float_matmul(fake_quant(a, sa, a_bits), bq, transpose_b, alpha), sy, y_bits)

  return _ste(value, ref, (a, b, a_scale, b_scale, y_scale))


# ------------------------------------------------------------------------------------------ softmax
def softmax(x: jax.Array, x_scale, y_scale, mask: jax.Array | None = None, *, x_bits: int = 8,
            y_bits: int = 8) -> jax.Array:
  """Softmax over the last axis (int16 inside, exp and reciprocal by table); masked/all-masked -> 0."""
  def value(x, m, xs, ys):
    return _deq(A.softmax(A.quantize(x, xs, x_bits), A.softmax_params(xs, ys), m, y_bits), ys)

  def ref(x, m, xs, ys):
    return _out_ste(A.float_softmax(fake_quant(x, xs, x_bits), m), ys, y_bits)

  return _ste(value, ref, (x, mask, x_scale, y_scale))


# ---------------------------------------------------------------------------------------- layernorm
def layernorm(x: jax.Array, gamma_C: jax.Array, beta_C: jax.Array, x_scale, y_scale, *, x_bits: int = 8,
              y_bits: int = 8, eps: float = 1e-5, g_bits: int = 16) -> jax.Array:
  """LayerNorm over the last axis with the integer kernel's quantization points (int16 gamma, int16 inside)."""
  def value(x, g, b, xs, ys):
    p = A.layernorm_params(g, b, xs, ys, x_bits, eps, g_bits)
    return _deq(A.layernorm(A.quantize(x, xs, x_bits), p, y_bits), ys)

  def ref(x, g, b, xs, ys):
    s_g = sg(A.activation_scale(jnp.max(jnp.abs(g)), g_bits))   # per-tensor int16 gamma, identity STE
    gq = sg(A.dequantize(A.quantize(g, s_g, g_bits, narrow=True), s_g)) + (g - sg(g))
    y = A.float_layernorm(fake_quant(x, xs, x_bits), gq, b, eps)
    return _out_ste(y, ys, y_bits)

  return _ste(value, ref, (x, gamma_C, beta_C, x_scale, y_scale))


# ---------------------------------------------------------------------------------------- add/concat
def add(x: jax.Array, y: jax.Array, x_scale, y_scale, out_scale, *, x_bits: int = 8, y_bits: int = 8,
        out_bits: int = 8, relu: bool = False) -> jax.Array:
  """x + y (residual / fusion), x << shift + y * qscale inside; optional fused ReLU."""
  def value(x, y, xs, ys, os):
    p = A.add_params(xs, ys, os, x_bits, y_bits)
    return _deq(A.add(A.quantize(x, xs, x_bits), A.quantize(y, ys, y_bits), p, out_bits, relu), os)

  def ref(x, y, xs, ys, os):
    z = fake_quant(x, xs, x_bits) + fake_quant(y, ys, y_bits)
    return _out_ste(jnp.maximum(z, 0.0) if relu else z, os, out_bits)

  return _ste(value, ref, (x, y, x_scale, y_scale, out_scale))


def mask_add(x: jax.Array, mask: jax.Array, x_scale, out_scale, *, x_bits: int = 16,
             out_bits: int = 16) -> jax.Array:
  """x + (0 where mask else -100), the mask int8 at scale 1 (HAT: int16 x and output)."""
  def value(x, m, xs, os):
    p = A.add_params(xs, 1.0, os, x_bits, 8)
    return _deq(A.mask_add(A.quantize(x, xs, x_bits), m, p, out_bits), os)

  def ref(x, m, xs, os):
    return _out_ste(fake_quant(x, xs, x_bits) + jnp.where(m, 0.0, float(A.MASK_NEG_Q)), os, out_bits)

  return _ste(value, ref, (x, mask, x_scale, out_scale))


def concat(xs: Sequence[jax.Array], scales: Sequence, out_scale, *, bits: Sequence[int], out_bits: int = 8,
           axis: int = -1) -> jax.Array:
  """Concatenate after requantizing every input to the common output scale."""
  bits = tuple(bits)

  def value(xs, scales, os):
    qs = [A.quantize(x, s, b) for x, s, b in zip(xs, scales, bits)]
    return _deq(A.concat(qs, A.concat_params(scales, os), out_bits, axis), os)

  def ref(xs, scales, os):
    y = jnp.concatenate([fake_quant(x, s, b) for x, s, b in zip(xs, scales, bits)], axis=axis)
    return _out_ste(y, os, out_bits)

  return _ste(value, ref, (tuple(xs), tuple(scales), out_scale))
