"""ONNX graph building for `onnx_export`: an emitter over `onnx.helper`, the ONNX array namespace the kernels
of `quant/arith.py` run on, and what ONNX needs beyond the op table. An op's integer form is its kernel itself
(`OPS[kind].kernel`) and its float form its float reference (`OPS[kind].float`), both run on `Sym` tensors:
arith's math is written once, for jnp and ONNX alike. `ONNX_OPS[kind]` (an `OnnxOpDef`) only overrides: dense's
params and int8 weights, QDQ on the codes behind a DequantizeLinear, the LSB of a float output (quant must not
import onnx, an optional extra; tests/test_op_table.py checks ONNX_OPS names only OPS kinds).

`OnnxNamespace` spells jnp's integer operations with ONNX ops: arithmetic right shift by 2^k as
(v - Mod(v, 2^k)) / 2^k (Mod takes the divisor's sign, the division is exact), v & (2^k - 1) as Mod(v, 2^k),
v << k as v * 2^k, 2^k of a tensor k by Gather from a table, the bit length as ReduceSum(v >= 2^j), table
lookups by Gather, int8 x int8 dots by MatMulInteger (int16 operands split into bytes by `arith.int_matmul`),
quantization as Mul by the float32 1/s, Floor, Sub, GreaterOrEqual (`arith.round_half_up`), Clip, Cast. int32
Mul and Add wrap in onnxruntime as in XLA. When no operand is a tensor, the result is computed in numpy, so
static requant shifts and masks cost no nodes and a Where on a constant condition picks its branch at build
time; identical nodes are emitted once, and nodes nothing reads are pruned when the model is built.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from densetnt_jax.model import primitives as P
from densetnt_jax.quant import arith as A
from densetnt_jax.quant.interpreter import requant_hints
from densetnt_jax.quant.ops import OPS, TensorFacts

INT64_MAX = np.iinfo(np.int64).max
POW2_TABLE = (np.int64(1) << np.arange(31)).astype(np.int32)       # 2^0 .. 2^30
ONNX_DTYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int16): TensorProto.INT16, np.dtype(np.bool_): TensorProto.BOOL}
CODE_DTYPE = {8: np.int8, 16: np.int16}


class Emitter:
  """Nodes and initializers of one graph; names of program tensors are chosen by the caller."""

  def __init__(self):
    self.nodes: list = []
    self.initializers: list = []
    self._count = 0
    self._consts: dict = {}
    self._emitted: dict = {}
    self.scope = "g"

  def fresh(self, hint: str) -> str:
    self._count += 1
    return f"{self.scope}/{hint}_{self._count}"

  def lift(self, x) -> str:
    """A tensor name for x (a name, a Sym, or an array: arrays become initializers; small ones are shared)."""
    if isinstance(x, (str, Sym)):
      return x if isinstance(x, str) else x.name
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
    """Appends one node, or reuses an identical earlier one (same type, inputs and attrs); returns its output
    name (a list when n_out > 1)."""
    ins = ["" if i is None else self.lift(i) for i in inputs]
    key = (op_type, tuple(ins), repr(sorted(attrs.items())), n_out) if outputs is None else None
    if key in self._emitted:
      return self._emitted[key]
    if outputs is None:
      outputs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
    elif isinstance(outputs, str):
      outputs = [outputs]
    self.nodes.append(helper.make_node(op_type, ins, list(outputs), name=f"{outputs[0]}:{op_type}", **attrs))
    out = outputs[0] if len(outputs) == 1 else list(outputs)
    if key is not None:
      self._emitted[key] = out
    return out

  def cast(self, x, dtype):
    if not isinstance(x, (str, Sym)):
      return np.asarray(x).astype(dtype)
    return self.node("Cast", [x], to=ONNX_DTYPE[np.dtype(dtype)])

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
    y = e.node("Squeeze", [y, np.asarray(squeeze, np.int64)])
  if unsqueeze:
    y = e.node("Unsqueeze", [y, np.asarray(unsqueeze, np.int64)])
  return y if y != x else e.node("Identity", [x])


# ------------------------------------------------------------------------------------ the array namespace
PROBE = 1_000_003       # stands for the batch axis (None) where numpy computes a shape on a zero-stride view


def _shape(x) -> tuple:
  return x.shape if isinstance(x, Sym) else np.shape(x)


def _broadcast(*shapes) -> tuple:
  """numpy broadcasting of shapes whose batch axis is None (None meets only None or 1)."""
  nd = max(len(s) for s in shapes)
  dims = zip(*[(1,) * (nd - len(s)) + tuple(s) for s in shapes])
  return tuple(None if None in d else max(d) for d in dims)


def _matmul_shape(a, b) -> tuple:
  """numpy matmul's output shape: the leading axes broadcast, then (M, N)."""
  return _broadcast(_shape(a)[:-2], _shape(b)[:-2]) + (_shape(a)[-2], _shape(b)[-1])


