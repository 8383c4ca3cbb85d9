"""The op table: one definition per op kind of the integer program, holding what every reader of a program asks.

An `OpDef` (its fields say what each holds) has its kind's schema, how `convert` derives the integer constants
(`derive`: the same `arith.*_params` calls as the fake-quant forms), the integer kernel (the `arith` function
the interpreter, the fake-quant forward and the integer ONNX export run), the float op it stands for, the bound
of every int32 intermediate and its cost. The interpreter, the checker, the artifact reader, `convert`, the
cost model and the ONNX exports iterate a program and ask `OPS[op.kind]`: none branches on kind strings. A new
kind is one entry here, its `arith` kernel (and float reference) and the model code that records it
(deploy/onnx_ops.ONNX_OPS only where ONNX needs more: int8 weights, operations on codes behind a DequantizeLinear).

Callables take `op` (a `program.Op`, duck-typed), `ins` (the inputs' `TensorFacts`), `consts` (the op's constants)
and `xs` (the inputs: int32 codes, masks, indices, or the float tensors of a float form; any `arith.namespace`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from densetnt_jax.quant import arith as A

RQ = ("mult", "shift", "pre")


def requant_keys(*prefixes: str) -> tuple:
  """The constant names of requant triples with these prefixes: ({p}mult, {p}shift, {p}pre) each."""
  return tuple(p + k for p in prefixes for k in RQ)


def requant(consts: dict, prefix: str = "") -> A.Requant:
  return A.Requant(consts[f"{prefix}mult"], consts[f"{prefix}shift"], consts[f"{prefix}pre"])


def requant_consts(prefix: str, rq: A.Requant) -> dict:
  return {f"{prefix}mult": rq.multiplier, f"{prefix}shift": rq.shift, f"{prefix}pre": rq.pre_shift}


# ------------------------------------------------------------------------------------------ bound helpers
@dataclasses.dataclass(frozen=True)
class TensorFacts:
  """What is known of one tensor before running: shape (batch None), the dtype the interpreter hands it on in
  (int8 / int16 codes, int32, bool, float32) and its declared code width."""
  shape: tuple
  dtype: str
  bits: int


def stored_dtype(bits: int, dtype: str) -> str:
  """The dtype the interpreter stores an op's output in (`interpreter._narrow`): codes in their own width."""
  if bits:
    return "int8" if bits <= 8 else "int16"
  return str(dtype)


class Unbounded(Exception):
  """An intermediate with no finite bound (a zero lattice step divides by zero)."""


def ints(v) -> np.ndarray:
  return np.asarray(v).astype(np.int64)


def absmax(v) -> int:
  a = ints(v)
  return int(np.max(np.abs(a))) if a.size else 0


def rshift_round(v: int, k: int) -> int:
  """arith.rshift_round on a Python int: floor(v / 2^k + 1/2), v unchanged for k <= 0."""
  return (v >> k) + ((v >> (k - 1)) & 1) if k > 0 else v


def code_max(bits: int) -> int:
  """Largest |code| of a signed b-bit code (the negative end): 2^(b-1)."""
  return 2**(bits - 1)


def value_bits(dtype: str) -> int:
  """Width b of a signed range [-2^(b-1), 2^(b-1)) holding every value of `dtype`: int8 8, int16 16, uint8 9,
  bool 1; floats 32 (an integer kernel casts them to int32)."""
  d = np.dtype(dtype)
  if d.kind == "b":
    return 1
  if d.kind in "iu":
    return d.itemsize * 8 + (d.kind == "u")
  return 32


def in_bits(op, ins: list, i: int) -> int:
  """Width of input i's values as the kernel sees them: the declared width, or the producer's stored dtype's
  when that is wider (a layout op passes its input's dtype through, whatever its own `bits` says)."""
  return max(int(op.attrs["in_bits"][i]), value_bits(ins[i].dtype))


def interp_bound(table, frac_bits: int) -> int:
  """Largest |(T[i+1] - T[i]) f + 2^(fb-1)| of `arith.interp` (f < 2^fb)."""
  t = np.asarray(table, np.int64)
  return int(np.max(np.abs(np.diff(t)))) * (2**frac_bits - 1) + 2**(frac_bits - 1)


