"""Integer kernels of the int8 target: every op on int32 arrays holding int8/int16 codes, jittable, x64-free.

Scheme (QUANT_NOTES): symmetric scales `absmax / (2^(b-1) - 0.5)`, quantize = clip(floor(x * (1/s) + 0.5)),
round half UP everywhere (never jnp.round: half to even). Codes travel as int32 arrays whose values lie in
the int8/int16 range; they are narrowed (after a clip) only to feed an integer matmul.

Requantization (`mul_shift`, `requantize`): v * M * 2^-shift with an int16 multiplier |M| <= 32767 and ONE
rounding, floor((v * M + 2^(shift-1)) / 2^shift), computed exactly for ANY int32 v without int64: v is split
into 16-bit limbs v = hi * 2^16 + lo (hi in [-2^15, 2^15), lo in [0, 2^16)), so |lo * M| <= 65535 * 32767
< 2^31 and |hi * M + (lo * M >> 16)| < 2^30. A single rounding is a documented choice: the target's
int32 kernels pre-shift, multiply and shift again (two roundings, 2.8% of outputs 1 LSB off in the notes);
that is the `pre_shift` simulator setting of `Requant` (0 = single rounding, the default).

Written once for JAX and ONNX: each kernel takes its array namespace from its operands (`namespace`): jax.numpy
in the interpreter and the fake-quant forms, deploy/onnx_ops.OnnxNamespace (which spells each step with ONNX
ops) in the integer ONNX export. Floats appear only where a program input is quantized; every other constant is
an integer computed once by the `*_params` helpers. The float references at the end (the float ops the kernels
stand for) are written the same way.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

INT32_MIN = -2**31
MAX_SHIFT = 46      # |v * M| < 2^46 for any int32 v and |M| <= 2^15: a larger shift always gives 0
MULT_BITS = 15      # multipliers are normalised into [2^14, 2^15): int16, negatable


def qrange(bits: int) -> tuple[int, int]:
  """Stored range of a signed `bits` code: [-2^(b-1), 2^(b-1) - 1]."""
  return -2**(bits - 1), 2**(bits - 1) - 1


def _dtype(bits: int):
  if bits <= 8:
    return jnp.int8
  if bits <= 16:
    return jnp.int16
  raise ValueError(f"codes wider than 16 bits are not supported; got bits={bits}")


# ------------------------------------------------------------------------------------------ namespace
# The kernels use operators (+ - * >> << & comparisons) and the functions of a namespace `xp` taken from their
# operands (ONNX tensors carry `.xp`); besides jnp's names it has the primitives JAX and ONNX spell differently:
class _JnpNamespace:
  """jax.numpy, plus `bit_length`, `code_matmul` (the native integer matmul), `top_k_indices`,
  `exact_multiply` (one float32 product, never rewritten) and the float references' `rsqrt`, `stop_gradient`
  and `log_softmax` (last axis)."""
  wide_matmul = True        # int16 x int16 dots are native (ONNX has MatMulInteger on 8-bit operands only)

  def __getattr__(self, name: str):
    return getattr(jnp, name)

  @staticmethod
  def bit_length(v):
    return 32 - jax.lax.clz(jnp.asarray(v, jnp.int32))

  @staticmethod
  def code_matmul(a_q, b_q, bits: int, transpose_b: bool = False):
    """a @ b (or a @ b^T) of `bits`-wide codes (numpy matmul axes), exact int32 sums. b^T as one dot
    contracting both last axes: a @ swapaxes(b) ran 2.7x slower (XLA materialized the transpose)."""
    a_q, b_q = a_q.astype(_dtype(bits)), b_q.astype(_dtype(bits))
    if transpose_b:
      return jnp.einsum("...mk,...nk->...mn", a_q, b_q, preferred_element_type=jnp.int32)
    return jnp.matmul(a_q, b_q, preferred_element_type=jnp.int32)

  @staticmethod
  def top_k_indices(x, k: int):
    return jax.lax.top_k(x, k)[1]

  rsqrt = staticmethod(jax.lax.rsqrt)
  stop_gradient = staticmethod(jax.lax.stop_gradient)
  log_softmax = staticmethod(lambda x: jax.nn.log_softmax(x, axis=-1))

  @staticmethod
  def exact_multiply(a, b):
    """float32 a * b that XLA can neither fold, reassociate nor contract (see `fmul`)."""
    return _pin(_pin(a) * _pin(b))


JNP = _JnpNamespace()


def namespace(*arrays):
  """The array namespace of a kernel's operands: the first one's that carries one (`.xp`), else `JNP`."""
  for a in arrays:
    xp = getattr(a, "xp", None) if not isinstance(a, (jax.Array, np.ndarray, int, float)) else None
    if xp is not None:
      return xp
  return JNP


# --------------------------------------------------------------------------------------------- scales
# Float arithmetic on scales must give the same bits eagerly (the converter), under jit (QAT) and in numpy /
# ONNX, or the two sides derive different integers. XLA's simplifier breaks that: it rewrites x / broadcast(s)
# and x / constant into x * (1/s) (23% of x / s values moved by an ulp) and reassociates constant products,
# sx * (absmax * c) -> absmax * (sx * c) (20 of 64 per-channel scales moved; a dense bias code and a LayerNorm
# output then differed by 1 LSB). So every float step that feeds an integer goes through `fmul` / `reciprocal`:
# one IEEE multiply or divide between optimization barriers, which XLA cannot fold, reassociate or contract
# into an FMA. The rest is exact (frexp, floor, powers of two by bit pattern).
def _pin(x) -> jax.Array:
  return jax.lax.optimization_barrier(jnp.asarray(x, jnp.float32))


def fmul(a, b) -> jax.Array:
  """a * b in float32, computed exactly as written (no reassociation, no FMA contraction) in every context."""
  return namespace(a, b).exact_multiply(a, b)


def reciprocal(s) -> jax.Array:
  """1 / s in float32, correctly rounded, never rewritten (ONNX: Reciprocal, or a stored constant)."""
  return _pin(jnp.float32(1.0) / _pin(s))


def pow2(n) -> jax.Array:
  """Exact float32 2^n for int n in [-126, 127], by bit pattern (jnp.exp2(-30.) is off by an ulp on CPU)."""
  n = jnp.clip(jnp.asarray(n, jnp.int32), -126, 127)
  return jax.lax.bitcast_convert_type(jnp.left_shift(n + 127, 23), jnp.float32)


def round_half_up(v: jax.Array) -> jax.Array:
  """floor(v + 0.5) for every float32 v, exactly: v + 0.5 itself rounds (half to even) once |v| >= 2^23,
  which moved bias codes near 9e6 by 1 between jit and eager; v - floor(v) is exact for all v."""
  f = namespace(v).floor(v)
  return f + (v - f >= 0.5).astype(np.float32)


def activation_scale(absmax, bits: int) -> jax.Array:
  """Symmetric scale absmax / (2^(b-1) - 0.5), as absmax * float32(1 / 127.5) (int8): +absmax -> 127.5 ->
  128 -> clips to 127; -absmax -> -127.5, a tie that rounds up to -127 (-128 is only reached below -absmax)."""
  absmax = jnp.maximum(jnp.asarray(absmax, jnp.float32), 1e-12)   # an all-zero tensor gets codes 0
  return fmul(absmax, np.float32(1.0 / (2**(bits - 1) - 0.5)))


def weight_scale_per_channel(w_KxN: jax.Array, bits: int = 8) -> jax.Array:
  """Per-output-channel (last axis) scale from the channel's absmax; the stored codes are [-127, 127]."""
  w = jnp.asarray(w_KxN, jnp.float32)
  absmax_N = jnp.max(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)
  return activation_scale(absmax_N, bits)


