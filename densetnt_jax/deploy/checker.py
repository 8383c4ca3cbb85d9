"""Model checker: does an integer program fit a deployment target (`config.target`)?

Rules (each violation names the layer and the rule; `check_program` collects them all, one per layer and rule):
  graph           every op input is a program input or an earlier op; op names are unique; every output role
                  names an op
  op-supported    the op kind is an on-chip compute kind of the target (`op_bits`), a layout op or a host op
  op-bits         the output code width is one the target allows for that kind; dense weights fit
                  `weight_bits` and the kernel's int8; code inputs are int8/int16
  scale           every code tensor (bits > 0) has a finite positive scale, so do the stored float32 scales;
                  consumers see the producer's width
  static-shape    every tensor's shape is static: None (the batch) on axis 0 only, positive ints elsewhere
  accumulator     no int32 intermediate of the op's kernel can overflow for ANY input codes in range (bounds below)
  multiplier      requant multipliers in [0, min(2^(multiplier_bits-1), 2^15) - 1]; add's operand multipliers
                  likewise or a power of two (a left shift)
  shift           requant shifts and pre-shifts, plus the per-row shift a kernel adds, in [0, max_shift]
  lut             the exp / reciprocal / rsqrt tables an op reads fit max_lut_entries and lut_entry_bits
  tensor-size     the output tensor at check_batch fits max_tensor_bytes
  operands        every constant and attr the op's kernel reads is there, integer constants are integer arrays
                  inside int32 (float32 scales), and the interpreter's kernel, traced on the producers' shapes
                  (jax.eval_shape: nothing runs), gives the declared output shape and dtype. So every shape the
                  bounds read is the one the interpreter computes, whatever the attrs say.

Accumulator bounds: exact integers from the program's own constants (the stored weights, biases, gammas, eps,
multipliers and steps, never the attrs they were derived from), the producers' shapes (K, N, C) and the width
the producers' codes are stored in, for input codes anywhere in their range (|x| <= 2^(b-1) for b bits):
  dense       max over channels n of sum_k |w_q[k, n]| 2^(bx-1) + |b_q[n]|      (the int32 x.w + b)
  matmul      K |a'| |b'|, a', b' the codes after the kernel's rounding pre-shifts for this K
  add         2^(bx-1) |mx| + 2^(by-1) |my|;  mask_add: 2^(bx-1) |mx| + 100 |my| (the -100 mask code)
  layernorm   C x, sum x and C x - sum x: max(C, 2 (C-1)) 2^(b-1); the squares' sum plus eps: C 2^14 + eps_row
              (eps_row <= 2^30, or |eps_m| 2^eps_e below 16); eps_m << min(eps_e, 15); the eps shift
              |eps_e| + 2 (kd + h); d r <= 2^15 max(RSQRT_TABLE); z g <= 2^15 max|g_q| (gamma is int16 by
              design, but the product is bounded from the stored codes); ((z g) >> 4) + beta
  softmax     x - max x < 2^bx; the exp sum N max(EXP_TABLE); e r <= max(EXP_TABLE) max(RECIP_TABLE)
  dense_grid(_mask)  the lattice point (L_max + R) step and x + step // 2 (arith.grid_acc_bound); the mask's
              seed differences 2 L_max + R; a step below 1 divides by zero
  tables      every interpolation (T[i+1] - T[i]) f + 2^(fb-1) of the exp / reciprocal / rsqrt tables
Requantization itself (`arith.mul_shift`) is exact for any int32 input when |M| <= 2^15 - 1 (16-bit limbs), so
it has no bound of its own (the multiplier rule holds M there); relu, masked max / fill, concat and the layout
ops do no arithmetic wider than their codes. The int16 x int8 dots run as three int8 dots whose int32 sum wraps
back to the exact value: the bound checked is the mathematical sum, as on a target with a native int16 MAC.
Per-row shifts: softmax adds k = bitlen(exp sum) - 15 in [0, bitlen(N max(EXP_TABLE)) - 15]; layernorm's z
requant adds k + h in [-7, 16] (rsqrt exponent and square shift).
A rule that cannot evaluate a malformed op (a string where a number belongs, a ragged constant) reports that
as its violation for the layer: `check_program` raises nothing for a Program of ops, whatever their contents.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from densetnt_jax.quant import arith as A
from densetnt_jax.quant import interpreter
from densetnt_jax.quant.program import GLUE, Op, Program
from densetnt_jax.workdir import load_program

RULES = ("graph", "op-supported", "op-bits", "scale", "static-shape", "accumulator", "multiplier", "shift", "lut",
         "tensor-size", "operands")
LUTS_BY_KIND = {"softmax": ("EXP_TABLE", "RECIP_TABLE"), "layernorm": ("RSQRT_TABLE",)}
ACCUMULATOR_KINDS = ("dense", "matmul", "add", "mask_add", "layernorm", "softmax", "dense_grid", "dense_grid_mask")
INT32_MAX = 2**31 - 1
KERNEL_MULT_MAX = 2**A.MULT_BITS - 1     # mul_shift's limbs: |lo * M| < 2^31 needs |M| <= 2^15 - 1


def _requant_keys(*prefixes: str) -> tuple:
  return tuple(f"{p}{k}" for p in prefixes for k in ("mult", "shift", "pre"))


# The constants each kind's integer kernel reads (interpreter._kernel); concat reads one requant per input.
KERNEL_CONSTS = {
    "quantize": ("scale",), "dense": ("w_q", "b_q") + _requant_keys(""),
    "layernorm": ("eps_m", "eps_e", "g_q", "b_q") + _requant_keys("z_", ""), "matmul": _requant_keys(""),
    "softmax": _requant_keys("t_", ""), "add": ("mx", "my") + _requant_keys(""),
    "mask_add": ("mx", "my") + _requant_keys(""), "dense_grid": ("step",), "dense_grid_mask": ("step",),
    "relu": (), "masked_max": (), "masked_fill": (), "concat": (), "log_softmax": ("in_scale",),
    **{k: () for k in GLUE}}
FLOAT_CONSTS = ("scale", "in_scale")     # float32: the quantize step and the host's dequantization
# The attrs the kernel or the bounds read, beyond what the kernel's own trace checks.
KERNEL_ATTRS = {"dense": ("in_bits",), "matmul": ("in_bits", "transpose_b"), "softmax": ("in_bits",),
                "layernorm": ("in_bits",), "add": ("in_bits",), "mask_add": ("in_bits",),
                "concat": ("in_bits", "axis"), "dense_grid": ("in_bits", "radius"),
                "dense_grid_mask": ("in_bits", "radius")}
MAX_GRID_RADIUS = 64        # the grid kernels build (2R+1)^2 offsets in numpy; real grids use R = 2
MAX_GRID_SEEDS = 4096       # dense_grid_mask builds an M x M table in numpy; real programs use M <= 16
EVAL_BATCH = 3              # the batch the kernels are traced at (any size works; axis 0 must stay the batch)
MESSAGE_CHARS = 300         # a violation's message is one line of at most this many characters


# ------------------------------------------------------------------------------------------------ spec
@dataclasses.dataclass(frozen=True)
class TargetSpec:
  """The `config.target` section as plain values (see configs/argo.py for what each means)."""
  name: str
  op_bits: dict                 # on-chip compute kind -> allowed output code widths
  layout_ops: tuple
  host_ops: tuple
  weight_bits: int
  accumulator_bits: int
  multiplier_bits: int
  max_shift: int
  max_lut_entries: int
  lut_entry_bits: int
  max_tensor_bytes: int
  check_batch: int
  peak_int8_tops: float
  int16_throughput: float
  mac_efficiency: float
  vector_gops: float
  dram_gb_per_s: float
  op_overhead_us: float
  perf_batches: tuple

  @classmethod
  def from_config(cls, target: Any) -> "TargetSpec":
    """From a ConfigDict section (`config.target`) or a mapping; unknown keys are an error, so is a missing one."""
    d = target.to_dict() if hasattr(target, "to_dict") else dict(target)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(d) - fields), sorted(fields - set(d))
    if unknown or missing:
      raise ValueError(f"config.target: unknown keys {unknown}, missing keys {missing}")
    d["op_bits"] = {k: tuple(int(b) for b in v) for k, v in dict(d["op_bits"]).items()}
    d["layout_ops"], d["host_ops"] = tuple(d["layout_ops"]), tuple(d["host_ops"])
    d["perf_batches"] = tuple(int(b) for b in d["perf_batches"])
    return cls(**d)

  def replace(self, **changes) -> "TargetSpec":
    return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------ sizes
def element_bytes(bits: int, dtype: str) -> int:
  """Bytes per element of a tensor as the target stores it: codes at their width, masks 1, int32/float32 4."""
  if bits:
    return 1 if bits <= 8 else 2
  return {"bool": 1, "int32": 4, "float32": 4}.get(dtype, 4)


def tensor_bytes(shape: tuple, bits: int, dtype: str, batch: int) -> int:
  """Python ints: a forged shape's product must not wrap (int64 np.prod of (2^32, 2^32) is 0)."""
  return math.prod(batch if d is None else int(d) for d in shape) * element_bytes(bits, dtype)


