"""Model checker: does an integer program fit a deployment target (`config.target`)?

One function per rule (`OP_RULES`, named as in the report), each adding a violation per layer with the numbers
that broke it. The accumulator rule asks the op table (`OpDef.bounds`) for the bound of every int32 intermediate
of the op's kernel, for input codes anywhere in their range, from the program's own constants (the stored
weights, biases, gammas, eps, multipliers and steps, never the attrs they were derived from) and the producers'
shapes and stored widths; the operands rule traces each kernel on those shapes, so the shapes the bounds read
are the ones the interpreter computes. Requantization (`arith.mul_shift`) is exact for any int32 input when
|M| <= 2^15 - 1 (the multiplier rule holds M there). int16 x int8 dots run as three int8 dots whose int32 sum
wraps back to the exact value: the bound checked is the mathematical sum, as on a native int16 MAC. A rule that
cannot evaluate a malformed op reports that as its violation: `check_program` raises nothing for a Program.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import jax
import numpy as np

from densetnt_jax.quant import arith as A
from densetnt_jax.quant import interpreter
from densetnt_jax.quant.ops import OPS, OpDef, TensorFacts, Unbounded, absmax, ints, static_shape, stored_dtype
from densetnt_jax.quant.program import Op, Program
from densetnt_jax.workdir import load_program

INT32_MAX = 2**31 - 1
KERNEL_MULT_MAX = 2**A.MULT_BITS - 1     # mul_shift's limbs: |lo * M| < 2^31 needs |M| <= 2^15 - 1


FLOAT_CONSTS = ("scale", "in_scale")     # float32: the quantize step and the host's dequantization
CHECK_BATCH = 65537         # the batch the kernels are traced at (abstractly): an op that keeps it whole keeps
                            # any batch up to it whole (at batch 3, x[:3] passed as "the batch")
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
def _one_line(text: Any) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


@contextlib.contextmanager
def _guard(layer: str, rule: str, fail):
  """An exception inside becomes that rule's violation for the layer: a malformed op gives a report line, never a
  traceback."""
  try:
    yield
  except Exception as error:          # noqa: BLE001  whatever a malformed op makes a rule raise
    fail(layer, rule, f"cannot be checked ({type(error).__name__}: {error}): the program is malformed here; "
         "re-convert it")


# --------------------------------------------------------------------------------------------- bounds
_UNKNOWN_KIND = OpDef("?", None, (), (), kernel=None)    # what the rules assume of a kind the table lacks


def _def(o: Op) -> OpDef:
  """The op's definition in the op table (an empty one for an unknown kind: the operands rule reports it)."""
  return OPS.get(o.kind, _UNKNOWN_KIND) if isinstance(o.kind, str) else _UNKNOWN_KIND


def _requant_prefixes(o: Op) -> list[str]:
  """Prefixes of the op's requant triples ({p}mult, {p}shift, {p}pre): '', 'z_', 't_', '0_', '1_', ..."""
  return sorted(k[:-4] for k in o.consts if k.endswith("mult"))


# ------------------------------------------------------------------------------------------- operands
_KERNEL_OUTPUTS: dict = {}     # op signature -> (shape, dtype) or the kernel's error message


def kernel_output(o: Op, ins: list) -> tuple[tuple, str]:
  """(shape with the batch None, dtype) of the op's output as the interpreter's kernel computes it from its
  inputs' shapes and dtypes and its constants' shapes (jax.eval_shape: traced, nothing runs); raises
  ValueError with the kernel's error. Cached by signature: a program's many similar ops trace once."""
  xs = [jax.ShapeDtypeStruct(tuple(CHECK_BATCH if d is None else d for d in t.shape), np.dtype(t.dtype))
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
  return ((None,) + shape[1:] if shape[:1] == (CHECK_BATCH,) else shape), dtype


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
  d, a, problems = _def(o), o.attrs, []
  missing = [n for n in d.kernel_attrs if n not in a]
  if missing:
    return [f"missing attr(s) {missing}"]
  if "in_bits" in d.kernel_attrs:
    b = a["in_bits"]
    if not (isinstance(b, (tuple, list)) and len(b) == len(o.inputs)
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 32 for x in b)):
      problems.append(f"attr in_bits {b!r} is not one width in [0, 32] per input ({len(o.inputs)})")
  if d.attr_problems is not None:
    problems += d.attr_problems(o, ins)
  return problems