def elements(shape: tuple, batch: int) -> int:
  """Number of elements of a tensor of `shape` (batch axis None) at `batch`."""
  return int(np.prod([batch if d is None else d for d in shape], dtype=np.int64))


def _batch_shape(shape: tuple, like: jax.Array) -> tuple:
  return tuple(like.shape[0] if d is None else d for d in shape)


# -------------------------------------------------------------------------------------------- the entry
@dataclasses.dataclass(frozen=True)
class OpDef:
  """One op kind. Callables take the recorded/program op first (see the module docstring)."""
  kind: str
  inputs: int | None                    # number of inputs; None: one or more
  consts: tuple                         # constant names the kernel reads (concat: one requant per input)
  attrs: tuple                          # attrs the recorder writes
  kernel: Callable                      # (op, consts, xs, hints) -> output; hints: {requant prefix: RequantHint}
  float: Callable | None = None         # (op, () -> its module's float params, xs) -> the float op the kernel
                                        #  stands for (arith's float references, any namespace); None: the
                                        #  kernel itself (it moves, compares or masks values of any dtype)
  point: bool = False                   # its output gets a scale of its own (a quantization point: QDQ's Q/DQ)
  derive: Callable | None = None        # (recorded op, () -> its module's float params, input scales, output
                                        #  scale, input widths) -> integer constants; None: it has none
  hinted_requants: Callable = lambda op: ()    # (op) -> prefixes of the requants the kernel takes a static hint for
  luts: tuple = ()                      # arith lookup tables the kernel reads
  bounds: Callable | None = None        # (op, ins) -> {intermediate: largest |value|}; None: no wide arithmetic
  row_shift: Callable | None = None     # (op, prefix, ins) -> (lo, hi) shift the kernel adds per row
  kernel_attrs: tuple = ()              # attrs the kernel or the bounds read (checked before tracing)
  attr_problems: Callable | None = None # (op, ins) -> what is wrong with its attrs (before tracing the kernel)
  shape_problems: Callable | None = None  # (op, ins) -> attrs that disagree with the producers' shapes (traced)
  weights: str | None = None            # the int8 weight constant the target's weight width applies to
  operand_multipliers: tuple = ()       # constants that scale an input before the sum (<= limit or a 2^k shift)
  macs: Callable | None = None          # (op, tensors, batch) -> multiply-accumulates
  work: Callable | None = None          # (op, tensors, batch) -> elements the element ops run over (default: out)
  element_ops: int = 1                  # integer ops per `work` element beyond the MACs (an assumption)
  glue: bool = False                    # moves codes, masks or indices as they are (layout, gather, top-k)
  host: bool = False                    # float op the host runs after the accelerator
  per_input_requant: bool = False       # one requant triple per input, prefixes "0_", "1_", ...
  widen_inputs: bool = True             # reads its code inputs as int32 (glue moves narrow codes as they are)
  reduces_rows: bool = False            # reduces rows of its input: the runner materializes that input first
  is_view: Callable = lambda op, tensors: False   # moves no data (a reshape, an index dropping unit axes)
  joins_codes: bool = False             # puts its inputs' codes side by side: they need one scale

  def consts_for(self, num_inputs: int) -> tuple:
    """The constant names an op of this kind with `num_inputs` inputs reads: `consts`, and a requant triple
    per input where the kernel requantizes each input on its own (concat)."""
    if self.per_input_requant:
      return self.consts + requant_keys(*(f"{i}_" for i in range(num_inputs)))
    return self.consts


def _one_requant(op) -> tuple:
  return ("",)


def _per_input_requant(op) -> tuple:
  return tuple(f"{i}_" for i in range(len(op.inputs)))


def _hint(hints: dict | None, prefix: str = "") -> A.RequantHint:
  return (hints or {}).get(prefix, A.NO_HINT)


# ------------------------------------------------------------------------------------------------- dense
def _dense_derive(r, params_of, s_in, s_out, b_in):
  p = params_of()
  d = A.dense_params(p["kernel"], p.get("bias"), s_in[0], s_out, b_in[0], 8, False)
  return {"w_q": d.w_q.astype(jnp.int8), "b_q": d.b_q, **requant_consts("", d.rq)}