# -------------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class Violation:
  layer: str
  rule: str
  message: str

  def __str__(self) -> str:
    return f"FAIL layer={self.layer} rule={self.rule}: {self.message}"


@dataclasses.dataclass
class LayerRow:
  name: str
  kind: str
  in_bits: tuple
  bits: int
  acc_bound: int | None         # largest int32 intermediate, None when the op has none
  mult_range: tuple | None      # (min, max) requant multiplier
  shift_range: tuple | None     # (min, max) effective right shift, per-row shifts included
  tensor_bytes: int             # output at check_batch
  rules_failed: list


@dataclasses.dataclass
class CheckReport:
  spec: TargetSpec
  rows: list
  violations: list

  @property
  def ok(self) -> bool:
    return not self.violations

  def rules_failed(self) -> set:
    return {(v.layer, v.rule) for v in self.violations}


# ---------------------------------------------------------------------------------------------- facts
@dataclasses.dataclass(frozen=True)
class TensorFacts:
  """What the checker knows of one tensor: shape (batch None), the dtype the interpreter hands it on in (int8 /
  int16 codes, int32, bool, float32: traced from its producer's kernel) and its declared code width."""
  shape: tuple
  dtype: str
  bits: int


def value_bits(dtype: str) -> int:
  """Width b of a signed range [-2^(b-1), 2^(b-1)) holding every value of `dtype`: int8 8, int16 16, uint8 9,
  bool 1; floats 32 (an integer kernel casts them to int32)."""
  d = np.dtype(dtype)
  if d.kind == "b":
    return 1
  if d.kind in "iu":
    return d.itemsize * 8 + (d.kind == "u")
  return 32