def quantize(x: jax.Array, scale, bits: int, narrow: bool = False) -> jax.Array:
  """int32 codes clip(floor(x * (1/s) + 0.5), qmin, qmax); `narrow` drops qmin (for tensors that get negated).

  The clip happens in float, before the cast (float -> int casts saturate in JAX but wrap in numpy).
  Idempotent on the grid: quantize(q * s, s) == q (the float error of q * s / s is far below 0.5).
  """
  qmin, qmax = qrange(bits)
  qmin = qmin + 1 if narrow else qmin
  q = round_half_up(fmul(x, reciprocal(scale)))
  return namespace(q).clip(q, qmin, qmax).astype(np.int32)


def dequantize(q: jax.Array, scale) -> jax.Array:
  """Codes to float: q * s in float32 (the fake-quant forward value is exactly this product)."""
  return fmul(namespace(q).asarray(q).astype(np.float32), scale)


# ------------------------------------------------------------------------------------------- requant
class Requant(NamedTuple):
  """v -> round(v * multiplier * 2^-shift) after an optional rounding pre-shift; int32 arrays, broadcastable."""
  multiplier: jax.Array   # int32 in [2^14, 2^15) (0 when the ratio underflows)
  shift: jax.Array        # int32 in [0, MAX_SHIFT]
  pre_shift: jax.Array    # int32 >= 0: 0 = single rounding; > 0 mimics an int32 kernel's first shift


def requant_params(ratio, pre_shift=0) -> Requant:
  """Integer form of a positive float ratio (s_in / s_out): ratio * 2^pre ~= M * 2^-shift, M 15-bit.

  Relative error of M * 2^-shift <= 2^-15 (M in [2^14, 2^15) rounded half up). Ratios below 2^-32 give
  M = 0 (every int32 input rounds to 0 anyway); ratios >= 2^15 saturate to M = 32767, shift = 0 (any
  non-zero input already saturates int16 there). Shared by fake-quant and the converter: both call this with
  the same float32 scales, so both get the same integers (frexp and one multiply are exact and portable).
  """
  pre = jnp.asarray(pre_shift, jnp.int32)
  r = fmul(ratio, pow2(pre))
  mant, exp = jnp.frexp(r)                                # r = mant * 2^exp, mant in [0.5, 1)
  m = jnp.floor(mant * 2.0**MULT_BITS + 0.5).astype(jnp.int32)
  carry = m >= 2**MULT_BITS                               # mant rounded up to 1.0
  m = jnp.where(carry, 2**(MULT_BITS - 1), m)
  shift = MULT_BITS - (exp + carry.astype(jnp.int32))
  under = (shift > MAX_SHIFT) | (r <= 0)
  over = shift < 0
  m = jnp.where(under, 0, jnp.where(over, 2**MULT_BITS - 1, m))
  shift = jnp.where(under | over, 0, shift)
  return Requant(m.astype(jnp.int32), shift.astype(jnp.int32), jnp.broadcast_to(pre, m.shape))


def rshift_round(v: jax.Array, k) -> jax.Array:
  """floor(v / 2^k + 1/2) for int32 v, k >= 0, without the overflow of (v + 2^(k-1)) >> k near 2^31.

  With v = a * 2^k + b (0 <= b < 2^k): (v + 2^(k-1)) >> k = a + [b >= 2^(k-1)] = (v >> k) + ((v >> (k-1)) & 1).
  """
  xp = namespace(v, k)
  v, k = xp.asarray(v, xp.int32), xp.asarray(k, xp.int32)
  half_bit = (v >> xp.maximum(k - 1, 0)) & 1
  return xp.where(k > 0, (v >> k) + half_bit, v)