def _dense_kernel(op, c, xs, hints):
  p = A.DenseParams(c["w_q"].astype(jnp.int32), c["b_q"], requant(c))
  return A.dense(xs[0], p, op.bits, op.attrs["in_bits"][0], 8, hint=_hint(hints))


def _dense_bounds(op, ins):
  w = np.abs(ints(op.consts["w_q"]))
  b = np.abs(np.broadcast_to(ints(op.consts["b_q"]), w.shape[1:]))
  x_max = code_max(in_bits(op, ins, 0))
  return {"x.w + b": max((s * x_max + bb for s, bb in zip(w.sum(axis=0).tolist(), b.tolist())), default=0)}


# --------------------------------------------------------------------------------------------- layernorm
def _layernorm_derive(r, params_of, s_in, s_out, b_in):
  p = params_of()
  d = A.layernorm_params(p["scale"], p["bias"], s_in[0], s_out, b_in[0], r["attrs"]["eps"], 16)
  return {"eps_m": d.eps_m, "eps_e": d.eps_e, **requant_consts("z_", d.rq_z), "g_q": d.g_q.astype(jnp.int16),
          "b_q": d.b_q, **requant_consts("", d.rq_y)}


def _layernorm_kernel(op, c, xs, hints):
  p = A.LayerNormParams(c["eps_m"], c["eps_e"], requant(c, "z_"), c["g_q"].astype(jnp.int32), c["b_q"], requant(c))
  return A.layernorm(xs[0], p, op.bits, hint=_hint(hints))


def _layernorm_bounds(op, ins):
  c = op.consts
  ch, x_max = int(ins[0].shape[-1]), code_max(in_bits(op, ins, 0))
  centred = max(ch, 2 * (ch - 1)) * x_max                    # C x, sum x and C x - sum x
  kd_max = max(0, centred.bit_length() - 15)                 # the row's shift of D; h <= 8
  eps_m, eps_e = absmax(c["eps_m"]), ints(c["eps_e"])
  e_lo, e_hi = int(eps_e.min()), int(eps_e.max())
  eps_shifted = eps_m << min(max(e_hi, 0), 15)               # eps_m << clip(sh, 0, 15), sh = eps_e - 2 (kd + h)
  eps_row = max(2**30 if e_hi >= 16 else min(eps_shifted, 2**30), eps_m)   # eps_m >> -sh below 0
  z_g = 2**15 * absmax(c["g_q"])                             # |z| <= 2^15 after its clip
  return {"C x - sum x": centred, "d^2": 2**30, f"sum of C={ch} squares + eps": ch * 2**14 + eps_row,
          "eps_m << shift": eps_shifted, "eps shift": max(-e_lo, e_hi, 0) + 2 * (kd_max + 8),
          "d r": 2**15 * int(np.max(A.RSQRT_TABLE)), "z g": z_g,
          "(z g >> 4) + beta": rshift_round(z_g, A.LN_PRE_SHIFT) + absmax(c["b_q"]),
          "rsqrt interpolation": interp_bound(A.RSQRT_TABLE, A.RSQRT_FRAC_BITS)}


def _layernorm_row_shift(op, prefix, ins):
  """z's requant adds the row's rsqrt exponent k in [-7, 8] and its square shift h in [0, 8]."""
  return (-7, 16) if prefix == "z_" else (0, 0)


# ------------------------------------------------------------------------------------------------ matmul
def _matmul_derive(r, params_of, s_in, s_out, b_in):
  return requant_consts("", A.matmul_params(s_in[0], s_in[1], s_out, r["attrs"]["k"], b_in[0], b_in[1],
                                            r["attrs"]["alpha"]))


def _matmul_kernel(op, c, xs, hints):
  a = op.attrs
  return A.matmul(xs[0], xs[1], requant(c), op.bits, a["in_bits"][0], a["in_bits"][1], a["transpose_b"],
                  hint=_hint(hints))