def _stored_dtype(o: Op) -> str:
  """The dtype the interpreter stores an op's output in (`interpreter._narrow`), when its kernel was not traced."""
  if o.bits:
    return "int8" if o.bits <= 8 else "int16"
  return str(o.dtype)


def _one_line(text: Any) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


class _Guard:
  """`with _Guard(layer, rule, fail):` an exception inside becomes that rule's violation for the layer (a
  malformed op must give a report line, never a traceback)."""

  def __init__(self, layer: str, rule: str, fail):
    self.layer, self.rule, self.fail = layer, rule, fail

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb) -> bool:
    if error is None or not isinstance(error, Exception):
      return False
    self.fail(self.layer, self.rule, f"cannot be checked ({type(error).__name__}: {error}): the program is "
              "malformed here; re-convert it")
    return True


# --------------------------------------------------------------------------------------------- bounds
class Unbounded(Exception):
  """An intermediate with no finite bound (a zero lattice step divides by zero)."""


def _ints(v) -> np.ndarray:
  return np.asarray(v).astype(np.int64)


def _absmax(v) -> int:
  a = _ints(v)
  return int(np.max(np.abs(a))) if a.size else 0


def _rshift_round(v: int, k: int) -> int:
  """arith.rshift_round on a Python int: floor(v / 2^k + 1/2), v unchanged for k <= 0."""
  return (v >> k) + ((v >> (k - 1)) & 1) if k > 0 else v


def _code_max(bits: int) -> int:
  """Largest |code| of a signed b-bit code (the negative end): 2^(b-1)."""
  return 2**(bits - 1)


def _in_bits(o: Op, ins: list, i: int) -> int:
  """Width of input i's values as the kernel sees them: the declared width, or the producer's stored dtype's
  when that is wider (a layout op passes its input's dtype through, whatever its own `bits` says)."""
  return max(int(o.attrs["in_bits"][i]), value_bits(ins[i].dtype))


def _interp_bound(table, frac_bits: int) -> int:
  """Largest |(T[i+1] - T[i]) f + 2^(fb-1)| of `arith.interp` (f < 2^fb)."""
  t = np.asarray(table, np.int64)
  return int(np.max(np.abs(np.diff(t)))) * (2**frac_bits - 1) + 2**(frac_bits - 1)