def mul_shift(v: jax.Array, mult, shift, min_shift: int = 0) -> jax.Array:
  """floor((v * M + 2^(s-1)) / 2^s) in int32 for any int32 v, |M| <= 32767, s >= 0; saturation-safe.

  Exact whenever the result lies in the int16 range; outside it the returned value is still beyond the
  int16 range with the right sign, so a later clip to int8/int16 saturates correctly. Limbs: v*M = A*2^16 + rr
  with A = hi*M + (lo*M >> 16) (|A| < 2^30) and rr = lo*M & 0xFFFF. Then
    s < 16:  A' * 2^(16-s) + ((rr + 2^(s-1)) >> s), A' = clip(A, -2^15, 2^15 - 1) (<= 2^31 - 1 in magnitude)
    s = 16:  A + ((rr + 2^15) >> 16)
    s > 16:  (A + 2^(s-17)) >> (s - 16)      (< 2^30 + 2^29: fits)
    s > 46:  0 (|v * M| < 2^46)
  `min_shift`: a static lower bound of every shift (the interpreter reads it off the program's constants);
  >= 17 skips the s <= 16 branches (the same integers, a third of the work). 0: no bound known.
  """
  xp = namespace(v, mult, shift)
  v, m, s = (xp.asarray(u, xp.int32) for u in (v, mult, shift))
  lo = v & 0xFFFF
  hi = v >> 16
  lm = lo * m
  a = hi * m + (lm >> 16)
  if min_shift >= 17:
    e = xp.minimum(s - 16, MAX_SHIFT - 16)
    return xp.where(s > MAX_SHIFT, 0, (a + (1 << (e - 1))) >> e)
  rr = lm & 0xFFFF
  s_lo = xp.clip(s, 0, 15)
  a_sat = xp.clip(a, -2**15, 2**15 - 1)
  res_lo = (a_sat << (16 - s_lo)) + ((rr + ((1 << s_lo) >> 1)) >> s_lo)
  e = xp.clip(s - 16, 0, MAX_SHIFT - 16)
  rnd_hi = xp.where(e == 0, (rr + 2**15) >> 16, 1 << xp.maximum(e - 1, 0))
  res_hi = (a + rnd_hi) >> e
  res = xp.where(s < 16, res_lo, res_hi)
  return xp.where(s > MAX_SHIFT, 0, res)


class RequantHint(NamedTuple):
  """Static facts about a Requant's constants that let a kernel skip work without changing any result."""
  min_shift: int          # every shift >= this (mul_shift's one-branch form from 17)
  pre_shift: bool         # any pre-shift > 0


NO_HINT = RequantHint(0, True)


def requant_hint(rq: Requant) -> RequantHint:
  """The hint of concrete (numpy) constants; the interpreter keys its compiled runner on it."""
  return RequantHint(int(np.min(rq.shift)), bool(np.any(np.asarray(rq.pre_shift) != 0)))


def requantize(v: jax.Array, rq: Requant, bits: int, lower: int | None = None,
               hint: RequantHint = NO_HINT) -> jax.Array:
  """Requantize int32 `v` by `rq` and saturate to `bits` (optionally to [lower, qmax], e.g. 0 for a fused ReLU)."""
  qmin, qmax = qrange(bits)
  if hint.pre_shift:
    v = rshift_round(v, rq.pre_shift)
  y = mul_shift(v, rq.multiplier, rq.shift, hint.min_shift)
  return namespace(y).clip(y, qmin if lower is None else lower, qmax)


def bit_length(v: jax.Array) -> jax.Array:
  """Number of significant bits of a non-negative int32 (0 for 0); ONNX: ReduceSum(v >= 2^j, j = 0..30)."""
  return namespace(v).bit_length(v)


# ------------------------------------------------------------------------------------------- tables
def interp(table: jax.Array, u: jax.Array, frac_bits: int) -> jax.Array:
  """Linear interpolation in an int32 table at u >= 0: T[i] + ((T[i+1] - T[i]) * f + 2^(fb-1)) >> fb.

  i = u >> fb, f = u & (2^fb - 1). |T[i+1] - T[i]| * f < 2^16 * 2^fb: safe for fb <= 14.
  """
  xp = namespace(u)
  n = table.shape[0]
  i = xp.clip(u >> frac_bits, 0, n - 1)
  f = u & (2**frac_bits - 1)
  t0 = xp.take(table, i)
  t1 = xp.take(table, xp.minimum(i + 1, n - 1))
  return t0 + (((t1 - t0) * f + 2**(frac_bits - 1)) >> frac_bits)


# exp over [-12, 0]: int16 t in [-32768, 0] at scale 12 / 2^15, 8 segments x 64 entries (512 intervals of
# 64 codes) + the end point; values exp * 2^15 clipped to 32767. Interpolation error <= h^2/8 = 6.9e-5
# (h = 12/512), 2.2 int16 LSB; exp(-12) * 2^15 = 0.2 -> the table ends at 0.
EXP_RANGE = 12.0
EXP_T_SCALE = EXP_RANGE / 2**15
EXP_FRAC_BITS = 6
EXP_TABLE = np.clip(np.floor(np.exp(np.linspace(-EXP_RANGE, 0.0, 513)) * 2**15 + 0.5), 0, 2**15 - 1).astype(np.int32)
# 1/m for m in [2^14, 2^15] (a bit-normalised sum): 64 intervals of 256, values 2^29 / m in [2^14, 2^15].
RECIP_FRAC_BITS = 8
RECIP_TABLE = np.floor(2.0**29 / (2**14 + 256.0 * np.arange(65)) + 0.5).astype(np.int32)
# 1/sqrt(m) for m in [2^13, 2^15] (normalised by an even shift): 96 intervals of 256, values 2^21 / sqrt(m)
# in [2^13.5, 2^14.5] (int16). Interpolation error <= 9.2e-5 relative.
RSQRT_FRAC_BITS = 8
RSQRT_TABLE = np.floor(2.0**21 / np.sqrt(2**13 + 256.0 * np.arange(97)) + 0.5).astype(np.int32)