def _matmul_bounds(op, ins):
  ba, bb = (int(b) for b in op.attrs["in_bits"])             # the widths the kernel's pre-shifts are for
  kdim = int(ins[0].shape[-1])
  ka, kb = A.matmul_pre_shifts(kdim, ba, bb)
  a_max, b_max = (max(abs(rshift_round(-m, s)), abs(rshift_round(m - 1, s)))
                  for m, s in ((code_max(in_bits(op, ins, 0)), ka), (code_max(in_bits(op, ins, 1)), kb)))
  return {f"a.b over K={kdim}": kdim * a_max * b_max}


# ----------------------------------------------------------------------------------------------- softmax
def _softmax_derive(r, params_of, s_in, s_out, b_in):
  d = A.softmax_params(s_in[0], s_out)
  return {**requant_consts("t_", d.rq_t), **requant_consts("", d.rq_y)}


def _softmax_kernel(op, c, xs, hints):
  return A.softmax(xs[0], A.SoftmaxParams(requant(c, "t_"), requant(c)), None, op.bits, hint=_hint(hints))


def _softmax_bounds(op, ins):
  n, x_max = int(ins[0].shape[-1]), code_max(in_bits(op, ins, 0))
  e_max = int(np.max(A.EXP_TABLE))
  return {"x - max x": 2 * x_max - 1, f"exp sum over N={n}": n * e_max,
          "e r": e_max * int(np.max(A.RECIP_TABLE)),
          "exp interpolation": interp_bound(A.EXP_TABLE, A.EXP_FRAC_BITS),
          "reciprocal interpolation": interp_bound(A.RECIP_TABLE, A.RECIP_FRAC_BITS)}


def _softmax_row_shift(op, prefix, ins):
  """The output requant adds k = bitlen(exp sum) - 15 in [0, bitlen(N max(EXP_TABLE)) - 15]."""
  if prefix == "":
    return 0, max(0, (int(ins[0].shape[-1]) * int(np.max(A.EXP_TABLE))).bit_length() - 15)
  return 0, 0


# -------------------------------------------------------------------------------------------- add, mask_add
def _add_derive(r, params_of, s_in, s_out, b_in):
  d = A.add_params(s_in[0], s_in[1], s_out, b_in[0], b_in[1])
  return {"mx": d.mx, "my": d.my, **requant_consts("", d.rq)}


def _mask_add_derive(r, params_of, s_in, s_out, b_in):
  d = A.add_params(s_in[0], 1.0, s_out, b_in[0], 8)
  return {"mx": d.mx, "my": d.my, **requant_consts("", d.rq)}


def _add_kernel(op, c, xs, hints):
  return A.add(xs[0], xs[1], A.AddParams(c["mx"], c["my"], requant(c)), op.bits, hint=_hint(hints))


def _mask_add_kernel(op, c, xs, hints):
  return A.mask_add(xs[0], xs[1], A.AddParams(c["mx"], c["my"], requant(c)), op.bits, hint=_hint(hints))


def _add_bounds(op, ins):
  y_max = -A.MASK_NEG_Q if op.kind == "mask_add" else code_max(in_bits(op, ins, 1))
  return {"x mx + y my": code_max(in_bits(op, ins, 0)) * absmax(op.consts["mx"]) + y_max * absmax(op.consts["my"])}


# ------------------------------------------------------------------------------------------------ concat
def _concat_derive(r, params_of, s_in, s_out, b_in):
  out = {}
  for i, rq in enumerate(A.concat_params(s_in, s_out)):
    out.update(requant_consts(f"{i}_", rq))
  return out


def _concat_kernel(op, c, xs, hints):
  rqs = [requant(c, f"{i}_") for i in range(len(xs))]
  return A.concat(xs, rqs, op.bits, op.attrs["axis"], [_hint(hints, f"{i}_") for i in range(len(xs))])


# ---------------------------------------------------------------------------------------------- grid ops
def _grid_derive(r, params_of, s_in, s_out, b_in):
  return {"step": A.grid_step(s_in[0], r["attrs"]["spacing"])}