def intermediate_bounds(o: Op, ins: list) -> dict:
  """{intermediate: largest |value|} of the int32 values the op's kernel computes, for any input codes in range
  (module doc), from the op's stored constants and its inputs' `TensorFacts`; {} for kinds without wide
  arithmetic. Raises `Unbounded` for an intermediate with no bound."""
  c, k = o.consts, o.kind
  if k == "dense":
    w = np.abs(_ints(c["w_q"]))
    b = np.abs(np.broadcast_to(_ints(c["b_q"]), w.shape[1:]))
    x_max = _code_max(_in_bits(o, ins, 0))
    return {"x.w + b": max((s * x_max + bb for s, bb in zip(w.sum(axis=0).tolist(), b.tolist())), default=0)}
  if k == "matmul":
    ba, bb = (int(b) for b in o.attrs["in_bits"])              # the widths the kernel's pre-shifts are for
    kdim = int(ins[0].shape[-1])
    ka, kb = A.matmul_pre_shifts(kdim, ba, bb)
    a_max, b_max = (max(abs(_rshift_round(-m, s)), abs(_rshift_round(m - 1, s)))
                    for m, s in ((_code_max(_in_bits(o, ins, 0)), ka), (_code_max(_in_bits(o, ins, 1)), kb)))
    return {f"a.b over K={kdim}": kdim * a_max * b_max}
  if k in ("add", "mask_add"):
    y_max = -A.MASK_NEG_Q if k == "mask_add" else _code_max(_in_bits(o, ins, 1))
    return {"x mx + y my": _code_max(_in_bits(o, ins, 0)) * _absmax(c["mx"]) + y_max * _absmax(c["my"])}
  if k == "layernorm":
    ch, x_max = int(ins[0].shape[-1]), _code_max(_in_bits(o, ins, 0))
    centred = max(ch, 2 * (ch - 1)) * x_max                    # C x, sum x and C x - sum x
    kd_max = max(0, centred.bit_length() - 15)                 # the row's shift of D; h <= 8
    eps_m, eps_e = _absmax(c["eps_m"]), _ints(c["eps_e"])
    e_lo, e_hi = int(eps_e.min()), int(eps_e.max())
    eps_shifted = eps_m << min(max(e_hi, 0), 15)               # eps_m << clip(sh, 0, 15), sh = eps_e - 2 (kd + h)
    eps_row = max(2**30 if e_hi >= 16 else min(eps_shifted, 2**30), eps_m)   # eps_m >> -sh below 0
    z_g = 2**15 * _absmax(c["g_q"])                            # |z| <= 2^15 after its clip
    return {"C x - sum x": centred, "d^2": 2**30, f"sum of C={ch} squares + eps": ch * 2**14 + eps_row,
            "eps_m << shift": eps_shifted, "eps shift": max(-e_lo, e_hi, 0) + 2 * (kd_max + 8),
            "d r": 2**15 * int(np.max(A.RSQRT_TABLE)), "z g": z_g,
            "(z g >> 4) + beta": _rshift_round(z_g, A.LN_PRE_SHIFT) + _absmax(c["b_q"]),
            "rsqrt interpolation": _interp_bound(A.RSQRT_TABLE, A.RSQRT_FRAC_BITS)}
  if k == "softmax":
    n, x_max = int(ins[0].shape[-1]), _code_max(_in_bits(o, ins, 0))
    e_max = int(np.max(A.EXP_TABLE))
    return {"x - max x": 2 * x_max - 1, f"exp sum over N={n}": n * e_max,
            "e r": e_max * int(np.max(A.RECIP_TABLE)),
            "exp interpolation": _interp_bound(A.EXP_TABLE, A.EXP_FRAC_BITS),
            "reciprocal interpolation": _interp_bound(A.RECIP_TABLE, A.RECIP_FRAC_BITS)}
  if k in ("dense_grid", "dense_grid_mask"):
    steps = sorted(set(_ints(c["step"]).reshape(-1).tolist()))
    if not steps or steps[0] < 1:
      raise Unbounded(f"lattice step {steps[0] if steps else 'missing'} < 1: x // step divides by zero or flips "
                      "the lattice; the step must be >= 1 code (arith.grid_step)")
    bits, radius = _in_bits(o, ins, 0), int(o.attrs["radius"])
    out = {"lattice point (L + R) step": max(A.grid_acc_bound(s, radius, bits) for s in steps)}
    if k == "dense_grid_mask":                                 # seed differences L_m - L_m' + r
      out["seed lattice differences"] = max(2 * ((_code_max(bits) + s // 2) // s + 1) + radius for s in steps)
    return out
  return {}


def _requant_prefixes(o: Op) -> list[str]:
  """Prefixes of the op's requant triples ({p}mult, {p}shift, {p}pre): '', 'z_', 't_', '0_', '1_', ..."""
  return sorted(k[:-4] for k in o.consts if k.endswith("mult"))


def _row_shift(o: Op, prefix: str, ins: list) -> tuple[int, int]:
  """(min, max) shift the kernel adds per row to this requant's static shift (N from the producer's shape)."""
  if o.kind == "softmax" and prefix == "":
    return 0, max(0, (int(ins[0].shape[-1]) * int(np.max(A.EXP_TABLE))).bit_length() - 15)
  if o.kind == "layernorm" and prefix == "z_":
    return -7, 16
  return 0, 0


# ------------------------------------------------------------------------------------------- operands
_KERNEL_OUTPUTS: dict = {}     # op signature -> (shape, dtype) or the kernel's error message


def kernel_output(o: Op, ins: list) -> tuple[tuple, str]:
  """(shape with the batch None, dtype) of the op's output as the interpreter's kernel computes it from its
  inputs' shapes and dtypes and its constants' shapes (jax.eval_shape: traced, nothing runs); raises
  ValueError with the kernel's error. Cached by signature: a program's many similar ops trace once."""
  xs = [jax.ShapeDtypeStruct(tuple(EVAL_BATCH if d is None else d for d in t.shape), np.dtype(t.dtype))
        for t in ins]
  consts = {k: jax.ShapeDtypeStruct(np.shape(v), jax.dtypes.canonicalize_dtype(np.asarray(v).dtype))
            for k, v in o.consts.items()}
  key = repr((o.kind, o.bits, sorted(o.attrs.items()), xs, sorted(consts.items())))
  hit = _KERNEL_OUTPUTS.get(key)
  if hit is None:
    try:
      out = jax.eval_shape(lambda c, x: interpreter._step(o, c, x, None), consts, xs)
      hit = (tuple(out.shape), str(out.dtype))
    except Exception as e:   # whatever the kernel raises on these shapes is the op's fault
      hit = f"{type(e).__name__}: {e}"
    if len(_KERNEL_OUTPUTS) >= 4096:
      _KERNEL_OUTPUTS.clear()
    _KERNEL_OUTPUTS[key] = hit
  if isinstance(hit, str):
    raise ValueError(hit)
  shape, dtype = hit
  return ((None,) + shape[1:] if shape[:1] == (EVAL_BATCH,) else shape), dtype


def _const_problem(name: str, v) -> str | None:
  a = np.asarray(v)
  if name in FLOAT_CONSTS:
    return None if a.dtype.kind == "f" else f"{name} is {a.dtype}, not a float32 scale"
  if a.dtype.kind not in "iu":
    return f"constant {name} is {a.dtype}, not an integer array"
  if a.size and (int(a.min()) < -2**31 or int(a.max()) > INT32_MAX):
    return f"constant {name} holds values in [{int(a.min())}, {int(a.max())}], outside int32"
  return None


def _attr_problems(o: Op, ins: list | None) -> list[str]:
  a, problems = o.attrs, []
  missing = [n for n in KERNEL_ATTRS.get(o.kind, ()) if n not in a]
  if missing:
    return [f"missing attr(s) {missing}"]
  if "in_bits" in KERNEL_ATTRS.get(o.kind, ()):
    b = a["in_bits"]
    if not (isinstance(b, (tuple, list)) and len(b) == len(o.inputs)
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 32 for x in b)):
      problems.append(f"attr in_bits {b!r} is not one width in [0, 32] per input ({len(o.inputs)})")
  if o.kind in ("dense_grid", "dense_grid_mask"):
    r = a["radius"]
    if not (isinstance(r, int) and not isinstance(r, bool) and 0 <= r <= MAX_GRID_RADIUS):
      problems.append(f"attr radius {r!r} is not an int in [0, {MAX_GRID_RADIUS}]")
    if o.kind == "dense_grid_mask" and ins and ins[0] is not None and _static(ins[0].shape) \
        and len(ins[0].shape) >= 2 and ins[0].shape[-2] > MAX_GRID_SEEDS:
      problems.append(f"{ins[0].shape[-2]} seeds; the mask kernel's seed x seed table allows {MAX_GRID_SEEDS}")
  return problems


def _check_operands(o: Op, ins: list | None, spec: TargetSpec, fail) -> tuple[bool, TensorFacts | None]:
  """The operands rule: (the constants and attrs are usable by the bound rules, the output's facts as the
  kernel computes them, None when it could not be traced)."""
  if o.kind not in KERNEL_CONSTS:
    if o.kind in spec.op_bits or o.kind in spec.layout_ops or o.kind in spec.host_ops:
      fail(o.name, "operands", f"the interpreter has no kernel for op kind {o.kind!r}; known: "
           f"{sorted(KERNEL_CONSTS)}")
    return False, None
  need = KERNEL_CONSTS[o.kind]
  if o.kind == "concat":
    need = _requant_keys(*(f"{i}_" for i in range(len(o.inputs))))
  problems = []
  missing = [k for k in need if k not in o.consts]
  if missing:
    problems.append(f"missing constant(s) {missing}")
  problems += [p for p in (_const_problem(k, v) for k, v in o.consts.items()) if p]
  problems += _attr_problems(o, ins)
  if problems:
    fail(o.name, "operands", "; ".join(problems) + f": the {o.kind} kernel cannot run this op (re-convert the "
         "program)")
    return False, None
  if ins is None or not all(_static(t.shape) and t.shape[:1] == (None,) for t in ins):
    return True, None                            # graph / static-shape already failed upstream
  try:
    shape, dtype = kernel_output(o, ins)
  except ValueError as e:
    fail(o.name, "operands", f"the interpreter's {o.kind} kernel fails on inputs of shapes "
         f"{[t.shape for t in ins]}: {e}")
    return True, None
  declared = (tuple(o.shape), _stored_dtype(o))
  if _static(o.shape) and declared != (shape, dtype):
    fail(o.name, "operands", f"declares {declared[0]} {declared[1]}, but its kernel gives {shape} {dtype} from "
         f"inputs of shapes {[t.shape for t in ins]}: the shapes the bounds read would be wrong")
  if o.kind == "matmul" and "k" in o.attrs and o.attrs["k"] != ins[0].shape[-1]:
    fail(o.name, "operands", f"attr k = {o.attrs['k']!r}, but its producers contract K = {ins[0].shape[-1]}: its "
         "requant was derived for another K (re-convert the program)")
  return True, TensorFacts(shape, dtype, o.bits)


# --------------------------------------------------------------------------------------------- check
def check_program(program: Program, spec: TargetSpec) -> CheckReport:
  """Every rule on every op; a violation per (layer, rule) with the numbers that broke it. A malformed op
  (missing or ill-typed constants, attrs, shapes) is reported as violations, never raised."""
  violations: list[Violation] = []
  tensors: dict[str, TensorFacts] = {}

  def fail(layer: str, rule: str, message: str) -> None:
    violations.append(Violation(str(layer), rule, _one_line(message)))

  for name, value in program.inputs.items():
    with _Guard(name, "static-shape", fail):
      shape, dtype = value
      _check_shape(name, shape, fail)
      tensors[name] = TensorFacts(tuple(shape), str(np.dtype(dtype)), 0)
  rows, ops = [], {}
  for o in program.ops:
    before = len(violations)
    with _Guard(getattr(o, "name", "?"), "graph", fail):
      row = _check_op(o, tensors, spec, fail)
      row.rules_failed = sorted({v.rule for v in violations[before:]})
      rows.append(row)
      ops[o.name] = o
  for role, name in program.outputs.items():
    o = ops.get(name)
    if o is None:
      fail(name, "graph", f"output {role!r} names {name!r}, which no op defines")
    elif o.bits and "scale" not in o.consts:
      fail(name, "operands", f"output {role!r} is an int{o.bits} code tensor without the float32 'scale' constant "
           "the host dequantizes it with (re-convert the program)")
  return CheckReport(spec, rows, violations)


def _check_op(o: Op, tensors: dict, spec: TargetSpec, fail) -> LayerRow:
  """Every rule on one op; records its output's facts in `tensors`."""
  acc_bits = min(spec.accumulator_bits, 32)                # the integer kernels are int32 whatever the target
  acc_limit = 2**(acc_bits - 1) - 1
  spec_mult_limit = 2**(spec.multiplier_bits - 1) - 1
  mult_limit = min(spec_mult_limit, KERNEL_MULT_MAX)
  mult_why = f"{spec.multiplier_bits}-bit signed" if spec_mult_limit <= KERNEL_MULT_MAX else \
      f"mul_shift's 16-bit limbs, although the target allows {spec.multiplier_bits}-bit"
  in_bits = o.attrs.get("in_bits", ()) if isinstance(o.attrs, dict) else ()
  in_bits = tuple(in_bits) if isinstance(in_bits, (tuple, list)) else ()
  # graph
  ins = None                                               # the inputs' facts, when every input is defined
  with _Guard(o.name, "graph", fail):
    missing = [i for i in o.inputs if i not in tensors]
    if missing:
      fail(o.name, "graph", f"reads {missing}, which no earlier op or program input defines")
    else:
      ins = [tensors[i] for i in o.inputs]
    if o.name in tensors:
      fail(o.name, "graph", f"defines {o.name!r} again: an earlier op or a program input has that name")
  # op-supported / op-bits
  on_chip = o.kind in spec.op_bits
  if not (on_chip or o.kind in spec.layout_ops or o.kind in spec.host_ops):
    fail(o.name, "op-supported", f"op kind {o.kind!r} is not supported by target {spec.name!r} (compute: "
         f"{sorted(spec.op_bits)}, layout: {list(spec.layout_ops)}, host: {list(spec.host_ops)})")
  with _Guard(o.name, "op-bits", fail):
    if on_chip and o.bits not in spec.op_bits[o.kind]:
      fail(o.name, "op-bits", f"{o.kind} with int{o.bits} output; target {spec.name!r} allows "
           + "/".join(f"int{b}" for b in spec.op_bits[o.kind]) + f" for {o.kind}")
    if o.kind not in GLUE:
      wide = [b for b in in_bits if b and b not in (8, 16)]
      if wide:
        fail(o.name, "op-bits", f"code inputs of {wide} bits; the target reads int8/int16 codes")
  # scale
  with _Guard(o.name, "scale", fail):
    if o.bits:
      if o.scale is None or not math.isfinite(o.scale) or o.scale <= 0:
        fail(o.name, "scale", f"int{o.bits} code tensor without a finite positive scale (scale={o.scale})")
    if o.kind not in GLUE and in_bits and ins is not None:
      got = tuple(t.bits for t in ins)
      if in_bits != got:
        fail(o.name, "scale", f"expects input widths {in_bits}, its producers give {got}")
    for k in FLOAT_CONSTS:
      v = np.asarray(o.consts.get(k, 1.0))
      if v.dtype.kind == "f" and not (v.size and np.all(np.isfinite(v)) and np.all(v > 0)):
        fail(o.name, "scale", f"stored {k} {v.ravel()[:4].tolist()} is not a finite positive float32 scale")
  # static-shape
  with _Guard(o.name, "static-shape", fail):
    _check_shape(o.name, o.shape, fail)
  # operands
  consts_ok, out = False, None
  with _Guard(o.name, "operands", fail):
    consts_ok, out = _check_operands(o, ins, spec, fail)
  if consts_ok and o.kind == "dense":
    with _Guard(o.name, "op-bits", fail):
      w = _ints(o.consts["w_q"])
      lim = min(2**(spec.weight_bits - 1) - 1, 127)            # the kernel narrows weights to int8
      if np.asarray(o.consts["w_q"]).dtype.itemsize * 8 > spec.weight_bits or _absmax(w) > lim:
        fail(o.name, "op-bits", f"weights {o.consts['w_q'].dtype} with max |w_q| {_absmax(w)}; the target takes "
             f"int{spec.weight_bits} weights in [-{lim}, {lim}] (the dense kernel reads int8)")
  # accumulator
  bound = None
  if consts_ok and ins is not None and o.kind in ACCUMULATOR_KINDS:
    with _Guard(o.name, "accumulator", fail):
      try:
        bounds = intermediate_bounds(o, ins)
      except Unbounded as e:
        fail(o.name, "accumulator", str(e))
      else:
        bound = max(bounds.values())
        over = sorted(((v, n) for n, v in bounds.items() if v > acc_limit), reverse=True)
        if over:
          fail(o.name, "accumulator", "; ".join(f"int{acc_bits} {n} can reach {v} (2^{math.log2(v):.2f})"
                                                for v, n in over[:3]) + f" > {acc_limit} for inputs in range")
  # multiplier / shift
  mults, shifts = [], []
  if consts_ok and ins is not None:
    for p in _requant_prefixes(o):
      with _Guard(o.name, "shift", fail):
        m = _ints(o.consts[f"{p}mult"])
        s = _ints(o.consts[f"{p}shift"])
        pre = _ints(o.consts.get(f"{p}pre", np.zeros((), np.int64)))
        lo_row, hi_row = _row_shift(o, p, ins)
        mults += [int(m.min()), int(m.max())]
        shifts += [int(s.min()) + lo_row, int(s.max()) + hi_row]
        if m.min() < 0 or m.max() > mult_limit:
          bad = int(m.max()) if m.max() > mult_limit else int(m.min())
          fail(o.name, "multiplier", f"requant multiplier {p}mult = {bad} is outside [0, {mult_limit}] ({mult_why})")
        if s.min() + lo_row < 0 or s.max() + hi_row > spec.max_shift:
          fail(o.name, "shift", f"requant {p}shift in [{int(s.min())}, {int(s.max())}]"
               + (f" plus a per-row shift in [{lo_row}, {hi_row}]" if hi_row or lo_row else "")
               + f" leaves [0, {spec.max_shift}]")
        if pre.min() < 0 or pre.max() > spec.max_shift:
          fail(o.name, "shift", f"requant pre-shift {p}pre in [{int(pre.min())}, {int(pre.max())}] leaves "
               f"[0, {spec.max_shift}]")
    if o.kind in ("add", "mask_add"):
      with _Guard(o.name, "multiplier", fail):
        for n in ("mx", "my"):
          v = _absmax(o.consts[n])
          pow2_shift = v > 0 and v & (v - 1) == 0 and v.bit_length() - 1 <= spec.max_shift
          if v > mult_limit and not pow2_shift:
            fail(o.name, "multiplier", f"operand multiplier {n} = {v} is neither <= {mult_limit} nor a power of "
                 f"two (a left shift)")
          if not pow2_shift or v <= mult_limit:
            mults += [v]
  # lut
  for table in LUTS_BY_KIND.get(o.kind, ()):
    t = np.asarray(getattr(A, table))
    if t.size > spec.max_lut_entries or t.min() < 0 or t.max() >= 2**spec.lut_entry_bits:
      fail(o.name, "lut", f"{table} has {t.size} entries in [{int(t.min())}, {int(t.max())}]; the target "
           f"holds {spec.max_lut_entries} unsigned {spec.lut_entry_bits}-bit entries")
  # tensor-size
  nbytes = -1
  with _Guard(o.name, "tensor-size", fail):
    nbytes = tensor_bytes(o.shape, o.bits, o.dtype, spec.check_batch) if _static(o.shape) else -1
    if nbytes > spec.max_tensor_bytes:
      fail(o.name, "tensor-size", f"output {nbytes} bytes at batch {spec.check_batch} > max_tensor_bytes "
           f"{spec.max_tensor_bytes}")
  if o.name not in tensors:
    tensors[o.name] = out or TensorFacts(tuple(o.shape), _stored_dtype(o), o.bits)
  return LayerRow(o.name, o.kind, in_bits, o.bits, bound, (min(mults), max(mults)) if mults else None,
                  (min(shifts), max(shifts)) if shifts else None, nbytes, [])


def _static(shape) -> bool:
  return isinstance(shape, (tuple, list)) and \
      all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])