def clip_int32(v: jax.Array, limit: int) -> jax.Array:
  """int32 clip(v, -limit, limit) of integer-valued float32 `v` (a rounded bias code), exact for every v.

  Clipping in float32 first rounded the limit to float32: 2^31 - 1 - 16256 became 2^31 - 16256, one above the
  bound, so x . w + b could reach 2^31. Here v is saturated to [-2^31, 2^31 - 128] (float32 values that convert
  to int32 exactly), cast, and clipped in int32: the same code for every v inside the limit.
  """
  if not 0 <= limit <= 2**31 - 1:
    raise ValueError(f"clip_int32: limit {limit} is outside [0, 2^31 - 1]")
  v = jnp.clip(v, np.float32(-2.0**31), np.float32(2.0**31 - 128)).astype(jnp.int32)
  return jnp.clip(v, -limit, limit)


# ------------------------------------------------------------------------------------------- dense
class DenseParams(NamedTuple):
  w_q: jax.Array      # int32 [K, N], codes in [-127, 127] (narrow: never -128)
  b_q: jax.Array      # int32 [N] on the s_x * s_w grid, clipped so the accumulator stays in int32
  rq: Requant         # per output channel: s_x * s_w[n] / s_y


def dense_acc_bound(k: int, x_bits: int, w_bits: int = 8) -> int:
  """Largest |sum_k x*w| for K inputs of x_bits and narrow-range weights of w_bits."""
  return k * 2**(x_bits - 1) * (2**(w_bits - 1) - 1)


def dense_params(w_KxN, b_N, x_scale, y_scale, x_bits: int = 8, w_bits: int = 8,
                 two_shift: bool = False) -> DenseParams:
  """Integer weights, bias and per-channel requant of a Linear layer; used by fake-quant and the converter.

  Accumulator bound: |x . w| <= K * 2^(bx-1) * 127 (int8 x: K < 131k; int16 x: K <= 516) and the bias is
  clipped to 2^31 - 1 minus that, so x . w + b never leaves int32. `two_shift` pre-shifts the accumulator the
  way a 32-bit kernel would have to (acc_bits + 15 - 31 bits: 6 for K=128 int8) before the multiplier.
  """
  w = jnp.asarray(w_KxN, jnp.float32)
  k, n = w.shape
  bound = dense_acc_bound(k, x_bits, w_bits)
  if bound >= 2**31 - 1:
    raise ValueError(f"dense: K={k} with {x_bits}-bit inputs can overflow the int32 accumulator "
                     f"(bound {bound}); split K or use 8-bit inputs")
  s_w = weight_scale_per_channel(w, w_bits)
  w_q = quantize(w, s_w, w_bits, narrow=True)
  s_acc = fmul(x_scale, s_w)
  # two_shift: a 32-bit kernel sizes its pre-shift for |acc| <= 2 * bound, so the bias is clipped to bound.
  b_lim = bound if two_shift else 2**31 - 1 - bound
  if b_N is None:
    b_q = jnp.zeros((n,), jnp.int32)
  else:
    b_q = clip_int32(round_half_up(fmul(b_N, reciprocal(s_acc))), b_lim)
  pre = max(0, (2 * bound).bit_length() + MULT_BITS - 31) if two_shift else 0
  return DenseParams(w_q, b_q, requant_params(fmul(s_acc, reciprocal(y_scale)), pre))


def int_matmul(a_q, b_q, a_bits: int, b_bits: int, transpose_b: bool = False):
  """Exact int32 a @ b (or a @ b^T) of int8/int16 codes (numpy matmul axes: leading axes batch, a 2-D b
  shared); the callers bound the sum. An int16 operand against an int8 one (or any int16 one where the
  namespace has no wide matmul: ONNX's MatMulInteger is 8-bit) runs as int8 dots on its bytes,
  a = 256 hi + (lo - 128) + 128: 256 (hi . b) + ((lo - 128) . b) + 128 (1 . b), lo in [0, 255]. The same
  integers (int32 wraps mod 2^32 and the total fits), 6x faster on this CPU (4.3 vs 25 ms for 16k x 128 @ 128),
  where int8 dots are the fast path. 1 . b is a dot too: as a sum, XLA fused it into its consumers.
  """
  xp = namespace(a_q, b_q)
  k = a_q.shape[-1]
  if a_bits > 8 and (b_bits <= 8 or not xp.wide_matmul):
    hi, lo = a_q >> 8, (a_q & 255) - 128
    ones = np.ones((1,) * (a_q.ndim - 1) + (k,), np.int32)
    dot = lambda u: int_matmul(u, b_q, 8, b_bits, transpose_b)
    return 256 * dot(hi) + dot(lo) + 128 * dot(ones)
  if b_bits > 8 and (a_bits <= 8 or not xp.wide_matmul):
    hi, lo = b_q >> 8, (b_q & 255) - 128
    ones = np.ones((1, k) if transpose_b else (k, 1), np.int32)
    dot = lambda u: int_matmul(a_q, u, a_bits, 8, transpose_b)
    return 256 * dot(hi) + dot(lo) + 128 * dot(ones)
  return xp.code_matmul(a_q, b_q, max(a_bits, b_bits), transpose_b)


def dense(x_q: jax.Array, p: DenseParams, y_bits: int = 8, x_bits: int = 8, w_bits: int = 8,
          relu: bool = False, hint: RequantHint = NO_HINT) -> jax.Array:
  """y = requant(x_q @ w_q + b_q) per output channel, saturated to y_bits (clipped at 0 with a fused ReLU)."""
  acc = int_matmul(x_q, p.w_q, x_bits, w_bits) + p.b_q
  return requantize(acc, p.rq, y_bits, lower=0 if relu else None, hint=hint)