def _grid_bounds(op, ins):
  steps = sorted(set(ints(op.consts["step"]).reshape(-1).tolist()))
  if not steps or steps[0] < 1:
    raise Unbounded(f"lattice step {steps[0] if steps else 'missing'} < 1: x // step divides by zero or flips "
                    "the lattice; the step must be >= 1 code (arith.grid_step)")
  bits, radius = in_bits(op, ins, 0), int(op.attrs["radius"])
  out = {"lattice point (L + R) step": max(A.grid_acc_bound(s, radius, bits) for s in steps)}
  if op.kind == "dense_grid_mask":                           # seed differences L_m - L_m' + r
    out["seed lattice differences"] = max(2 * ((code_max(bits) + s // 2) // s + 1) + radius for s in steps)
  return out


MAX_GRID_RADIUS = 64        # the grid kernels build (2R+1)^2 offsets in numpy; real grids use R = 2
MAX_GRID_SEEDS = 4096       # dense_grid_mask builds an M x M table in numpy; real programs use M <= 16


def static_shape(shape) -> bool:
  """A list or tuple of positive int sizes after axis 0 (the batch, not checked here)."""
  return isinstance(shape, (tuple, list)) and \
      all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])


def _grid_attr_problems(op, ins):
  problems, r = [], op.attrs["radius"]
  if not (isinstance(r, int) and not isinstance(r, bool) and 0 <= r <= MAX_GRID_RADIUS):
    problems.append(f"attr radius {r!r} is not an int in [0, {MAX_GRID_RADIUS}]")
  if op.kind == "dense_grid_mask" and ins and ins[0] is not None and static_shape(ins[0].shape) \
      and len(ins[0].shape) >= 2 and ins[0].shape[-2] > MAX_GRID_SEEDS:
    problems.append(f"{ins[0].shape[-2]} seeds; the mask kernel's seed x seed table allows {MAX_GRID_SEEDS}")
  return problems


def _matmul_shape_problems(op, ins):
  if "k" in op.attrs and op.attrs["k"] != ins[0].shape[-1]:
    return [f"attr k = {op.attrs['k']!r}, but its producers contract K = {ins[0].shape[-1]}: its requant was "
            "derived for another K (re-convert the program)"]
  return []


# ---------------------------------------------------------------------------------------------- the costs
def _dense_macs(op, tensors, batch):
  return elements(op.shape, batch) * op.consts["w_q"].shape[0]


def _matmul_macs(op, tensors, batch):
  return elements(op.shape, batch) * op.attrs["k"]


def _input_elements(op, tensors, batch):
  """Reductions read every input element."""
  return elements(tensors[op.inputs[0]][0], batch)


def _points_x_seeds(op, tensors, batch):
  """dense_grid_mask checks every output point against every seed."""
  return elements(op.shape, batch) * tensors[op.inputs[0]][0][-2]


# ---------------------------------------------------------------------------------------------- the table
def _glue(kind: str, inputs: int | None, attrs: tuple, kernel: Callable, element_ops: int = 1, **kw) -> OpDef:
  return OpDef(kind, inputs, (), attrs, kernel, glue=True, element_ops=element_ops, **{"widen_inputs": False, **kw})


def _top_k(op, xs, low):
  # codes order like their values (s > 0); masked entries last, ties to the lower index (lax.top_k)
  xp = A.namespace(*xs)
  return xp.top_k_indices(xp.where(xs[1], xs[0], low), op.attrs["k"])


def _dense_float(op, params_of, xs):
  p = params_of()
  y = A.float_matmul(xs[0], p["kernel"])
  return y if p.get("bias") is None else y + p["bias"]


def _quantize(op, c, xs, hints):
  return A.quantize(A.namespace(*xs).where(xs[1], xs[0], 0.0), c["scale"], op.bits)


_TABLE = (
    OpDef("quantize", 2, ("scale",), ("in_bits",), _quantize,
          lambda op, p, xs: A.namespace(*xs).where(xs[1], xs[0], 0.0), point=True, element_ops=3,
          derive=lambda r, params_of, s_in, s_out, b_in: {"scale": jnp.asarray(s_out, jnp.float32)}),
    OpDef("dense", 1, ("w_q", "b_q") + RQ, ("in_bits",), _dense_kernel, _dense_float, point=True,
          derive=_dense_derive, hinted_requants=_one_requant, bounds=_dense_bounds, kernel_attrs=("in_bits",),
          macs=_dense_macs, element_ops=2, weights="w_q"),
    OpDef("layernorm", 1, ("eps_m", "eps_e") + requant_keys("z_") + ("g_q", "b_q") + RQ, ("eps", "in_bits"),
          _layernorm_kernel, lambda op, p, xs: A.float_layernorm(xs[0], p()["scale"], p()["bias"], op.attrs["eps"]),
          point=True, derive=_layernorm_derive, hinted_requants=_one_requant, luts=("RSQRT_TABLE",),
          bounds=_layernorm_bounds, row_shift=_layernorm_row_shift, kernel_attrs=("in_bits",),
          work=_input_elements, element_ops=12, reduces_rows=True),
    OpDef("relu", 1, (), ("in_bits",), lambda op, c, xs, h: A.relu(xs[0])),
    OpDef("masked_max", 2, (), ("in_bits",), lambda op, c, xs, h: A.masked_max(xs[0], xs[1][..., None], axis=-2),
          work=_input_elements, reduces_rows=True),
    OpDef("masked_fill", 2, (), ("in_bits",), lambda op, c, xs, h: A.masked_fill(xs[0], xs[1])),
    OpDef("matmul", 2, RQ, ("alpha", "in_bits", "k", "transpose_b"), _matmul_kernel,
          lambda op, p, xs: A.float_matmul(xs[0], xs[1], op.attrs["transpose_b"], op.attrs["alpha"]),
          point=True, derive=_matmul_derive, hinted_requants=_one_requant, bounds=_matmul_bounds,
          kernel_attrs=("in_bits", "transpose_b"), macs=_matmul_macs, element_ops=2,
          shape_problems=_matmul_shape_problems),
    OpDef("softmax", 1, requant_keys("t_") + RQ, ("in_bits",), _softmax_kernel,
          lambda op, p, xs: A.float_softmax(xs[0]), point=True, derive=_softmax_derive,
          hinted_requants=_one_requant, luts=("EXP_TABLE", "RECIP_TABLE"), bounds=_softmax_bounds,
          row_shift=_softmax_row_shift, kernel_attrs=("in_bits",), work=_input_elements, element_ops=10,
          reduces_rows=True),
    OpDef("add", 2, ("mx", "my") + RQ, ("in_bits",), _add_kernel, lambda op, p, xs: xs[0] + xs[1], point=True,
          derive=_add_derive, hinted_requants=_one_requant, bounds=_add_bounds, kernel_attrs=("in_bits",),
          element_ops=4, operand_multipliers=("mx", "my")),
    OpDef("mask_add", 2, ("mx", "my") + RQ, ("in_bits",), _mask_add_kernel,
          lambda op, p, xs: xs[0] + A.namespace(*xs).where(xs[1], 0.0, float(A.MASK_NEG_Q)), point=True,
          derive=_mask_add_derive, hinted_requants=_one_requant, bounds=_add_bounds, kernel_attrs=("in_bits",),
          element_ops=4, operand_multipliers=("mx", "my")),
    OpDef("concat", None, (), ("axis", "in_bits"), _concat_kernel,
          lambda op, p, xs: A.namespace(*xs).concatenate(xs, axis=op.attrs["axis"]), point=True,
          derive=_concat_derive, hinted_requants=_per_input_requant, kernel_attrs=("in_bits", "axis"),
          element_ops=2, per_input_requant=True),
    OpDef("dense_grid", 1, ("step",), ("in_bits", "radius", "spacing"),
          lambda op, c, xs, h: A.dense_grid(xs[0], c["step"], op.attrs["radius"], op.bits),
          lambda op, p, xs: A.float_dense_grid(xs[0], op.attrs["spacing"], op.attrs["radius"]),
          derive=_grid_derive, bounds=_grid_bounds, kernel_attrs=("in_bits", "radius"),
          attr_problems=_grid_attr_problems, element_ops=4),
    OpDef("dense_grid_mask", 2, ("step",), ("in_bits", "radius", "spacing"),
          lambda op, c, xs, h: A.dense_grid_mask(xs[0], xs[1], c["step"], op.attrs["radius"], op.attrs["in_bits"][0]),
          lambda op, p, xs: A.float_dense_grid_mask(xs[0], xs[1], op.attrs["spacing"], op.attrs["radius"]),
          derive=_grid_derive, bounds=_grid_bounds, kernel_attrs=("in_bits", "radius"),
          attr_problems=_grid_attr_problems, work=_points_x_seeds, element_ops=4),
    OpDef("log_softmax", 1, ("in_scale",), ("in_bits",),
          lambda op, c, xs, h: A.namespace(*xs).log_softmax(A.dequantize(xs[0], c["in_scale"])),
          lambda op, p, xs: A.namespace(*xs).log_softmax(xs[0]), host=True, reduces_rows=True,
          derive=lambda r, params_of, s_in, s_out, b_in: {"in_scale": s_in[0]}),
    _glue("reshape", 1, ("shape",), lambda op, c, xs, h: xs[0].reshape(_batch_shape(op.attrs["shape"], xs[0])),
          element_ops=0, is_view=lambda op, tensors: True),
    _glue("broadcast_to", 1, ("shape",),
          lambda op, c, xs, h: A.namespace(*xs).broadcast_to(xs[0], _batch_shape(op.attrs["shape"], xs[0]))),
    _glue("index", 1, ("index",), lambda op, c, xs, h: xs[0][op.attrs["index"]], element_ops=0,
          is_view=lambda op, tensors: elements(op.shape, 1) == elements(tensors[op.inputs[0]][0], 1)),
    _glue("concatenate", None, ("axis",),
          lambda op, c, xs, h: A.namespace(*xs).concatenate(xs, axis=op.attrs["axis"]), joins_codes=True),
    _glue("tile", 1, ("reps",), lambda op, c, xs, h: A.namespace(*xs).tile(xs[0], op.attrs["reps"]),
          kernel_attrs=("reps",), attr_problems=lambda op, ins: [] if op.attrs["reps"][0] == 1 else
          [f"attr reps {op.attrs['reps']} tiles the batch axis"]),
    _glue("moveaxis", 1, ("destination", "source"),
          lambda op, c, xs, h: A.namespace(*xs).moveaxis(xs[0], op.attrs["source"], op.attrs["destination"])),
    _glue("take_along_axis", 2, ("axis",),
          lambda op, c, xs, h: A.namespace(*xs).take_along_axis(xs[0], xs[1], axis=op.attrs["axis"])),
    _glue("top_k", 2, ("k",), lambda op, c, xs, h: _top_k(op, xs, A.INT32_MIN),
          float=lambda op, p, xs: _top_k(op, xs, -np.inf), work=_input_elements, element_ops=8,
          widen_inputs=True, reduces_rows=True),
)
OPS: dict[str, OpDef] = {d.kind: d for d in _TABLE}
GLUE = tuple(d.kind for d in _TABLE if d.glue)
HOST_KINDS = tuple(d.kind for d in _TABLE if d.host)


def op_def(kind: Any) -> OpDef:
  """The definition of `kind`; ValueError naming the known kinds for any other."""
  d = OPS.get(kind) if isinstance(kind, str) else None
  if d is None:
    raise ValueError(f"unknown op kind {kind!r}; known: {sorted(OPS)}")
  return d


def declared_bounds(program) -> dict[str, dict]:
  """{op: {intermediate: bound}} of every op with wide arithmetic, from the program's declared shapes and widths
  (the model checker bounds the same from traced shapes, and checks the constants first)."""
  facts = {n: TensorFacts(tuple(s), str(np.dtype(d)), 0) for n, (s, d) in program.inputs.items()}
  out = {}
  for o in program.ops:
    bounds = op_def(o.kind).bounds
    if bounds is not None:
      out[o.name] = bounds(o, [facts[i] for i in o.inputs])
    facts[o.name] = TensorFacts(tuple(o.shape), stored_dtype(o.bits, o.dtype), o.bits)
  return out