def _check_shape(name: str, shape, fail) -> None:
  if not shape or shape[0] is not None:
    fail(name, "static-shape", f"shape {shape}: axis 0 must be the batch (None)")
  bad = [i for i, d in enumerate(shape) if i > 0 and not (isinstance(d, int) and not isinstance(d, bool) and d > 0)]
  if bad:
    fail(name, "static-shape", f"shape {shape}: axes {bad} are not static positive sizes")


# ---------------------------------------------------------------------------------------------- table
def _bits_text(v: int) -> str:
  return f"2^{math.log2(v):.1f}" if v and v > 0 else "0"


def format_report(report: CheckReport, max_rows: int | None = None) -> str:
  """The per-layer table, then one line per violation and a verdict line."""
  spec = report.spec
  acc_limit = 2**(spec.accumulator_bits - 1) - 1
  head = (f"{'#':>3} {'layer':<46} {'kind':<15} {'bits':<9} {'acc bound':>12} {'mult range':>13} "
          f"{'shift':>7} {'bytes@' + str(spec.check_batch):>11}  verdict")
  lines = [f"target {spec.name}: int{spec.accumulator_bits} accumulators (limit {_bits_text(acc_limit + 1)}), "
           f"{spec.multiplier_bits}-bit multipliers, shifts [0, {spec.max_shift}], LUTs <= {spec.max_lut_entries}, "
           f"tensors <= {spec.max_tensor_bytes} bytes at batch {spec.check_batch}", head, "-" * len(head)]
  rows = report.rows
  if max_rows is not None:
    rows = [r for r in rows if r.rules_failed] + [r for r in rows if not r.rules_failed][:max_rows]
  for i, r in enumerate(rows):
    ins = ",".join(str(b) if b else "-" for b in r.in_bits)
    bits = f"{ins}>{r.bits or '-'}" if ins else f">{r.bits or '-'}"
    acc = f"{_bits_text(r.acc_bound)}/2^31" if r.acc_bound is not None else ""
    mult = f"[{r.mult_range[0]},{r.mult_range[1]}]" if r.mult_range else ""
    shift = f"{r.shift_range[0]}..{r.shift_range[1]}" if r.shift_range else ""
    verdict = "ok" if not r.rules_failed else "FAIL " + ",".join(r.rules_failed)
    lines.append(f"{i:>3} {r.name[:46]:<46} {r.kind:<15} {bits:<9} {acc:>12} {mult:>13} {shift:>7} "
                 f"{r.tensor_bytes:>11}  {verdict}")
  lines += [str(v) for v in report.violations]
  accs = [r.acc_bound for r in report.rows if r.acc_bound is not None]
  shifts = [r.shift_range[1] for r in report.rows if r.shift_range]
  worst = max(report.rows, key=lambda r: r.tensor_bytes) if report.rows else None
  lines.append(f"{len(report.rows)} layers, {len(RULES)} rules; largest accumulator {_bits_text(max(accs))} of "
               f"{_bits_text(acc_limit + 1)}, largest shift {max(shifts)} of {spec.max_shift}, largest tensor "
               f"{worst.tensor_bytes} bytes ({worst.name}) of {spec.max_tensor_bytes}" if accs and worst else
               f"{len(report.rows)} layers")
  lines.append("PASS: the program fits target " + spec.name if report.ok else
               f"FAIL: {len(report.violations)} violation(s) of target {spec.name} in "
               f"{len({v.layer for v in report.violations})} layer(s)")
  return "\n".join(lines)


def run(config, workdir: str, program: Program | None = None, quiet: bool = False) -> int:
  """bin/model_checker.py: check the workdir's int program against config.target; 0 when it fits, else 1."""
  if program is None:
    program = load_program(workdir)
  report = check_program(program, TargetSpec.from_config(config.target))
  if not quiet:
    print(format_report(report))
  return 0 if report.ok else 1