def _probed(shape: tuple, fn) -> tuple:
  """The shape of fn(view) for a zero-stride view of `shape` (the batch axis as PROBE), back with None."""
  view = np.broadcast_to(np.empty((), np.int8), tuple(PROBE if d is None else d for d in shape))
  return tuple(None if d == PROBE else d for d in fn(view).shape)


class Sym:
  """A tensor of the graph being built: name, shape (batch axis None) and numpy dtype. Its operators and `.xp`
  (the `OnnxNamespace` that made it) let arith's kernels, written for jnp arrays, emit ONNX nodes."""
  __array_ufunc__ = None        # numpy operands defer to the reflected operators below

  def __init__(self, xp: "OnnxNamespace", name: str, shape: tuple, dtype):
    self.xp, self.name, self.shape, self.dtype = xp, name, tuple(shape), np.dtype(dtype)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __bool__(self):
    raise TypeError(f"the truth value of ONNX tensor {self.name} is not known when the graph is built")

  def astype(self, dtype) -> "Sym":
    return self if np.dtype(dtype) == self.dtype else self.xp.asarray(self, dtype)

  def reshape(self, shape) -> "Sym":
    """Reshape; a None axis (the batch, axis 0) is kept as it is (ONNX Reshape's 0)."""
    shape = tuple(shape)
    known = int(np.prod([d for d in self.shape if d is not None]))
    rest = int(np.prod([d for d in shape if d is not None and d != -1]))
    out = tuple(known // rest if d == -1 else d for d in shape)
    name = self.xp.e.node("Reshape", [self, np.asarray([0 if d is None else d for d in shape], np.int64)])
    return Sym(self.xp, name, out, self.dtype)

  def __getitem__(self, idx) -> "Sym":
    idx = idx if isinstance(idx, tuple) else (idx,)
    return Sym(self.xp, index(self.xp.e, self.name, idx, self.ndim), _probed(self.shape, lambda v: v[idx]),
               self.dtype)

  __invert__ = lambda a: a.xp.logical_not(a)
  __neg__ = lambda a: a.xp.negative(a)
  __hash__ = None


# Sym's binary operators, each the namespace function of jnp's name (and the reflected form where numpy has one)
for _op, _fn, _reflected in (("add", "add", True), ("sub", "subtract", True), ("mul", "multiply", True),
                             ("rshift", "right_shift", True), ("lshift", "left_shift", True),
                             ("and", "bitwise_and", True), ("truediv", "divide", False), ("eq", "equal", False),
                             ("ge", "greater_equal", False), ("gt", "greater", False), ("le", "less_equal", False),
                             ("lt", "less", False)):
  setattr(Sym, f"__{_op}__", lambda a, b, _fn=_fn: getattr(a.xp, _fn)(a, b))
  if _reflected:
    setattr(Sym, f"__r{_op}__", lambda a, b, _fn=_fn: getattr(a.xp, _fn)(b, a))


def _elementwise(op_type: str, fold: Callable, result_dtype=None):
  """A namespace method: `fold` in numpy when no operand is a tensor, else one `op_type` node; python and numpy
  operands take the tensor operand's dtype (JAX's weak typing)."""
  def method(self, *args):
    ref = next((a for a in args if isinstance(a, Sym)), None)
    if ref is None:
      with np.errstate(over="ignore"):
        return fold(*args)
    name = self.e.node(op_type, [self._operand(a, ref.dtype) for a in args])
    return Sym(self, name, _broadcast(*map(_shape, args)), result_dtype or ref.dtype)
  return method


class OnnxNamespace:
  """The jnp functions arith's kernels call, and `bit_length` / `code_matmul` / `top_k_indices` /
  `exact_multiply` (see `arith._JnpNamespace`), each emitting ONNX nodes into `e` for `Sym` operands."""
  int32, float32, bool_ = np.int32, np.float32, np.bool_
  wide_matmul = False           # MatMulInteger multiplies 8-bit operands only

  def __init__(self, e: Emitter):
    self.e = e

  def sym(self, name: str, facts: TensorFacts) -> Sym:
    return Sym(self, name, facts.shape, facts.dtype)

  def _operand(self, v, dtype) -> str:
    if isinstance(v, Sym):
      return v.name
    arr = np.asarray(v)
    cast = arr.astype(dtype)
    if np.dtype(dtype).kind in "iub" and not np.array_equal(cast, arr):
      raise ValueError(f"ONNX kernel: constant {arr!r} does not fit the tensor's {np.dtype(dtype)}")
    return self.e.lift(cast)

  add = _elementwise("Add", np.add)
  subtract = _elementwise("Sub", np.subtract)
  multiply = exact_multiply = _elementwise("Mul", np.multiply)
  minimum = _elementwise("Min", np.minimum)
  maximum = _elementwise("Max", np.maximum)
  divide = _elementwise("Div", np.divide)
  floor = _elementwise("Floor", np.floor)
  exp = _elementwise("Exp", np.exp)
  log = _elementwise("Log", np.log)
  abs = _elementwise("Abs", np.abs)
  negative = _elementwise("Neg", np.negative)
  logical_not = _elementwise("Not", np.logical_not)
  greater_equal = _elementwise("GreaterOrEqual", np.greater_equal, np.bool_)
  greater = _elementwise("Greater", np.greater, np.bool_)
  less_equal = _elementwise("LessOrEqual", np.less_equal, np.bool_)
  less = _elementwise("Less", np.less, np.bool_)
  equal = _elementwise("Equal", np.equal, np.bool_)
  _mod = _elementwise("Mod", np.mod)
  _div = _elementwise("Div", np.floor_divide)     # only ever exact here: truncation and floor agree

  def asarray(self, x, dtype=None):
    if not isinstance(x, Sym):
      return np.asarray(x, dtype)
    if dtype is None or np.dtype(dtype) == x.dtype:
      return x
    return Sym(self, self.e.cast(x, dtype), x.shape, dtype)

  def pow2(self, k):
    """2^k for int32 k in [0, 30] (numpy, or Gather from a table)."""
    if not isinstance(k, Sym):
      return (np.int64(1) << np.clip(np.asarray(k, np.int64), 0, 30)).astype(np.int32)
    return self.take(POW2_TABLE, self.clip(k, 0, 30))

  def right_shift(self, v, k):
    """Arithmetic v >> k (floor(v / 2^k)) for int32 v and 0 <= k <= 31."""
    if not isinstance(v, Sym) and not isinstance(k, Sym):
      return np.right_shift(v, k)
    if not isinstance(k, Sym) and not np.any(np.asarray(k)):
      return v
    p = self.pow2(k)                    # k clipped to 30; k = 31 (eps shifts) takes one more halving below
    r = self._div(v - self._mod(v, p), p)
    return self.where(k > 30, self._div(r - self._mod(r, 2), 2), r)

  def left_shift(self, v, k):
    """v << k as v * 2^k (k <= 30)."""
    if not isinstance(v, Sym) and not isinstance(k, Sym):
      return np.left_shift(v, k)
    return self.pow2(k) if isinstance(v, int) and v == 1 else v * self.pow2(k)

  def bitwise_and(self, a, b):
    """And of bool tensors; v & (2^k - 1) of an int32 v as Mod(v, 2^k)."""
    if not isinstance(a, Sym) and not isinstance(b, Sym):
      return np.bitwise_and(a, b)
    if _dtype_of(a) == np.bool_:
      return Sym(self, self.e.node("And", [a, b]), _broadcast(_shape(a), _shape(b)), np.bool_)
    mask = int(b)
    if mask & (mask + 1):
      raise NotImplementedError(f"ONNX kernel: v & {mask} (only masks 2^k - 1 are a Mod)")
    return self._mod(a, mask + 1)

  def floor_divide(self, v, d):
    """floor(v / d) for a positive constant d: (v - Mod(v, d)) / d."""
    return self._div(v - self._mod(v, d), d)

  def clip(self, x, lo, hi):
    if not isinstance(x, Sym):
      return np.clip(x, lo, hi).astype(np.asarray(x).dtype)
    name = self.e.node("Clip", [x, np.asarray(lo, x.dtype), np.asarray(hi, x.dtype)])
    return Sym(self, name, x.shape, x.dtype)

  def where(self, c, x, y):
    ref = next((v for v in (x, y) if isinstance(v, Sym)),
               next((v for v in (x, y) if isinstance(v, (np.ndarray, np.generic))), None))
    dtype = ref.dtype if ref is not None else np.float32 if isinstance(x, float) else np.int32
    x, y = (v if isinstance(v, Sym) else np.asarray(v).astype(dtype) for v in (x, y))
    if not isinstance(c, Sym):              # a constant condition: numpy, or the branch it picks everywhere
      c = np.asarray(c, bool)
      pick, other = (x, y) if c.all() else (y, x)
      if (c.all() or not c.any()) and _shape(pick) == _broadcast(_shape(pick), c.shape) and \
          (isinstance(pick, Sym) or not isinstance(other, Sym)):
        return pick
      if not isinstance(x, Sym) and not isinstance(y, Sym):
        return np.where(c, x, y)
    return Sym(self, self.e.node("Where", [c, x, y]), _broadcast(_shape(c), _shape(x), _shape(y)), dtype)

  def _reduce(self, op_type: str, x, axis: int, keepdims: bool, fold) -> Any:
    if not isinstance(x, Sym):
      return fold(x, axis=axis, keepdims=keepdims, dtype=np.asarray(x).dtype)
    ax = axis % x.ndim
    shape = x.shape[:ax] + ((1,) if keepdims else ()) + x.shape[ax + 1:]
    name = self.e.node(op_type, [x, np.asarray([axis], np.int64)], keepdims=int(keepdims))
    return Sym(self, name, shape, x.dtype)

  def sum(self, x, axis: int, keepdims: bool = False):
    return self._reduce("ReduceSum", x, axis, keepdims, np.sum)

  def max(self, x, axis: int, keepdims: bool = False):
    return self._reduce("ReduceMax", x, axis, keepdims, np.max)

  def min(self, x, axis: int, keepdims: bool = False):
    return self._reduce("ReduceMin", x, axis, keepdims, np.min)

  def mean(self, x, axis: int, keepdims: bool = False):
    return self._reduce("ReduceMean", x, axis, keepdims, np.mean)

  def any(self, x, axis: int, keepdims: bool = False):
    return self.max(x.astype(np.int32), axis, keepdims).astype(bool)

  def all(self, x, axis: int, keepdims: bool = False):
    return self.min(x.astype(np.int32), axis, keepdims).astype(bool)

  def rsqrt(self, x: Sym) -> Sym:
    return Sym(self, self.e.node("Reciprocal", [self.e.node("Sqrt", [x])]), x.shape, x.dtype)

  def stop_gradient(self, x):
    return x

  def isfinite(self, x: Sym) -> Sym:
    return Sym(self, self.e.node("Not", [self.e.node("Or", [self.e.node("IsInf", [x]), self.e.node("IsNaN", [x])])]),
               x.shape, np.bool_)

  def log_softmax(self, x: Sym) -> Sym:
    """jax.nn.log_softmax's steps over the last axis: shifted = x - max, shifted - log(sum(exp(shifted)))."""
    shifted = x - self.max(x, -1, keepdims=True)
    return shifted - self.log(self.sum(self.exp(shifted), -1, keepdims=True))

  def matmul(self, a: Sym, b) -> Sym:
    """Float a @ b (numpy matmul axes)."""
    return Sym(self, self.e.node("MatMul", [a, b]), _matmul_shape(a, b), np.float32)

  def take(self, table: np.ndarray, idx: Sym) -> Sym:
    return Sym(self, self.e.node("Gather", [np.asarray(table, np.int32), idx], axis=0), idx.shape, np.int32)

  def bit_length(self, v: Sym) -> Sym:
    """Significant bits of a non-negative int32: ReduceSum(v >= 2^j, j = 0..30)."""
    return self.sum((v[..., None] >= POW2_TABLE).astype(np.int32), -1)

  def code_matmul(self, a, b, bits: int, transpose_b: bool = False):
    """MatMulInteger of int8 codes (int32 sums), b transposed first where asked."""
    if bits > 8:
      raise NotImplementedError("ONNX kernel: MatMulInteger takes 8-bit operands (arith.int_matmul splits)")
    if transpose_b:
      b = self.swapaxes(b, -1, -2) if isinstance(b, Sym) else np.swapaxes(b, -1, -2)
    if not isinstance(a, Sym) and not isinstance(b, Sym):
      return np.matmul(np.asarray(a, np.int64), np.asarray(b, np.int64)).astype(np.int32)
    name = self.e.node("MatMulInteger", [self.e.cast(a, np.int8), self.e.cast(b, np.int8)])
    return Sym(self, name, _matmul_shape(a, b), np.int32)

  def top_k_indices(self, x: Sym, k: int) -> Sym:
    """Indices (int32) of the k largest entries of the last axis, ties to the lower index (TopK, as lax.top_k)."""
    _, idx = self.e.node("TopK", [x, np.asarray([k], np.int64)], n_out=2, axis=-1, largest=1, sorted=1)
    return Sym(self, self.e.cast(idx, np.int32), x.shape[:-1] + (k,), np.int32)

  # ------------------------------------------------------------------------ layout: any dtype, B symbolic
  def _transpose(self, x: Sym, perm: list) -> Sym:
    return Sym(self, self.e.node("Transpose", [x], perm=perm), tuple(x.shape[p] for p in perm), x.dtype)

  def swapaxes(self, x: Sym, a: int, b: int) -> Sym:
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return self._transpose(x, perm)

  def moveaxis(self, x: Sym, source: int, destination: int) -> Sym:
    perm = list(range(x.ndim))
    perm.insert(destination % x.ndim, perm.pop(source % x.ndim))
    return self._transpose(x, perm)

  def broadcast_to(self, x: Sym, shape) -> Sym:
    name = self.e.node("Expand", [x, np.asarray([1 if d is None else d for d in shape], np.int64)])
    return Sym(self, name, tuple(shape), x.dtype)

  def concatenate(self, xs, axis: int) -> Sym:
    ax = axis % xs[0].ndim
    shape = xs[0].shape[:ax] + (sum(x.shape[ax] for x in xs),) + xs[0].shape[ax + 1:]
    return Sym(self, self.e.node("Concat", list(xs), axis=ax), shape, xs[0].dtype)

  def tile(self, x: Sym, reps) -> Sym:
    shape = tuple(None if d is None else d * r for d, r in zip(x.shape, reps))
    return Sym(self, self.e.node("Tile", [x, np.asarray(reps, np.int64)]), shape, x.dtype)

  def take_along_axis(self, x: Sym, idx: Sym, axis: int) -> Sym:
    """GatherElements after broadcasting both to the output's shape outside `axis` (jnp's rule)."""
    ax = axis % x.ndim
    outer = _broadcast(x.shape[:ax] + (1,) + x.shape[ax + 1:], idx.shape[:ax] + (1,) + idx.shape[ax + 1:])
    at = lambda n: outer[:ax] + (n,) + outer[ax + 1:]
    x = x if x.shape == at(x.shape[ax]) else self.broadcast_to(x, at(x.shape[ax]))
    idx = idx if idx.shape == at(idx.shape[ax]) else self.broadcast_to(idx, at(idx.shape[ax]))
    return Sym(self, self.e.node("GatherElements", [x, idx], axis=ax), idx.shape, x.dtype)


def _dtype_of(v) -> np.dtype:
  return v.dtype if isinstance(v, Sym) else np.asarray(v).dtype


def run_kernel(e: Emitter, op, xs: list, ins: list) -> str:
  """The op's kernel (`OPS[kind].kernel`, the interpreter's) emitted on these tensors: int32 codes, or any
  dtype for the kernels that only move, compare or mask values."""
  xp = OnnxNamespace(e)
  y = OPS[op.kind].kernel(op, op.consts, [xp.sym(x, f) for x, f in zip(xs, ins)], requant_hints(op))
  return e.lift(y)


# ------------------------------------------------------------------------------------------- float forms
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


def float_form(e: Emitter, op, xs: list, ins: list, ctx: QuantCtx) -> str:
  """The op's float reference (`OPS[kind].float`, or its kernel where that serves floats) on ONNX tensors."""
  d = OPS[op.kind]
  if d.float is None:
    return run_kernel(e, op, xs, ins)
  xp = OnnxNamespace(e)
  return e.lift(d.float(op, lambda: param_at(ctx.params, op.name), [xp.sym(x, f) for x, f in zip(xs, ins)]))


def qdq_point(e: Emitter, op, y, ctx: QuantCtx):
  """QuantizeLinear -> DequantizeLinear of a quantization point's float output at its scale and width."""
  s, zp = np.float32(op.scale), np.zeros((), CODE_DTYPE[op.bits])
  q = e.node("QuantizeLinear", [y, s, zp], hint="q")
  y = e.node("DequantizeLinear", [q, s, zp], hint="dq")
  ctx.codes[y] = (q, s, zp)
  return y


# ------------------------------------------------------------------- the ONNX half of the op table: overrides
# Emitters take (e, op, xs, ins[, ctx]): the program op, its inputs' tensor names and facts (shape with the
# batch None, dtype in this form). Every kind's float form is its float reference and its integer form its
# kernel (both from `quant.ops.OPS`); QDQ is the float form with Q/DQ after a quantization point. An entry here
# only says where ONNX needs more: int8 weights, operations on the codes behind a DequantizeLinear, the unit of
# a float output.
def _dense_float(e, op, xs, ins, ctx):
  """primitives.dense (K <= SMALL_K as its broadcast multiply-adds); QDQ: int8 per-channel weights
  (DequantizeLinear axis=1), int32 bias on the s_x s_w grid."""
  p = param_at(ctx.params, op.name)
  kernel = np.asarray(p["kernel"], np.float32)
  bias = None if p.get("bias") is None else np.asarray(p["bias"], np.float32)
  if ctx.scales is None and kernel.shape[0] <= P.SMALL_K:
    y = np.zeros(kernel.shape[1], np.float32) if bias is None else bias
    for i in range(kernel.shape[0]):
      xi = e.node("Slice", [xs[0], np.asarray([i], np.int64), np.asarray([i + 1], np.int64),
                            np.asarray([-1], np.int64)])
      y = e.node("Add", [y, e.node("Mul", [xi, kernel[i]])])
    return y
  if ctx.scales is not None:
    s_w = np.asarray(A.weight_scale_per_channel(kernel, 8), np.float32)
    s_acc = (np.float32(ctx.scales[op.inputs[0]]) * s_w).astype(np.float32)
    kernel = e.node("DequantizeLinear", [op.consts["w_q"].astype(np.int8), s_w, np.zeros(s_w.shape, np.int8)],
                    axis=1)
    bias = e.node("DequantizeLinear", [op.consts["b_q"].astype(np.int32), s_acc, np.zeros(s_acc.shape, np.int32)],
                  axis=0)
  y = e.node("MatMul", [xs[0], kernel])
  return y if bias is None else e.node("Add", [y, bias])


def _matmul_qdq(e, op, xs, ins, ctx):
  """A transposed operand held as codes is transposed as codes, then dequantized (DQ -> Transpose chains
  tripped onnxruntime's QDQ propagation into an int8/uint8 type error)."""
  if op.attrs["transpose_b"] and xs[1] in ctx.codes:
    xp = OnnxNamespace(e)
    q_t = xp.swapaxes(xp.sym(*_on_codes(e, xs[1], ins[1], ctx)), -1, -2)
    xs, ins = [xs[0], _dequantized(e, q_t.name, xs[1], ctx)], [ins[0], dataclasses.replace(ins[1], shape=q_t.shape)]
    op = dataclasses.replace(op, attrs={**op.attrs, "transpose_b": False})
  return qdq_point(e, op, float_form(e, op, xs, ins, ctx), ctx)


def _on_codes(e, x: str, ins: TensorFacts, ctx, dtype=None):
  """The codes behind a DequantizeLinear output (as `dtype`, default their own) and their facts."""
  q, _, zp = ctx.codes[x]
  dtype = dtype or zp.dtype
  return e.cast(q, dtype) if dtype != zp.dtype else q, TensorFacts(ins.shape, np.dtype(dtype).name, ins.bits)


def _dequantized(e, qy: str, x: str, ctx) -> str:
  """qy dequantized at the scale of the codes behind x."""
  _, s, zp = ctx.codes[x]
  y = e.node("DequantizeLinear", [qy, s, zp], hint="dq")
  ctx.codes[y] = (qy, s, zp)
  return y


def _grid_qdq(e, op, xs, ins, ctx):
  """A grid op in QDQ: its integer kernel on the seeds' codes; the points dequantized again at the seeds'
  scale, the mask as it is."""
  q, facts = _on_codes(e, xs[0], ins[0], ctx, np.int32)
  y = run_kernel(e, op, [q] + xs[1:], [facts] + ins[1:])
  return _dequantized(e, e.cast(y, CODE_DTYPE[op.bits]), xs[0], ctx) if op.bits else y


def _layout_qdq(e, op, xs, ins, ctx):
  """A layout op in QDQ: on a dequantized code tensor it moves the codes and dequantizes again (DQ -> Transpose
  chains tripped onnxruntime's QDQ propagation); a code concatenation joins codes of one scale. Else float."""
  if xs[0] not in ctx.codes:
    return run_kernel(e, op, xs, ins)
  codes = [_on_codes(e, x, f, ctx) if x in ctx.codes else (x, f) for x, f in zip(xs, ins)]
  return _dequantized(e, run_kernel(e, op, [c[0] for c in codes], [c[1] for c in codes]), xs[0], ctx)


@dataclasses.dataclass(frozen=True)
class OnnxOpDef:
  """What ONNX needs of one op kind beyond its `quant.ops.OPS` definition (`onnx_op` fills in the defaults)."""
  kind: str
  float: Callable = float_form          # (e, op, xs, ins, ctx) -> tensor: the float model's op
  qdq: Callable | None = None           # (e, op, xs, ins, ctx): QDQ form; None: float, then Q/DQ at a point
  lsb: Callable | None = None           # (op, lsb_of_input) -> the LSB of a float output (the QDQ bar's unit)

  def emit_qdq(self, e: Emitter, op, xs, ins, ctx: QuantCtx):
    if self.qdq is not None:
      return self.qdq(e, op, xs, ins, ctx)
    y = self.float(e, op, xs, ins, ctx)
    return qdq_point(e, op, y, ctx) if OPS[op.kind].point else y


ONNX_OPS: dict[str, OnnxOpDef] = {d.kind: d for d in (
    OnnxOpDef("dense", _dense_float),
    OnnxOpDef("matmul", qdq=_matmul_qdq),
    OnnxOpDef("dense_grid", qdq=_grid_qdq),
    OnnxOpDef("dense_grid_mask", qdq=_grid_qdq),
    OnnxOpDef("log_softmax", lsb=lambda op, lsb_of_input: float(op.consts["in_scale"])),
    OnnxOpDef("take_along_axis", qdq=_layout_qdq, lsb=lambda op, lsb_of_input: lsb_of_input(op.inputs[0])),
    *(OnnxOpDef(kind, qdq=_layout_qdq) for kind in ("reshape", "broadcast_to", "index", "concatenate", "tile",
                                                     "moveaxis")),
)}


def onnx_op(op, form: str) -> OnnxOpDef:
  """The ONNX definition of `op`'s kind; ValueError naming the op, the export form and the known kinds."""
  if not isinstance(op.kind, str) or op.kind not in OPS:
    raise ValueError(f"{form} export: unknown op kind {op.kind!r} ({op.name}); known: {sorted(OPS)}")
  return ONNX_OPS.get(op.kind) or OnnxOpDef(op.kind)