# --------------------------------------------------------------------------------- pointwise / pooling
def relu(x_q: jax.Array) -> jax.Array:
  """max(x, 0) on the codes; the scale passes through."""
  return namespace(x_q).maximum(x_q, 0)


def masked_max(x_q: jax.Array, mask: jax.Array, axis: int = -2) -> jax.Array:
  """Max over `axis` of the entries where `mask` (broadcastable to x) is True; all-masked -> 0. Scale passes.

  Masked entries become INT32_MIN, below every int16 code, so they never win; no negation anywhere. On floats
  (the float reference) the lowest float32 instead.
  """
  xp = namespace(x_q, mask)
  v = xp.max(xp.where(mask, x_q, _lowest(x_q)), axis=axis)
  return xp.where(xp.any(mask, axis=axis), v, 0)


def _lowest(x):
  """The fill a masked max gives masked entries: INT32_MIN on codes, the lowest float32 on floats."""
  return np.finfo(np.float32).min if np.dtype(x.dtype).kind == "f" else INT32_MIN


def masked_fill(x_q: jax.Array, mask: jax.Array, value_q: int = 0) -> jax.Array:
  """x where mask else a constant code (0 for a zero fill at any scale)."""
  return namespace(x_q, mask).where(mask, x_q, value_q)


# ------------------------------------------------------------------------------------------- matmul
def matmul_pre_shifts(k: int, a_bits: int, b_bits: int) -> tuple[int, int]:
  """Rounding right shifts of a and b so |sum_K a'b'| <= K * 2^(ba-1-ka) * 2^(bb-1-kb) <= 2^30.

  ka + kb = max(0, ceil(log2 K) + ba + bb - 32), taken from the wider operand first, then split evenly.
  int8 x int8 needs none below K = 2^16; int16 x int16 at K = 128 drops 7 bits (4 from a, 3 from b).
  """
  need = max(0, (k - 1).bit_length() + a_bits + b_bits - 32)
  ka = kb = 0
  while need > 0:
    if a_bits - ka >= b_bits - kb:
      ka += 1
    else:
      kb += 1
    need -= 1
  return ka, kb


def matmul_params(a_scale, b_scale, y_scale, k: int, a_bits: int = 8, b_bits: int = 8,
                  alpha: float = 1.0) -> Requant:
  """Requant of an activation x activation matmul: s_a 2^ka * s_b 2^kb * alpha / s_y (alpha: e.g. 1/sqrt(d))."""
  ka, kb = matmul_pre_shifts(k, a_bits, b_bits)
  ratio = fmul(fmul(a_scale, b_scale), np.float32(2**(ka + kb) * alpha))
  return requant_params(fmul(ratio, reciprocal(y_scale)))


def matmul(a_q: jax.Array, b_q: jax.Array, rq: Requant, y_bits: int = 8, a_bits: int = 8, b_bits: int = 8,
           transpose_b: bool = False, hint: RequantHint = NO_HINT) -> jax.Array:
  """Batched a @ b (or a @ b^T) over the last two axes: pre-shift (int16), int32 accumulation, requant."""
  k = a_q.shape[-1]
  ka, kb = matmul_pre_shifts(k, a_bits, b_bits)
  a_q = rshift_round(a_q, ka)
  b_q = rshift_round(b_q, kb)
  return requantize(int_matmul(a_q, b_q, a_bits, b_bits, transpose_b), rq, y_bits, hint=hint)


# ------------------------------------------------------------------------------------------ softmax
class SoftmaxParams(NamedTuple):
  rq_t: Requant   # x - max (scale s_x) -> exp-table input t (scale 12 / 2^15)
  rq_y: Requant   # e * (2^29 / sum) * 2^-k -> output (scale s_y): ratio 2^-29 / s_y, plus the row's k


def softmax_params(x_scale, y_scale) -> SoftmaxParams:
  return SoftmaxParams(requant_params(fmul(x_scale, np.float32(1.0 / EXP_T_SCALE))),
                       requant_params(fmul(np.float32(2.0**-29), reciprocal(y_scale))))


def softmax(x_q: jax.Array, p: SoftmaxParams, mask: jax.Array | None = None, y_bits: int = 8,
            hint: RequantHint = NO_HINT) -> jax.Array:
  """Softmax over the last axis (N <= 65537), int16 inside; masked entries and all-masked rows give 0.

  d = x - max (int32) -> t = requant(d) clipped to [-2^15, 0] -> e = exp table (<= 32767, the max entry
  gives 32767, so a row with a valid entry has S >= 2^15 - 1) -> S = sum e (<= N * 32767 < 2^31) ->
  S = m 2^k, m in [2^14, 2^15) -> r = 2^29 / m by table -> e * r (< 2^30) -> requant with shift + k.
  """
  xp = namespace(x_q, mask)
  if mask is None:
    mx = xp.max(x_q, axis=-1, keepdims=True)
  else:
    valid = xp.broadcast_to(mask, x_q.shape)
    mx = xp.max(xp.where(valid, x_q, INT32_MIN), axis=-1, keepdims=True)
    mx = xp.where(xp.any(valid, axis=-1, keepdims=True), mx, 0)
  d = xp.minimum(x_q - mx, 0)                     # masked entries may exceed the max: clamp, zeroed below
  t = xp.clip(mul_shift(d, p.rq_t.multiplier, p.rq_t.shift), -2**15, 0)
  e = interp(EXP_TABLE, t + 2**15, EXP_FRAC_BITS)
  if mask is not None:
    e = xp.where(valid, e, 0)
  s = xp.sum(e, axis=-1, keepdims=True)
  k = xp.maximum(bit_length(s) - 15, 0)
  m = s >> k                                      # in [2^14, 2^15) when any entry is valid
  r = interp(RECIP_TABLE, xp.clip(m - 2**14, 0, 2**14), RECIP_FRAC_BITS)
  y = mul_shift(e * r, p.rq_y.multiplier, p.rq_y.shift + k, hint.min_shift)   # k >= 0: the hint holds
  return xp.clip(y, 0, qrange(y_bits)[1])