def _check_operands(o: Op, ins: list | None, spec: TargetSpec, fail) -> tuple[bool, TensorFacts | None]:
  """The operands rule: (the constants and attrs are usable by the bound rules, the output's facts as the
  kernel computes them, None when it could not be traced)."""
  if not isinstance(o.kind, str) or o.kind not in OPS:
    if o.kind in spec.op_bits or o.kind in spec.layout_ops or o.kind in spec.host_ops:
      fail(o.name, "operands", f"the interpreter has no kernel for op kind {o.kind!r}; known: {sorted(OPS)}")
    return False, None
  need = _def(o).consts_for(len(o.inputs))
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
  if ins is None or not all(static_shape(t.shape) and t.shape[:1] == (None,) for t in ins):
    return True, None                            # graph / static-shape already failed upstream
  try:
    shape, dtype = kernel_output(o, ins)
  except ValueError as e:
    fail(o.name, "operands", f"the interpreter's {o.kind} kernel fails on inputs of shapes "
         f"{[t.shape for t in ins]}: {e}")
    return True, None
  declared = (tuple(o.shape), stored_dtype(o.bits, o.dtype))
  if static_shape(o.shape) and declared != (shape, dtype):
    fail(o.name, "operands", f"declares {declared[0]} {declared[1]}, but its kernel gives {shape} {dtype} from "
         f"inputs of shapes {[t.shape for t in ins]}: the shapes the bounds read would be wrong")
  shape_problems = _def(o).shape_problems
  for problem in shape_problems(o, ins) if shape_problems is not None else ():
    fail(o.name, "operands", problem)
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
    with _guard(name, "static-shape", fail):
      shape, dtype = value
      _check_shape(name, shape, fail)
      tensors[name] = TensorFacts(tuple(shape), str(np.dtype(dtype)), 0)
  rows, ops = [], {}
  for o in program.ops:
    before = len(violations)
    with _guard(getattr(o, "name", "?"), "graph", fail):
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


@dataclasses.dataclass
class OpUnderCheck:
  """One op as the rules see it, and what they find: the rules run in `OP_RULES` order, each reading what the
  earlier ones recorded (`ins` from graph, `consts_ok` / `out` from operands) and adding the row's numbers."""
  op: Op
  spec: TargetSpec
  tensors: dict                    # name -> TensorFacts of every earlier op and program input
  fail: Any
  in_bits: tuple = ()
  ins: list | None = None          # the inputs' facts, when every input is defined
  consts_ok: bool = False          # constants and attrs usable by the bound rules
  out: TensorFacts | None = None   # the output's facts as the kernel computes them
  bound: int | None = None
  mults: list = dataclasses.field(default_factory=list)
  shifts: list = dataclasses.field(default_factory=list)
  nbytes: int = -1

  def violation(self, rule: str, message: str) -> None:
    self.fail(self.op.name, rule, message)

  @property
  def acc_bits(self) -> int:
    return min(self.spec.accumulator_bits, 32)            # the integer kernels are int32 whatever the target

  @property
  def mult_limit(self) -> int:
    return min(2**(self.spec.multiplier_bits - 1) - 1, KERNEL_MULT_MAX)

  def requants(self):
    """(prefix, mult, shift, pre) of each requant triple, as int64 arrays."""
    for p in _requant_prefixes(self.op):
      yield (p, ints(self.op.consts[f"{p}mult"]), ints(self.op.consts[f"{p}shift"]),
             ints(self.op.consts.get(f"{p}pre", np.zeros((), np.int64))))


def rule_graph(c: OpUnderCheck) -> None:
  """Every input defined by an earlier op or a program input; no name defined twice."""
  missing = [i for i in c.op.inputs if i not in c.tensors]
  if missing:
    c.violation("graph", f"reads {missing}, which no earlier op or program input defines")
  else:
    c.ins = [c.tensors[i] for i in c.op.inputs]
  if c.op.name in c.tensors:
    c.violation("graph", f"defines {c.op.name!r} again: an earlier op or a program input has that name")


def rule_op_supported(c: OpUnderCheck) -> None:
  """The target computes this kind on chip, or it is a layout or host op."""
  o, spec = c.op, c.spec
  if not (o.kind in spec.op_bits or o.kind in spec.layout_ops or o.kind in spec.host_ops):
    c.violation("op-supported", f"op kind {o.kind!r} is not supported by target {spec.name!r} (compute: "
                f"{sorted(spec.op_bits)}, layout: {list(spec.layout_ops)}, host: {list(spec.host_ops)})")


