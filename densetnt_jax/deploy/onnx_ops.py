"""ONNX graph building blocks for `onnx_export`: an emitter over `onnx.helper` that folds constants in numpy,
the integer kernels of `quant/arith.py` written with ONNX integer ops, and the ONNX half of the op table:
`ONNX_OPS[kind]` (an `OnnxOpDef`) holds each op kind's float, QDQ and integer emitters, whether QDQ quantizes
its output, and its output's LSB. `onnx_export` walks a program and asks it; `quant/ops.py` (OPS) holds the rest
of each kind's definition (quant must not import onnx, an optional extra). A new op kind: one OpDef there and
one OnnxOpDef here (tests/test_op_table.py checks both tables list the same kinds).

`Emitter` methods take tensor names (str) or numpy arrays: when every operand is a numpy array the result is
computed in numpy (int32 wraps like XLA), so static requant shifts and masks cost no nodes and a Where on a
constant condition picks its branch at build time; nodes nothing reads are pruned when the model is built.

Integer kernels mirror `arith` line by line on int32 tensors holding int8/int16 codes (see its docstring for
the mapping): arithmetic right shift by 2^k as (v - Mod(v, 2^k)) / 2^k (Mod takes the divisor's sign, the
division is exact), v & (2^k - 1) as Mod(v, 2^k), 2^k of a tensor k by Gather from a table, the bit length
as ReduceSum(v >= 2^j), the exp / reciprocal / rsqrt tables by Gather, int8 x int8 dots by MatMulInteger
(int16 operands split into bytes, as `arith.int_dot`). int32 Mul and Add wrap in onnxruntime as in XLA.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from densetnt_jax.model.primitives import SMALL_K
from densetnt_jax.quant import arith as A

INT64_MAX = np.iinfo(np.int64).max
POW2_TABLE = (np.int64(1) << np.arange(31)).astype(np.int32)       # 2^0 .. 2^30
ONNX_DTYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int16): TensorProto.INT16, np.dtype(np.bool_): TensorProto.BOOL}
CODE_DTYPE = {8: np.int8, 16: np.int16}


def _wrap32(v) -> np.ndarray:
  """int64 results back to int32 with two's-complement wraparound (XLA's and onnxruntime's int32 behaviour)."""
  v = np.asarray(v)
  if v.dtype.kind in "iu":
    return ((v.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)
  return v


def _np_int(fn, a, b):
  """fn on int32 operands in int64, wrapped to int32 (float operands: fn as is)."""
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype.kind in "iu" and b.dtype.kind in "iu":
    return _wrap32(fn(a.astype(np.int64), b.astype(np.int64)))
  return fn(a, b)


def _trunc_div(a, b):
  q = np.abs(a) // np.abs(b)
  return np.where((a < 0) != (b < 0), -q, q)


class Emitter:
  """Nodes and initializers of one graph; names of program tensors are chosen by the caller."""

  def __init__(self):
    self.nodes: list = []
    self.initializers: list = []
    self._count = 0
    self._consts: dict = {}
    self.scope = "g"

  def fresh(self, hint: str) -> str:
    self._count += 1
    return f"{self.scope}/{hint}_{self._count}"

  def lift(self, x) -> str:
    """A tensor name for x (numpy arrays become initializers; small ones are shared)."""
    if isinstance(x, str):
      return x
    arr = np.asarray(x)
    if arr.dtype == np.float64:
      arr = arr.astype(np.float32)
    key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 256 else None
    if key is not None and key in self._consts:
      return self._consts[key]
    name = f"const/{arr.dtype.name}{list(arr.shape)}_{len(self.initializers)}"
    self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    if key is not None:
      self._consts[key] = name
    return name

  def node(self, op_type: str, inputs, hint: str | None = None, outputs=None, n_out: int = 1, **attrs):
    """Appends one node; returns its output name (a list when n_out > 1)."""
    if outputs is None:
      outputs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
    elif isinstance(outputs, str):
      outputs = [outputs]
    ins = ["" if i is None else self.lift(i) for i in inputs]
    self.nodes.append(helper.make_node(op_type, ins, list(outputs), name=f"{outputs[0]}:{op_type}", **attrs))
    return outputs[0] if len(outputs) == 1 else list(outputs)

  # ------------------------------------------------------------------ elementwise (numpy when constant)
  def _bin(self, op_type, fn, a, b):
    if not isinstance(a, str) and not isinstance(b, str):
      return _np_int(fn, a, b)
    return self.node(op_type, [a, b])

  def add(self, a, b):
    return self._bin("Add", np.add, a, b)

  def sub(self, a, b):
    return self._bin("Sub", np.subtract, a, b)

  def mul(self, a, b):
    return self._bin("Mul", np.multiply, a, b)

  def div(self, a, b):
    """Integer division truncating toward zero (ONNX Div on integers); true division on floats."""
    fn = lambda x, y: _trunc_div(x, y) if x.dtype.kind in "iu" else x / y
    return self._bin("Div", fn, a, b)

  def mod(self, a, b):
    """Remainder with the divisor's sign (Mod fmod=0, Python's %)."""
    return self._bin("Mod", np.mod, a, b)

  def minimum(self, a, b):
    return self._bin("Min", np.minimum, a, b)

  def maximum(self, a, b):
    return self._bin("Max", np.maximum, a, b)

  def ge(self, a, b):
    return self._bin("GreaterOrEqual", np.greater_equal, a, b)

  def gt(self, a, b):
    return self._bin("Greater", np.greater, a, b)

  def lt(self, a, b):
    return self._bin("Less", np.less, a, b)

  def eq(self, a, b):
    return self._bin("Equal", np.equal, a, b)

  def neg(self, a):
    """-a on int32."""
    return self.sub(np.zeros((), np.int32), a)

  def where(self, c, x, y):
    if not isinstance(c, str):
      c = np.asarray(c, bool)
      pick, other = (x, y) if c.all() else (y, x)
      if (c.all() or not c.any()) and np.shape(pick) == np.broadcast_shapes(np.shape(pick), c.shape):
        # a constant picked over a tensor would lose the tensor's shape: then the node stays
        if isinstance(pick, str) or not isinstance(other, str):
          return pick
      if not isinstance(x, str) and not isinstance(y, str):
        return np.where(c, x, y)
    return self.node("Where", [c, x, y])

  def clip(self, x, lo, hi, dtype=np.int32):
    """Clip to [lo, hi] (python numbers, as x's dtype: int32 unless told)."""
    if not isinstance(x, str):
      return np.clip(x, lo, hi).astype(np.asarray(x).dtype)
    return self.node("Clip", [x, np.asarray(lo, dtype), np.asarray(hi, dtype)])

  def cast(self, x, dtype):
    if not isinstance(x, str):
      return np.asarray(x).astype(dtype)
    return self.node("Cast", [x], to=ONNX_DTYPE[np.dtype(dtype)])

  def gather(self, table, idx):
    if not isinstance(idx, str):
      return np.take(np.asarray(table), idx)
    return self.node("Gather", [table, idx], axis=0)

  def reduce(self, op_type: str, x, axis: int, keepdims: bool = True):
    if not isinstance(x, str):
      fn = {"ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceMean": np.mean}[op_type]
      out = fn(np.asarray(x).astype(np.int64) if np.asarray(x).dtype.kind in "iu" else x, axis=axis,
               keepdims=keepdims)
      return _wrap32(out) if np.asarray(x).dtype.kind in "iu" else out.astype(np.float32)
    return self.node(op_type, [x, np.asarray([axis], np.int64)], keepdims=int(keepdims))

  def unsqueeze(self, x, axes):
    return self.node("Unsqueeze", [x, np.asarray(list(axes), np.int64)])

  def squeeze(self, x, axes):
    return self.node("Squeeze", [x, np.asarray(list(axes), np.int64)])

  def transpose_last2(self, x, ndim: int):
    perm = list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    if not isinstance(x, str):
      return np.transpose(x, perm)
    return self.node("Transpose", [x], perm=perm)

  # --------------------------------------------------------------------------------------- the model
  def model(self, inputs: list, outputs: list, *, opset: int, name: str, doc: str = "") -> onnx.ModelProto:
    """The ModelProto, with nodes that no output depends on dropped (and their initializers)."""
    needed = {o.name for o in outputs}
    keep = []
    for n in reversed(self.nodes):
      if any(o in needed for o in n.output):
        keep.append(n)
        needed.update(i for i in n.input if i)
    keep.reverse()
    inits = [t for t in self.initializers if t.name in needed]
    graph = helper.make_graph(keep, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="densetnt-jax",
                          doc_string=doc)
    m.ir_version = min(m.ir_version, 10)       # onnxruntime 1.2x reads IR <= 10
    return m


def value_info(name: str, shape, dtype) -> onnx.ValueInfoProto:
  """A graph input/output with a symbolic batch axis "B" (None in the program's shapes)."""
  dims = ["B" if d is None else int(d) for d in shape]
  return helper.make_tensor_value_info(name, ONNX_DTYPE[np.dtype(dtype)], dims)


# ----------------------------------------------------------------------------------------------- glue
def index(e: Emitter, x: str, idx: tuple, ndim: int) -> str:
  """x[idx] for basic indices (Ellipsis, slices with step 1, ints, None) as Slice, Squeeze, Unsqueeze."""
  idx = list(idx)
  consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
  fill = [slice(None)] * (ndim - consumed)
  if Ellipsis in idx:
    p = idx.index(Ellipsis)
    idx[p:p + 1] = fill
  else:
    idx += fill
  starts, ends, axes, squeeze, unsqueeze = [], [], [], [], []
  ax = out = 0
  for i in idx:
    if i is None:
      unsqueeze.append(out)
      out += 1
      continue
    if isinstance(i, slice):
      if i.step not in (None, 1):
        raise NotImplementedError(f"index: slice step {i.step}")
      if i != slice(None):
        starts.append(0 if i.start is None else i.start)
        ends.append(INT64_MAX if i.stop is None else i.stop)
        axes.append(ax)
      out += 1
    else:
      i = int(i)
      starts.append(i)
      ends.append(INT64_MAX if i == -1 else i + 1)
      axes.append(ax)
      squeeze.append(ax)
    ax += 1
  y = x
  if axes:
    y = e.node("Slice", [y, np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(axes, np.int64)])
  if squeeze:
    y = e.squeeze(y, squeeze)
  if unsqueeze:
    y = e.unsqueeze(y, unsqueeze)
  return y if y != x else e.node("Identity", [x])


def top_k(e: Emitter, x: str, mask: str, k: int, low, out: str) -> str:
  """Indices (int32) of the k largest entries of the last axis where mask; masked ones last (`low` fill),
  ties to the lower index (ONNX TopK, as lax.top_k)."""
  _, idx = e.node("TopK", [e.where(mask, x, low), np.asarray([k], np.int64)], n_out=2, axis=-1, largest=1,
                  sorted=1)
  return e.node("Cast", [idx], outputs=out, to=TensorProto.INT32)


# ------------------------------------------------------------------------------------- integer kernels
def i32(v) -> np.ndarray:
  return np.asarray(v, np.int32)


def pow2(e: Emitter, k):
  """2^k for int32 k in [0, 30] (numpy, or Gather from a table)."""
  if not isinstance(k, str):
    return _wrap32(np.left_shift(np.int64(1), np.clip(np.asarray(k, np.int64), 0, 30)))
  return e.gather(POW2_TABLE, e.clip(k, 0, 30))


def ashr(e: Emitter, v, k):
  """Arithmetic right shift v >> k (floor(v / 2^k)) for int32 v and 0 <= k <= 31."""
  if not isinstance(k, str) and not np.any(np.asarray(k)):
    return v
  p = pow2(e, k)                       # k clipped to 30; k = 31 (eps shifts) takes one more halving below
  r = e.div(e.sub(v, e.mod(v, p)), p)
  return e.where(e.gt(k, i32(30)), e.div(e.sub(r, e.mod(r, i32(2))), i32(2)), r)


def rshift_round(e: Emitter, v, k):
  """arith.rshift_round: floor(v / 2^k + 1/2) = (v >> k) + ((v >> (k - 1)) & 1), v for k = 0."""
  if not isinstance(k, str) and not np.any(np.asarray(k)):
    return v
  half = e.mod(ashr(e, v, e.maximum(e.sub(k, i32(1)), i32(0))), i32(2))
  return e.where(e.gt(k, i32(0)), e.add(ashr(e, v, k), half), v)


def mul_shift(e: Emitter, v, mult, shift):
  """arith.mul_shift: floor((v * M + 2^(s-1)) / 2^s) exactly in int32 with 16-bit limbs (same steps)."""
  m = mult
  lo = e.mod(v, i32(65536))
  hi = e.div(e.sub(v, lo), i32(65536))
  lm = e.mul(lo, m)
  a = e.add(e.mul(hi, m), ashr(e, lm, i32(16)))
  rr = e.mod(lm, i32(65536))
  s = shift
  s_lo = e.clip(s, 0, 15) if isinstance(s, str) else np.clip(s, 0, 15).astype(np.int32)
  a_sat = e.clip(a, -2**15, 2**15 - 1)
  half_lo = ashr(e, pow2(e, s_lo), i32(1))
  res_lo = e.add(e.mul(a_sat, pow2(e, e.sub(i32(16), s_lo))), ashr(e, e.add(rr, half_lo), s_lo))
  ex = e.clip(e.sub(s, i32(16)), 0, A.MAX_SHIFT - 16) if isinstance(s, str) else \
      np.clip(np.asarray(s) - 16, 0, A.MAX_SHIFT - 16).astype(np.int32)
  rnd_hi = e.where(e.eq(ex, i32(0)), ashr(e, e.add(rr, i32(2**15)), i32(16)),
                   pow2(e, e.maximum(e.sub(ex, i32(1)), i32(0))))
  res_hi = ashr(e, e.add(a, rnd_hi), ex)
  res = e.where(e.lt(s, i32(16)), res_lo, res_hi)
  return e.where(e.gt(s, i32(A.MAX_SHIFT)), i32(0), res)


def requantize(e: Emitter, v, c: dict, prefix: str, bits: int, lower: int | None = None):
  """arith.requantize with the op's consts `{prefix}mult/shift/pre`: pre-shift, mul_shift, saturate."""
  qmin, qmax = A.qrange(bits)
  v = rshift_round(e, v, i32(c[f"{prefix}pre"]))
  y = mul_shift(e, v, i32(c[f"{prefix}mult"]), i32(c[f"{prefix}shift"]))
  return e.clip(y, qmin if lower is None else lower, qmax)


def bit_length(e: Emitter, v):
  """Significant bits of a non-negative int32: ReduceSum(v >= 2^j, j = 0..30)."""
  ge = e.ge(e.unsqueeze(v, [-1]), POW2_TABLE)
  return e.reduce("ReduceSum", e.cast(ge, np.int32), -1, keepdims=False)


def interp(e: Emitter, table: np.ndarray, u, frac_bits: int):
  """arith.interp: T[i] + ((T[i+1] - T[i]) f + 2^(fb-1)) >> fb, i = u >> fb, f = u & (2^fb - 1)."""
  n = table.shape[0]
  i = e.clip(ashr(e, u, i32(frac_bits)), 0, n - 1)
  f = e.mod(u, i32(2**frac_bits))
  t0 = e.gather(table.astype(np.int32), i)
  t1 = e.gather(table.astype(np.int32), e.minimum(e.add(i, i32(1)), i32(n - 1)))
  return e.add(t0, ashr(e, e.add(e.mul(e.sub(t1, t0), f), i32(2**(frac_bits - 1))), i32(frac_bits)))


def split_bytes(e: Emitter, x):
  """int16 codes as (hi, lo) int8 values: x = 256 hi + lo + 128 (arith.int_dot's byte split)."""
  return ashr(e, x, i32(8)), e.sub(e.mod(x, i32(256)), i32(128))


def int_matmul(e: Emitter, a, a_bits: int, b, b_bits: int):
  """Exact int32 a @ b (numpy-style batched over leading axes) of int8/int16 codes: MatMulInteger on int8
  operands; an int16 operand is split into bytes, a.b = 256 hi.b + lo.b + 128 sum_k b (the integers of
  arith.int_dot: the sum fits int32 and the parts wrap consistently)."""
  if a_bits > 8:
    hi, lo = split_bytes(e, a)
    ones = e.reduce("ReduceSum", b, -2)                                  # (..., 1, N)
    return e.add(e.add(e.mul(i32(256), int_matmul(e, hi, 8, b, b_bits)), int_matmul(e, lo, 8, b, b_bits)),
                 e.mul(i32(128), ones))
  if b_bits > 8:
    hi, lo = split_bytes(e, b)
    ones = e.reduce("ReduceSum", a, -1)                                  # (..., M, 1)
    return e.add(e.add(e.mul(i32(256), int_matmul(e, a, a_bits, hi, 8)), int_matmul(e, a, a_bits, lo, 8)),
                 e.mul(i32(128), ones))
  return e.node("MatMulInteger", [e.cast(a, np.int8), e.cast(b, np.int8)])


def layernorm(e: Emitter, x, c: dict, bits: int, channels: int):
  """arith.layernorm, step by step (per-row shifts kd, h, k are tensors)."""
  big_d = e.sub(e.mul(x, i32(channels)), e.reduce("ReduceSum", x, -1))
  dmax = e.maximum(e.reduce("ReduceMax", big_d, -1), e.neg(e.reduce("ReduceMin", big_d, -1)))
  kd = e.maximum(e.sub(bit_length(e, dmax), i32(15)), i32(0))
  d = e.clip(rshift_round(e, big_d, kd), -2**15, 2**15 - 1)
  h = e.maximum(e.sub(bit_length(e, e.minimum(rshift_round(e, dmax, kd), i32(2**15 - 1))), i32(7)), i32(0))
  sq = rshift_round(e, e.mul(d, d), e.mul(i32(2), h))
  sh = e.sub(i32(c["eps_e"]), e.mul(i32(2), e.add(kd, h)))
  eps_m = i32(c["eps_m"])
  eps_row = e.where(e.ge(sh, i32(16)), i32(2**30),
                    e.minimum(e.mul(eps_m, pow2(e, e.clip(sh, 0, 15))), i32(2**30)))
  eps_row = e.where(e.lt(sh, i32(0)), rshift_round(e, eps_m, e.minimum(e.neg(sh), i32(31))), eps_row)
  v = e.maximum(e.add(e.reduce("ReduceSum", sq, -1), eps_row), i32(1))
  k = ashr(e, e.sub(bit_length(e, v), i32(14)), i32(1))
  m = e.where(e.ge(k, i32(0)), rshift_round(e, v, e.mul(i32(2), e.maximum(k, i32(0)))),
              e.mul(v, pow2(e, e.mul(i32(-2), e.minimum(k, i32(0))))))
  r = interp(e, A.RSQRT_TABLE, e.clip(e.sub(m, i32(2**13)), 0, 3 * 2**13), A.RSQRT_FRAC_BITS)
  z = e.clip(mul_shift(e, e.mul(d, r), i32(c["z_mult"]), e.add(e.add(i32(c["z_shift"]), k), h)), -2**15, 2**15 - 1)
  acc = e.add(rshift_round(e, e.mul(z, i32(c["g_q"])), i32(A.LN_PRE_SHIFT)), i32(c["b_q"]))
  return requantize(e, acc, c, "", bits)


def softmax(e: Emitter, x, c: dict, bits: int):
  """arith.softmax over the last axis without a mask (the program's softmax ops have none)."""
  mx = e.reduce("ReduceMax", x, -1)
  d = e.minimum(e.sub(x, mx), i32(0))
  t = e.clip(mul_shift(e, d, i32(c["t_mult"]), i32(c["t_shift"])), -2**15, 0)
  ex = interp(e, A.EXP_TABLE, e.add(t, i32(2**15)), A.EXP_FRAC_BITS)
  s = e.reduce("ReduceSum", ex, -1)
  k = e.maximum(e.sub(bit_length(e, s), i32(15)), i32(0))
  m = ashr(e, s, k)
  r = interp(e, A.RECIP_TABLE, e.clip(e.sub(m, i32(2**14)), 0, 2**14), A.RECIP_FRAC_BITS)
  y = mul_shift(e, e.mul(ex, r), i32(c["mult"]), e.add(i32(c["shift"]), k))
  return e.clip(y, 0, A.qrange(bits)[1])


# ------------------------------------------------------------------------------------------ dense goal grid
def grid_points(e: Emitter, lattice_BxMx2, radius: int, step):
  """arith.lattice_points(L, radius) * step: (B, M*D, 2), seed-major (float or int32 by the operands)."""
  off = A.grid_offsets(radius)
  dtype = np.asarray(step).dtype
  pts = e.add(e.unsqueeze(lattice_BxMx2, [-2]), off.astype(dtype))
  return e.mul(e.node("Reshape", [pts, np.asarray([0, -1, 2], np.int64)]), step)


def lattice_first(e: Emitter, lattice_BxMx2, seed_valid_BxM, radius: int, m: int, dtype=np.int32):
  """arith.lattice_first: (B, M*D) bool, the first copy of every lattice point of a valid seed (lattice
  coordinates of `dtype`: int32 codes' lattice, float32 in the float model)."""
  w = 2 * radius + 1
  r = np.arange(-radius, radius + 1).astype(dtype)
  d = e.sub(e.unsqueeze(lattice_BxMx2, [2]), e.unsqueeze(lattice_BxMx2, [1]))             # (B, M, M', 2)
  near = e.node("LessOrEqual", [e.node("Abs", [e.add(e.unsqueeze(d, [3]), r[:, None])]),
                                np.asarray(radius, dtype)])                              # (B, M, M', W, 2)
  near_x, near_y = (index(e, near, (Ellipsis, c), 5) for c in (0, 1))                   # (B, M, M', W)
  covered = e.node("And", [e.unsqueeze(near_x, [-1]), e.unsqueeze(near_y, [-2])])          # (B, M, M', W, W)
  earlier = e.node("And", [np.tri(m, m, -1, dtype=bool), e.unsqueeze(seed_valid_BxM, [1])])  # (B, M, M')
  hit = e.cast(e.node("And", [covered, e.unsqueeze(earlier, [3, 4])]), np.int32)
  dup = e.cast(e.reduce("ReduceMax", hit, 2, keepdims=False), bool)                         # (B, M, W, W)
  dup = e.node("Reshape", [dup, np.asarray([0, m, w * w], np.int64)])
  keep = e.node("And", [e.unsqueeze(seed_valid_BxM, [-1]), e.node("Not", [dup])])
  return e.node("Reshape", [keep, np.asarray([0, -1], np.int64)])


def float_lattice(e: Emitter, x, spacing: float):
  """primitives.grid_lattice: floor(x * (1 / spacing) + 0.5) in float32."""
  return e.node("Floor", [e.add(e.mul(x, np.float32(1.0 / spacing)), np.float32(0.5))])


def int_lattice(e: Emitter, x, step):
  """arith.grid_lattice: floor((x + step // 2) / step) on int32, the floor as (v - Mod(v, step)) / step."""
  v = e.add(x, i32(int(step) // 2))
  return e.div(e.sub(v, e.mod(v, i32(step))), i32(step))


def int_dense_grid(e: Emitter, x, step, radius: int, bits: int):
  qmin, qmax = A.qrange(bits)
  return e.clip(grid_points(e, int_lattice(e, x, step), radius, i32(step)), qmin, qmax)


def int_dense_grid_mask(e: Emitter, x, seed_valid, step, radius: int, bits: int, m: int):
  qmin, qmax = A.qrange(bits)
  lat = int_lattice(e, x, step)
  pts = grid_points(e, lat, radius, i32(step))
  inside = e.cast(e.reduce("ReduceMin", e.cast(e.node("And", [e.ge(pts, i32(qmin)),
                                                             e.node("LessOrEqual", [pts, i32(qmax)])]),
                                               np.int32), -1, keepdims=False), bool)
  return e.node("And", [lattice_first(e, lat, seed_valid, radius, m), inside])


# ------------------------------------------------------------------------------------------- float forms
F32_MIN = np.float32(np.finfo(np.float32).min)


@dataclasses.dataclass
class QuantCtx:
  """What the float and QDQ emitters read beside the op: the float params (by op name), and for QDQ the
  activation scales of the program's tensors and the code tensors behind each DequantizeLinear output
  ({DQ output: (codes, scale, zero point)}, filled as the graph is emitted)."""
  params: Any
  scales: dict | None = None            # None: the float model (float weights); a dict: QDQ (int8 weights)
  codes: dict = dataclasses.field(default_factory=dict)


def param_at(tree, name: str):
  """The params of op `name` (its module path; a call_tag suffix "@..." names a second call of one module)."""
  for k in name.split("@", 1)[0].split("/"):
    tree = tree[k]
  return tree


def float_dense(e: Emitter, x, kernel, bias):
  """primitives.dense: x @ kernel + bias; K <= SMALL_K as the float form's broadcast multiply-adds."""
  k = kernel.shape[0]
  if k <= SMALL_K:
    y = np.zeros(kernel.shape[1], np.float32) if bias is None else bias
    for i in range(k):
      xi = e.node("Slice", [x, np.asarray([i], np.int64), np.asarray([i + 1], np.int64), np.asarray([-1], np.int64)])
      y = e.node("Add", [y, e.node("Mul", [xi, kernel[i]])])
    return y
  y = e.node("MatMul", [x, kernel])
  return y if bias is None else e.node("Add", [y, bias])


def float_layernorm(e: Emitter, x, scale, bias, eps: float):
  """primitives.layernorm: (x - mean) * rsqrt(mean((x - mean)^2) + eps) * scale + bias."""
  mean = e.reduce("ReduceMean", x, -1)
  c = e.node("Sub", [x, mean])
  var = e.reduce("ReduceMean", e.node("Mul", [c, c]), -1)
  rstd = e.node("Reciprocal", [e.node("Sqrt", [e.node("Add", [var, np.float32(eps)])])])
  return e.node("Add", [e.node("Mul", [e.node("Mul", [c, rstd]), scale]), bias])


def masked_max(e: Emitter, x, mask_xV, low):
  """Max over axis -2 where mask (the vector mask, broadcast over channels); all-masked rows give 0."""
  m = e.unsqueeze(mask_xV, [-1])
  pooled = e.reduce("ReduceMax", e.where(m, x, low), -2, keepdims=False)
  anyv = e.cast(e.reduce("ReduceMax", e.cast(m, np.int32), -2, keepdims=False), bool)
  return e.where(anyv, pooled, np.zeros((), np.asarray(low).dtype))


def float_softmax(e: Emitter, x):
  ex = e.node("Exp", [e.node("Sub", [x, e.reduce("ReduceMax", x, -1)])])
  return e.node("Div", [ex, e.reduce("ReduceSum", ex, -1)])


def log_softmax(e: Emitter, x):
  """jax.nn.log_softmax's steps: shifted = x - max, shifted - log(sum(exp(shifted)))."""
  shifted = e.node("Sub", [x, e.reduce("ReduceMax", x, -1)])
  return e.node("Sub", [shifted, e.node("Log", [e.reduce("ReduceSum", e.node("Exp", [shifted]), -1)])])


def qdq_point(e: Emitter, op, y, ctx: QuantCtx):
  """QuantizeLinear -> DequantizeLinear of a quantization point's float output at its scale and width."""
  s, zp = np.float32(op.scale), np.zeros((), CODE_DTYPE[op.bits])
  q = e.node("QuantizeLinear", [y, s, zp], hint="q")
  y = e.node("DequantizeLinear", [q, s, zp], hint="dq")
  ctx.codes[y] = (q, s, zp)
  return y


# ----------------------------------------------------------------------------- the op table: per-kind emitters
# Emitters take (e, op, xs, in_shapes[, ctx]): the program op, its inputs' tensors and shapes (batch None).
def _where_float(e, op, xs, in_shapes, ctx):
  """quantize (float forms) and masked_fill: x where mask, else 0."""
  return e.where(xs[1], xs[0], np.float32(0))


def _where_int(e, op, xs, in_shapes):
  return e.where(xs[1], xs[0], i32(0))


def _quantize_int(e, op, xs, in_shapes):
  """arith.quantize: round half up of x / scale (times the correctly rounded reciprocal), saturated."""
  qmin, qmax = A.qrange(op.bits)
  inv = np.float32(1.0) / np.float32(op.consts["scale"])          # arith.reciprocal: correctly rounded
  v = e.node("Mul", [e.where(xs[1], xs[0], np.float32(0)), inv])
  f = e.node("Floor", [v])
  q = e.node("Add", [f, e.cast(e.ge(e.node("Sub", [v, f]), np.float32(0.5)), np.float32)])
  return e.cast(e.clip(q, qmin, qmax, np.float32), np.int32)


def _dense_float(e, op, xs, in_shapes, ctx):
  """The float dense; QDQ: int8 per-channel weights (DequantizeLinear axis=1), int32 bias on the s_x s_w grid."""
  p = param_at(ctx.params, op.name)
  kernel = np.asarray(p["kernel"], np.float32)
  bias = None if p.get("bias") is None else np.asarray(p["bias"], np.float32)
  if ctx.scales is None:
    return float_dense(e, xs[0], kernel, bias)
  s_w = np.asarray(A.weight_scale_per_channel(kernel, 8), np.float32)
  s_acc = (np.float32(ctx.scales[op.inputs[0]]) * s_w).astype(np.float32)
  w = e.node("DequantizeLinear", [op.consts["w_q"].astype(np.int8), s_w, np.zeros(s_w.shape, np.int8)], axis=1)
  b = e.node("DequantizeLinear", [op.consts["b_q"].astype(np.int32), s_acc, np.zeros(s_acc.shape, np.int32)],
             axis=0)
  return e.node("Add", [e.node("MatMul", [xs[0], w]), b])


def _dense_int(e, op, xs, in_shapes):
  c = op.consts
  acc = e.add(int_matmul(e, xs[0], op.attrs["in_bits"][0], c["w_q"].astype(np.int8), 8), i32(c["b_q"]))
  return requantize(e, acc, c, "", op.bits)


def _layernorm_float(e, op, xs, in_shapes, ctx):
  p = param_at(ctx.params, op.name)
  return float_layernorm(e, xs[0], np.asarray(p["scale"], np.float32), np.asarray(p["bias"], np.float32),
                         op.attrs.get("eps", 1e-5))


def _matmul_float(e, op, xs, in_shapes, ctx):
  a = op.attrs
  b = e.transpose_last2(xs[1], len(in_shapes[1])) if a["transpose_b"] else xs[1]
  y = e.node("MatMul", [xs[0], b])
  return y if a["alpha"] == 1.0 else e.node("Mul", [y, np.float32(a["alpha"])])


def _matmul_qdq(e, op, xs, in_shapes, ctx):
  """A transposed operand held as codes is transposed as codes, then dequantized (DQ -> Transpose chains
  tripped onnxruntime's QDQ propagation into an int8/uint8 type error)."""
  if op.attrs["transpose_b"] and xs[1] in ctx.codes:
    q, s, zp = ctx.codes[xs[1]]
    xs = [xs[0], e.node("DequantizeLinear", [e.transpose_last2(q, len(in_shapes[1])), s, zp], hint="dq")]
    op = dataclasses.replace(op, attrs={**op.attrs, "transpose_b": False})
  return qdq_point(e, op, _matmul_float(e, op, xs, in_shapes, ctx), ctx)


def _matmul_int(e, op, xs, in_shapes):
  a = op.attrs
  ba, bb = a["in_bits"]
  ka, kb = A.matmul_pre_shifts(a["k"], ba, bb)
  x, y = rshift_round(e, xs[0], i32(ka)), rshift_round(e, xs[1], i32(kb))
  if a["transpose_b"]:
    y = e.transpose_last2(y, len(in_shapes[1]))
  return requantize(e, int_matmul(e, x, ba, y, bb), op.consts, "", op.bits)


def _add_int(e, op, xs, in_shapes):
  """arith.add: (x mx + y my) requantized."""
  return _requant_sum(e, op, xs[0], xs[1])


def _mask_add_int(e, op, xs, in_shapes):
  """arith.mask_add: y is 0 where the mask holds, MASK_NEG_Q elsewhere."""
  return _requant_sum(e, op, xs[0], e.where(xs[1], i32(0), i32(A.MASK_NEG_Q)))


def _requant_sum(e, op, x, y):
  c = op.consts
  return requantize(e, e.add(e.mul(x, i32(c["mx"])), e.mul(y, i32(c["my"]))), c, "", op.bits)


def _concat_int(e, op, xs, in_shapes):
  parts = [requantize(e, x, op.consts, f"{i}_", op.bits) for i, x in enumerate(xs)]
  return e.node("Concat", parts, axis=int(op.attrs["axis"]))


def _dense_grid_float(e, op, xs, in_shapes, ctx):
  lat = float_lattice(e, xs[0], op.attrs["spacing"])
  return grid_points(e, lat, op.attrs["radius"], np.float32(op.attrs["spacing"]))


def _dense_grid_mask_float(e, op, xs, in_shapes, ctx):
  lat = float_lattice(e, xs[0], op.attrs["spacing"])
  return lattice_first(e, lat, xs[1], op.attrs["radius"], in_shapes[0][-2], np.float32)


def _grid_qdq(codes_out: bool):
  """A grid op in QDQ: the integer lattice arithmetic on the seeds' codes; its points (codes_out) dequantized
  again at the seeds' scale, its mask as it is."""
  def emit(e, op, xs, in_shapes, ctx):
    q, s, zp = ctx.codes[xs[0]]
    y = ONNX_OPS[op.kind].int(e, op, [e.cast(q, np.int32)] + xs[1:], in_shapes)
    if not codes_out:
      return y
    qy = e.cast(y, CODE_DTYPE[op.bits])
    y = e.node("DequantizeLinear", [qy, s, zp], hint="dq")
    ctx.codes[y] = (qy, s, zp)
    return y
  return emit


def _log_softmax_int(e, op, xs, in_shapes):
  return log_softmax(e, e.node("Mul", [e.cast(xs[0], np.float32), np.float32(op.consts["in_scale"])]))


def _in_scale(op, lsb_of_input):
  return float(op.consts["in_scale"])


def _first_input_lsb(op, lsb_of_input):
  return lsb_of_input(op.inputs[0])


# ---------------------------------------------------------------------------- glue: any element type, B symbolic
def _reshape(e, op, xs, in_shapes):
  return e.node("Reshape", [xs[0], np.asarray([0] + list(op.attrs["shape"][1:]), np.int64)])


def _broadcast_to(e, op, xs, in_shapes):
  return e.node("Expand", [xs[0], np.asarray([1] + list(op.attrs["shape"][1:]), np.int64)])


def _index(e, op, xs, in_shapes):
  return index(e, xs[0], op.attrs["index"], len(in_shapes[0]))


def _concatenate(e, op, xs, in_shapes):
  return e.node("Concat", xs, axis=int(op.attrs["axis"]))


def _tile(e, op, xs, in_shapes):
  return e.node("Tile", [xs[0], np.asarray(op.attrs["reps"], np.int64)])


def _moveaxis(e, op, xs, in_shapes):
  nd = len(in_shapes[0])
  order = list(range(nd))
  s, d = op.attrs["source"] % nd, op.attrs["destination"] % nd
  order.pop(s)
  order.insert(d, s)
  return e.node("Transpose", [xs[0]], perm=order)


def _take_along_axis(e, op, xs, in_shapes):
  x, nd = xs[0], len(in_shapes[0])
  axis = op.attrs["axis"] % nd
  target = [1] + list(op.shape[1:])
  idx = xs[1]
  if list(in_shapes[1][1:]) != target[1:]:
    idx = e.node("Expand", [idx, np.asarray(target, np.int64)])
  x_target = list(target)
  x_target[axis] = in_shapes[0][axis]
  if list(in_shapes[0][1:]) != x_target[1:]:
    x = e.node("Expand", [x, np.asarray(x_target, np.int64)])
  return e.node("GatherElements", [x, idx], axis=axis)


def _glue_qdq(layout):
  """A layout op in QDQ: on a dequantized code tensor it moves the codes and dequantizes again (DQ -> Transpose
  chains tripped onnxruntime's QDQ propagation); a code concatenation joins codes of one scale. Else float."""
  def emit(e, op, xs, in_shapes, ctx):
    if xs[0] not in ctx.codes:
      return layout(e, op, xs, in_shapes)
    q, s, zp = ctx.codes[xs[0]]
    qy = layout(e, op, [ctx.codes[x][0] if x in ctx.codes else x for x in xs], in_shapes)
    y = e.node("DequantizeLinear", [qy, s, zp], hint="dq")
    ctx.codes[y] = (qy, s, zp)
    return y
  return emit


def _top_k_float(e, op, xs, in_shapes, ctx):
  return top_k(e, xs[0], xs[1], op.attrs["k"], np.float32(-np.inf), out=e.fresh("top_k"))


def _top_k_int(e, op, xs, in_shapes):
  return top_k(e, xs[0], xs[1], op.attrs["k"], i32(A.INT32_MIN), out=e.fresh("top_k"))


@dataclasses.dataclass(frozen=True)
class OnnxOpDef:
  """The ONNX forms of one op kind (`quant.ops.OPS` holds the rest of its definition)."""
  kind: str
  float: Callable                       # (e, op, xs, in_shapes, ctx) -> tensor: the float model's op
  int: Callable                         # (e, op, xs, in_shapes) -> tensor on int32 codes, as the kernel
  qdq: Callable | None = None           # (e, op, xs, in_shapes, ctx): QDQ form; None: float, then Q/DQ at a point
  point: bool = False                   # a quantization point: QDQ quantizes its output at op.scale
  lsb: Callable | None = None           # (op, lsb_of_input) -> the LSB of a float output (the QDQ bar's unit)

  def emit_qdq(self, e: Emitter, op, xs, in_shapes, ctx: QuantCtx):
    if self.qdq is not None:
      return self.qdq(e, op, xs, in_shapes, ctx)
    y = self.float(e, op, xs, in_shapes, ctx)
    return qdq_point(e, op, y, ctx) if self.point else y


def _layout(kind: str, emit: Callable, **kw) -> OnnxOpDef:
  return OnnxOpDef(kind, lambda e, op, xs, sh, ctx: emit(e, op, xs, sh), emit, _glue_qdq(emit), **kw)


_TABLE = (
    OnnxOpDef("quantize", _where_float, _quantize_int, point=True),
    OnnxOpDef("dense", _dense_float, _dense_int, point=True),
    OnnxOpDef("layernorm", _layernorm_float,
              lambda e, op, xs, sh: layernorm(e, xs[0], op.consts, op.bits, op.shape[-1]), point=True),
    OnnxOpDef("relu", lambda e, op, xs, sh, ctx: e.node("Relu", [xs[0]]),
              lambda e, op, xs, sh: e.maximum(xs[0], i32(0))),
    OnnxOpDef("masked_max", lambda e, op, xs, sh, ctx: masked_max(e, xs[0], xs[1], F32_MIN),
              lambda e, op, xs, sh: masked_max(e, xs[0], xs[1], i32(A.INT32_MIN))),
    OnnxOpDef("masked_fill", _where_float, _where_int),
    OnnxOpDef("matmul", _matmul_float, _matmul_int, _matmul_qdq, point=True),
    OnnxOpDef("softmax", lambda e, op, xs, sh, ctx: float_softmax(e, xs[0]),
              lambda e, op, xs, sh: softmax(e, xs[0], op.consts, op.bits), point=True),
    OnnxOpDef("add", lambda e, op, xs, sh, ctx: e.node("Add", xs), _add_int, point=True),
    OnnxOpDef("mask_add",
              lambda e, op, xs, sh, ctx: e.node("Add", [xs[0], e.where(xs[1], np.float32(0),
                                                                     np.float32(A.MASK_NEG_Q))]),
              _mask_add_int, point=True),
    OnnxOpDef("concat", lambda e, op, xs, sh, ctx: e.node("Concat", xs, axis=int(op.attrs["axis"])), _concat_int,
              point=True),
    OnnxOpDef("dense_grid", _dense_grid_float,
              lambda e, op, xs, sh: int_dense_grid(e, xs[0], op.consts["step"], op.attrs["radius"], op.bits),
              _grid_qdq(codes_out=True)),
    OnnxOpDef("dense_grid_mask", _dense_grid_mask_float,
              lambda e, op, xs, sh: int_dense_grid_mask(e, xs[0], xs[1], op.consts["step"], op.attrs["radius"],
                                                        op.attrs["in_bits"][0], sh[0][-2]),
              _grid_qdq(codes_out=False)),
    OnnxOpDef("log_softmax", lambda e, op, xs, sh, ctx: log_softmax(e, xs[0]), _log_softmax_int, lsb=_in_scale),
    _layout("reshape", _reshape),
    _layout("broadcast_to", _broadcast_to),
    _layout("index", _index),
    _layout("concatenate", _concatenate),
    _layout("tile", _tile),
    _layout("moveaxis", _moveaxis),
    _layout("take_along_axis", _take_along_axis, lsb=_first_input_lsb),
    OnnxOpDef("top_k", _top_k_float, _top_k_int),
)
ONNX_OPS: dict[str, OnnxOpDef] = {d.kind: d for d in _TABLE}
POINT_KINDS = tuple(d.kind for d in _TABLE if d.point)


def onnx_op(op, form: str) -> OnnxOpDef:
  """The ONNX definition of `op`'s kind; ValueError naming the op, the export form and the known kinds."""
  d = ONNX_OPS.get(op.kind) if isinstance(op.kind, str) else None
  if d is None:
    raise ValueError(f"{form} export: unknown op kind {op.kind!r} ({op.name}); known: {sorted(ONNX_OPS)}")
  return d