# ---------------------------------------------------------------------------------------- layernorm
class LayerNormParams(NamedTuple):
  eps_m: jax.Array    # int32 in [2^14, 2^15]: eps on the grid of D^2 (D = C x - sum x), eps C^3 / s_x^2 ...
  eps_e: jax.Array    # int32: ... = eps_m * 2^eps_e (a float32-wide constant: huge for a fine int16 s_x)
  rq_z: Requant       # sqrt(C) 2^-21 / s_z; every row adds its rsqrt exponent k and its square shift h
  g_q: jax.Array      # int32 [C], int16 gamma codes (narrow, per-tensor scale)
  b_q: jax.Array      # int32 [C], beta on the (z * g) >> LN_PRE_SHIFT grid, like a dense bias
  rq_y: Requant       # accumulator -> output


LN_PRE_SHIFT = 4      # z * g (< 2^30) >> 4 leaves room for |beta| up to 2^(5+4) * max|gamma| in the int32 sum


def layernorm_zexp(c: int) -> int:
  """z = (x - mean) / sigma is int16 at scale 2^(zexp - 15): |z| <= sqrt(C - 1) < 2^zexp (C=128: 4)."""
  return max(1, int(np.ceil(np.log2(np.sqrt(c)))))


def layernorm_params(gamma_C, beta_C, x_scale, y_scale, x_bits: int = 8, eps: float = 1e-5,
                     g_bits: int = 16) -> LayerNormParams:
  """Integer constants of a LayerNorm over C channels; z never depends on s_x, only eps does.

  beta enters the accumulator like a dense bias (int32), not as a separate int16 add: one rounding fewer.
  """
  del x_bits  # the kernel's shifts adapt per row; kept for a uniform signature
  c = int(jnp.shape(gamma_C)[-1])
  s_x = jnp.asarray(x_scale, jnp.float32)
  mant, e = jnp.frexp(fmul(np.float32(eps * c**3), reciprocal(fmul(s_x, s_x))))
  eps_m = jnp.floor(mant * 2.0**MULT_BITS + 0.5).astype(jnp.int32)
  s_z = 2.0**(layernorm_zexp(c) - 15)
  rq_z = requant_params(np.float32(np.sqrt(c) * 2.0**-21 / s_z))
  g = jnp.asarray(gamma_C, jnp.float32)
  s_g = activation_scale(jnp.max(jnp.abs(g)), g_bits)
  g_q = quantize(g, s_g, g_bits, narrow=True)
  s_acc = fmul(np.float32(s_z * 2**LN_PRE_SHIFT), s_g)
  b_q = clip_int32(round_half_up(fmul(beta_C, reciprocal(s_acc))), 2**31 - 1 - 2**(30 - LN_PRE_SHIFT))
  return LayerNormParams(eps_m, (e - MULT_BITS).astype(jnp.int32), rq_z, g_q, b_q,
                         requant_params(fmul(s_acc, reciprocal(y_scale))))


def layernorm(x_q: jax.Array, p: LayerNormParams, y_bits: int = 8, hint: RequantHint = NO_HINT) -> jax.Array:
  """LayerNorm over the last axis, int16 inside, with per-row power-of-two normalisation (z is scale free).

  D = C x - sum x (exact int32, |D| <= 2 (C-1) 2^(b-1) = 2^23 for int16, C=128) -> d = D >> kd, kd the
  row's excess over 15 bits (0 unless the row spans > 2^15 / C codes: small rows stay exact) -> sq = d^2 >> 2h,
  2h = 2 bitlen(max|d|) - 14, so sq <= 2^14 and sum sq <= C 2^14 -> v = sum sq + eps (eps_m 2^(eps_e - 2kd
  - 2h), capped at 2^30: only when eps > 2^16 max sq, where |z| < 2^-8 sqrt(C)) -> v = m 4^k, m in
  [2^13, 2^15] -> r = 2^21 / sqrt(m) by table -> z = requant(d r, shift + k + h) (|d r| < 2^30, int16) ->
  z * g (< 2^30) >> 4 + beta -> requant to y_bits. A static square shift (15) lost rows spanning a few
  codes (22 int8 LSB against float); this form measures <= 1 int8 LSB and 3-15 int16 LSB (<= 5e-4 relative:
  C x - sum x is constant mod C, so the squares' rounding is correlated along a row and does not average out).
  """
  xp = namespace(x_q)
  c = x_q.shape[-1]
  big_d = x_q * c - xp.sum(x_q, axis=-1, keepdims=True)
  dmax = xp.maximum(xp.max(big_d, axis=-1, keepdims=True), -xp.min(big_d, axis=-1, keepdims=True))
  kd = xp.maximum(bit_length(dmax) - 15, 0)
  d = xp.clip(rshift_round(big_d, kd), -2**15, 2**15 - 1)
  h = xp.maximum(bit_length(xp.minimum(rshift_round(dmax, kd), 2**15 - 1)) - 7, 0)
  sq = rshift_round(d * d, 2 * h)
  sh = xp.subtract(p.eps_e, 2 * (kd + h))
  eps_row = xp.where(sh >= 16, 2**30, xp.minimum(xp.left_shift(p.eps_m, xp.clip(sh, 0, 15)), 2**30))
  eps_row = xp.where(sh < 0, rshift_round(p.eps_m, xp.minimum(-sh, 31)), eps_row)
  v = xp.maximum(xp.sum(sq, axis=-1, keepdims=True) + eps_row, 1)
  k = (bit_length(v) - 14) >> 1                             # floor((nb - 14) / 2), in [-7, 8]
  m = xp.where(k >= 0, rshift_round(v, 2 * xp.maximum(k, 0)), v << (-2 * xp.minimum(k, 0)))
  r = interp(RSQRT_TABLE, xp.clip(m - 2**13, 0, 3 * 2**13), RSQRT_FRAC_BITS)
  z = xp.clip(mul_shift(d * r, p.rq_z.multiplier, xp.add(p.rq_z.shift, k + h)), -2**15, 2**15 - 1)
  acc = rshift_round(z * p.g_q, LN_PRE_SHIFT) + p.b_q
  return requantize(acc, p.rq_y, y_bits, hint=hint)