def rule_scale(c: OpUnderCheck) -> None:
  """Code tensors have a finite positive scale; input widths match the producers'; float constants are scales."""
  o = c.op
  if o.bits and (o.scale is None or not math.isfinite(o.scale) or o.scale <= 0):
    c.violation("scale", f"int{o.bits} code tensor without a finite positive scale (scale={o.scale})")
  if not _def(o).glue and c.in_bits and c.ins is not None:
    got = tuple(t.bits for t in c.ins)
    if c.in_bits != got:
      c.violation("scale", f"expects input widths {c.in_bits}, its producers give {got}")
  for k in FLOAT_CONSTS:
    v = np.asarray(o.consts.get(k, 1.0))
    if v.dtype.kind == "f" and not (v.size and np.all(np.isfinite(v)) and np.all(v > 0)):
      c.violation("scale", f"stored {k} {v.ravel()[:4].tolist()} is not a finite positive float32 scale")


def rule_static_shape(c: OpUnderCheck) -> None:
  _check_shape(c.op.name, c.op.shape, c.fail)


def rule_operands(c: OpUnderCheck) -> None:
  """Constants and attrs the kernel reads are there and typed; the kernel gives the declared shape."""
  c.consts_ok, c.out = _check_operands(c.op, c.ins, c.spec, c.fail)


def rule_op_bits(c: OpUnderCheck) -> None:
  """Output and input code widths the target computes; dense weights within the target's (and the kernel's
  int8) weight range."""
  o, spec = c.op, c.spec
  if o.kind in spec.op_bits and o.bits not in spec.op_bits[o.kind]:
    c.violation("op-bits", f"{o.kind} with int{o.bits} output; target {spec.name!r} allows "
                + "/".join(f"int{b}" for b in spec.op_bits[o.kind]) + f" for {o.kind}")
  if not _def(o).glue:
    wide = [b for b in c.in_bits if b and b not in (8, 16)]
    if wide:
      c.violation("op-bits", f"code inputs of {wide} bits; the target reads int8/int16 codes")
  weights = _def(o).weights if c.consts_ok else None
  if weights is not None:
    w = ints(o.consts[weights])
    lim = min(2**(spec.weight_bits - 1) - 1, 127)            # the kernels narrow weights to int8
    if np.asarray(o.consts[weights]).dtype.itemsize * 8 > spec.weight_bits or absmax(w) > lim:
      c.violation("op-bits", f"weights {o.consts[weights].dtype} with max |{weights}| {absmax(w)}; the target "
                  f"takes int{spec.weight_bits} weights in [-{lim}, {lim}] (the {o.kind} kernel reads int8)")


def rule_accumulator(c: OpUnderCheck) -> None:
  """Every int32 intermediate of the kernel bounded for any input in range (the op table's `bounds`, from its stored
  constants and its inputs' facts)."""
  if not (c.consts_ok and c.ins is not None and _def(c.op).bounds is not None):
    return
  acc_limit = 2**(c.acc_bits - 1) - 1
  try:
    bounds = _def(c.op).bounds(c.op, c.ins)
  except Unbounded as e:
    c.violation("accumulator", str(e))
    return
  c.bound = max(bounds.values())
  over = sorted(((v, n) for n, v in bounds.items() if v > acc_limit), reverse=True)
  if over:
    c.violation("accumulator", "; ".join(f"int{c.acc_bits} {n} can reach {v} (2^{math.log2(v):.2f})"
                                         for v, n in over[:3]) + f" > {acc_limit} for inputs in range")


def rule_multiplier(c: OpUnderCheck) -> None:
  """Requant multipliers in [0, limit]; add's operand multipliers <= limit or a power of two (a shift)."""
  if not (c.consts_ok and c.ins is not None):
    return
  o, spec, limit = c.op, c.spec, c.mult_limit
  why = f"{spec.multiplier_bits}-bit signed" if 2**(spec.multiplier_bits - 1) - 1 <= KERNEL_MULT_MAX else \
      f"mul_shift's 16-bit limbs, although the target allows {spec.multiplier_bits}-bit"
  for p, m, _, _ in c.requants():
    c.mults += [int(m.min()), int(m.max())]
    if m.min() < 0 or m.max() > limit:
      bad = int(m.max()) if m.max() > limit else int(m.min())
      c.violation("multiplier", f"requant multiplier {p}mult = {bad} is outside [0, {limit}] ({why})")
  for n in _def(o).operand_multipliers:
    v = absmax(o.consts[n])
    pow2_shift = v > 0 and v & (v - 1) == 0 and v.bit_length() - 1 <= spec.max_shift
    if v > limit and not pow2_shift:
      c.violation("multiplier", f"operand multiplier {n} = {v} is neither <= {limit} nor a power of two "
                  "(a left shift)")
    if not pow2_shift or v <= limit:
      c.mults += [v]