# ---------------------------------------------------------------------------------------- add/concat
class AddParams(NamedTuple):
  mx: jax.Array   # int32 multiplier of x: 2^shift if x has the larger scale, else the int16 qscale
  my: jax.Array   # int32 multiplier of y
  rq: Requant     # accumulator (scale s_large * 2^-shift) -> output


def add_params(x_scale, y_scale, out_scale, x_bits: int = 8, y_bits: int = 8) -> AddParams:
  """x << shift + y * qscale with the larger-scale input shifted: |qscale| <= 32767, shift <= 31 - bits_large.

  Bound: |x 2^shift| <= 2^30 and |y qscale| <= 2^15 * 32767 < 2^30, so the int32 sum never overflows.
  shift is as large as fits: qscale = round(s_small / s_large * 2^shift) keeps 15 significant bits.
  """
  sx = jnp.asarray(x_scale, jnp.float32)
  sy = jnp.asarray(y_scale, jnp.float32)
  x_large = sx >= sy
  s_large = jnp.where(x_large, sx, sy)
  ratio = fmul(jnp.where(x_large, sy, sx), reciprocal(s_large))  # in (0, 1]
  mant, exp = jnp.frexp(ratio)
  sh_q = MULT_BITS - exp - (jnp.floor(mant * 2.0**MULT_BITS + 0.5) > 2**MULT_BITS - 1).astype(jnp.int32)
  sh_cap = jnp.where(x_large, 31 - x_bits, 31 - y_bits)
  shift = jnp.clip(jnp.minimum(sh_q, sh_cap), 0, 31 - min(x_bits, y_bits))
  q = round_half_up(fmul(ratio, pow2(shift))).astype(jnp.int32)
  p2 = jnp.left_shift(1, shift)
  mx = jnp.where(x_large, p2, q)
  my = jnp.where(x_large, q, p2)
  s_acc = fmul(s_large, pow2(-shift))
  return AddParams(mx, my, requant_params(fmul(s_acc, reciprocal(out_scale))))


def add(x_q: jax.Array, y_q: jax.Array, p: AddParams, out_bits: int = 8, relu: bool = False,
        hint: RequantHint = NO_HINT) -> jax.Array:
  """Residual/fusion add: requant(x * mx + y * my), optionally with a fused ReLU."""
  return requantize(x_q * p.mx + y_q * p.my, p.rq, out_bits, lower=0 if relu else None, hint=hint)


MASK_NEG_Q = -100   # the additive mask at scale 1: fits int8


def mask_add(x_q: jax.Array, mask: jax.Array, p: AddParams, out_bits: int = 16,
             hint: RequantHint = NO_HINT) -> jax.Array:
  """x + (0 where mask else -100), the mask an int8 tensor at scale 1 (p = add_params(s_x, 1, s_out, bx, 8))."""
  return add(x_q, namespace(x_q, mask).where(mask, 0, MASK_NEG_Q), p, out_bits, hint=hint)


def concat_params(scales: Sequence, out_scale) -> list[Requant]:
  """One requant per input, s_i / s_out (ratio 1 is exact: M = 2^14, shift 14)."""
  return [requant_params(fmul(s, reciprocal(out_scale))) for s in scales]


def concat(xs_q: Sequence[jax.Array], rqs: Sequence[Requant], out_bits: int = 8, axis: int = -1,
           hints: Sequence[RequantHint] | None = None) -> jax.Array:
  """Requantize every input to the common output scale, then concatenate."""
  hints = hints or [NO_HINT] * len(rqs)
  ys = [requantize(x, rq, out_bits, hint=h) for x, rq, h in zip(xs_q, rqs, hints)]
  return namespace(*ys).concatenate(ys, axis=axis)


# ------------------------------------------------------------------------------------- dense goal grid
# DenseTNT's dense goal stage lays a square grid (1 m spacing, +-2 m: 5 x 5 points) around each of the top
# sparse goals. Grid points sit on one global lattice (point = (round(seed / spacing) + offset) * spacing), so
# two seeds' grids overlap in exactly equal points and de-duplication is an integer comparison. On codes the
# lattice step is `grid_step(scale, spacing)` codes: the float model's and the integer program's lattices are
# the same up to that rounding (<= half a code per metre: 0.01% at int16). The lattice helpers below take
# float or integer lattice coordinates alike, so the float form, the kernel and its fake-quant twin share them.
def grid_offsets(radius: int) -> np.ndarray:
  """(D, 2) int32 lattice offsets of a square grid of half-width `radius`, row-major over (dx, dy)."""
  r = np.arange(-radius, radius + 1, dtype=np.int32)
  return np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1).reshape(-1, 2)


def grid_step(scale, spacing: float) -> jax.Array:
  """int32 codes per lattice step: max(1, round_half_up(spacing / scale)), the same bits everywhere."""
  step = round_half_up(fmul(np.float32(spacing), reciprocal(scale)))
  return jnp.maximum(step, 1.0).astype(jnp.int32)