def rule_shift(c: OpUnderCheck) -> None:
  """Requant shifts, per-row shifts included, and pre-shifts within [0, max_shift]."""
  if not (c.consts_ok and c.ins is not None):
    return
  max_shift, row_shift = c.spec.max_shift, _def(c.op).row_shift
  for p, _, s, pre in c.requants():
    lo_row, hi_row = (0, 0) if row_shift is None else row_shift(c.op, p, c.ins)
    c.shifts += [int(s.min()) + lo_row, int(s.max()) + hi_row]
    if s.min() + lo_row < 0 or s.max() + hi_row > max_shift:
      c.violation("shift", f"requant {p}shift in [{int(s.min())}, {int(s.max())}]"
                  + (f" plus a per-row shift in [{lo_row}, {hi_row}]" if hi_row or lo_row else "")
                  + f" leaves [0, {max_shift}]")
    if pre.min() < 0 or pre.max() > max_shift:
      c.violation("shift", f"requant pre-shift {p}pre in [{int(pre.min())}, {int(pre.max())}] leaves "
                  f"[0, {max_shift}]")


def rule_lut(c: OpUnderCheck) -> None:
  """The kernel's tables fit the target's LUTs."""
  spec = c.spec
  for table in _def(c.op).luts:
    t = np.asarray(getattr(A, table))
    if t.size > spec.max_lut_entries or t.min() < 0 or int(t.max()).bit_length() > spec.lut_entry_bits:
      c.violation("lut", f"{table} has {t.size} entries in [{int(t.min())}, {int(t.max())}]; the target "
                  f"holds {spec.max_lut_entries} unsigned {spec.lut_entry_bits}-bit entries")


def rule_tensor_size(c: OpUnderCheck) -> None:
  """The output at the target's batch fits its largest tensor."""
  o, spec = c.op, c.spec
  c.nbytes = tensor_bytes(o.shape, o.bits, o.dtype, spec.check_batch) if static_shape(o.shape) else -1
  if c.nbytes > spec.max_tensor_bytes:
    c.violation("tensor-size", f"output {c.nbytes} bytes at batch {spec.check_batch} > max_tensor_bytes "
                f"{spec.max_tensor_bytes}")


# The rules in the order they run on each op, named as in the report (an exception inside one is that rule's
# violation). operands runs before the rules that read the constants.
OP_RULES = (("graph", rule_graph), ("op-supported", rule_op_supported), ("scale", rule_scale),
            ("static-shape", rule_static_shape), ("operands", rule_operands), ("op-bits", rule_op_bits),
            ("accumulator", rule_accumulator), ("multiplier", rule_multiplier), ("shift", rule_shift),
            ("lut", rule_lut), ("tensor-size", rule_tensor_size))
RULES = tuple(rule for rule, _ in OP_RULES)


def _check_op(o: Op, tensors: dict, spec: TargetSpec, fail) -> LayerRow:
  """Every rule on one op; records its output's facts in `tensors`."""
  in_bits = o.attrs.get("in_bits", ()) if isinstance(o.attrs, dict) else ()
  c = OpUnderCheck(o, spec, tensors, fail, tuple(in_bits) if isinstance(in_bits, (tuple, list)) else ())
  for rule, check in OP_RULES:
    with _guard(o.name, rule, fail):
      check(c)
  if o.name not in tensors:
    tensors[o.name] = c.out or TensorFacts(tuple(o.shape), stored_dtype(o.bits, o.dtype), o.bits)
  return LayerRow(o.name, o.kind, c.in_bits, o.bits, c.bound, (min(c.mults), max(c.mults)) if c.mults else None,
                  (min(c.shifts), max(c.shifts)) if c.shifts else None, c.nbytes, [])


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


def run(config, workdir: str, program: Program | None = None, quiet: bool = False, table: bool = True) -> int:
  """bin/model_checker.py: check the workdir's int program against config.target, print the report (`table`=False:
  only its summary and verdict lines); 0 when it fits, else 1."""
  if program is None:
    program = load_program(workdir)
  report = check_program(program, TargetSpec.from_config(config.target))
  if not quiet:
    text = format_report(report)
    print(text if table else "\n".join(text.splitlines()[-2:]))
  return 0 if report.ok else 1