def grid_lattice(x_q: jax.Array, step) -> jax.Array:
  """Nearest lattice index of int32 codes, ties up: floor((x + step // 2) / step) (exact in int32)."""
  return namespace(x_q).floor_divide(x_q + step // 2, step)


def lattice_points(lattice_BxMx2: jax.Array, radius: int) -> jax.Array:
  """(B, M*D, 2) lattice coordinates of the grid points around each seed, seed-major."""
  pts = lattice_BxMx2[..., :, None, :] + grid_offsets(radius).astype(lattice_BxMx2.dtype)
  return pts.reshape(pts.shape[:-3] + (-1, 2))


def lattice_first(lattice_BxMx2: jax.Array, seed_valid_BxM: jax.Array, radius: int) -> jax.Array:
  """(B, M*D) bool: the grid point belongs to a valid seed and to no earlier valid seed's grid (the first copy
  of every lattice point is kept). Point L_m + (dx, dy) lies in seed m''s grid iff |L_m - L_m' + dx| <= R and
  |L_m - L_m' + dy| <= R: two (B, M, M', 2R+1) tables, and'ed per (dx, dy) (B x M^2 x D, not x 2D ints)."""
  xp = namespace(lattice_BxMx2, seed_valid_BxM)
  m, w = lattice_BxMx2.shape[-2], 2 * radius + 1
  r = np.arange(-radius, radius + 1).astype(lattice_BxMx2.dtype)
  d = lattice_BxMx2[..., :, None, :] - lattice_BxMx2[..., None, :, :]              # (B, M, M', 2)
  near = xp.abs(d[..., None, :] + r[:, None]) <= radius                            # (B, M, M', W, 2)
  covered = near[..., :, None, 0] & near[..., None, :, 1]                          # (B, M, M', W(dx), W(dy))
  earlier = seed_valid_BxM[..., None, :] & np.tri(m, m, -1, dtype=bool)            # m' < m, valid
  dup = xp.any(covered & earlier[..., None, None], axis=-3)                       # (B, M, W, W)
  keep = seed_valid_BxM[..., None] & ~dup.reshape(dup.shape[:-2] + (w * w,))
  return keep.reshape(keep.shape[:-2] + (-1,))


def dense_grid(x_q: jax.Array, step, radius: int, bits: int) -> jax.Array:
  """(B, M*D, 2) codes of the grid around each seed code (B, M, 2), saturated to the code range."""
  qmin, qmax = qrange(bits)
  return namespace(x_q).clip(lattice_points(grid_lattice(x_q, step), radius) * step, qmin, qmax)


def dense_grid_mask(x_q: jax.Array, seed_valid: jax.Array, step, radius: int, bits: int) -> jax.Array:
  """(B, M*D) bool: first copy of each grid point of a valid seed, and inside the code range (a saturated point
  would sit off its lattice point)."""
  qmin, qmax = qrange(bits)
  lat = grid_lattice(x_q, step)
  pts = lattice_points(lat, radius) * step
  inside = namespace(pts).all((pts >= qmin) & (pts <= qmax), axis=-1)
  return lattice_first(lat, seed_valid, radius) & inside


def grid_acc_bound(step: int, radius: int, bits: int) -> int:
  """Largest |int32 intermediate| of the grid kernels: the lattice point (L + R) * step for |x| <= 2^(b-1),
  the seed differences (2 L_max + R) and x + step // 2."""
  lmax = (2**(bits - 1) + step // 2) // step + 1
  return max((lmax + radius) * step, 2**(bits - 1) + step)


# --------------------------------------------------------------------------------------- float references
# The float ops the kernels stand for, written once for jnp and ONNX (by namespace): the fake-quant forms'
# gradient surrogates and the float / QDQ ONNX exports run them (`ops.OpDef.float`); the model's own float
# forms (model/primitives.py) add hand-written VJPs for training speed. relu, masked_max, masked_fill and the
# layout ops serve floats as they are.
def float_layernorm(x, gamma_C, beta_C, eps: float = 1e-5):
  xp = namespace(x)
  c = x - xp.mean(x, axis=-1, keepdims=True)
  return c * xp.rsqrt(xp.mean(c * c, axis=-1, keepdims=True) + eps) * gamma_C + beta_C


def float_softmax(x, mask=None):
  """Softmax over the last axis, finite everywhere: masked entries and all-masked rows give 0."""
  xp = namespace(x, mask)
  valid = True if mask is None else xp.broadcast_to(mask, x.shape)   # the same XLA graph (fusions, so gradient
  mx = xp.max(xp.where(valid, x, -np.inf), axis=-1, keepdims=True)   # bits) as before mask=None skipped the selects
  mx = xp.stop_gradient(xp.where(xp.isfinite(mx), mx, 0.0))
  e = xp.where(valid, xp.exp(xp.where(valid, x - mx, 0.0)), 0.0)
  return e / xp.maximum(xp.sum(e, axis=-1, keepdims=True), 1e-30)


def float_matmul(a, b, transpose_b: bool = False, alpha: float = 1.0):
  xp = namespace(a, b)
  y = xp.matmul(a, xp.swapaxes(b, -1, -2) if transpose_b else b)
  return y if alpha == 1.0 else y * alpha


def float_lattice(x, spacing: float):
  """Nearest lattice index (float, ties up) of metres: floor(x * (1 / spacing) + 0.5)."""
  return namespace(x).floor(x * np.float32(1.0 / spacing) + 0.5)


def float_dense_grid(seeds_BxMx2, spacing: float, radius: int):
  """(B, M*D, 2) metres: the square lattice grid of half-width `radius` around each seed (`dense_grid`)."""
  return lattice_points(float_lattice(seeds_BxMx2, spacing), radius) * np.float32(spacing)


def float_dense_grid_mask(seeds_BxMx2, seed_valid_BxM, spacing: float, radius: int):
  """(B, M*D) bool: the first copy of every lattice point of a valid seed (`lattice_first`)."""
  return lattice_first(float_lattice(seeds_BxMx2, spacing), seed_valid_BxM, radius)
