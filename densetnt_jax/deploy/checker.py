"""Model checker: does an integer program fit a deployment target (`config.target`)?

Rules (each violation names the layer and the rule; `check_program` collects them all):
  graph           every op input is a program input or an earlier op; every output role names a tensor
  op-supported    the op kind is an on-chip compute kind of the target (`op_bits`), a layout op or a host op
  op-bits         the output code width is one the target allows for that kind; dense weights fit
                  `weight_bits`; code inputs are int8/int16
  scale           every code tensor (bits > 0) has a finite positive scale; consumers see the producer's width
  static-shape    every tensor's shape is static: None (the batch) on axis 0 only, positive ints elsewhere
  accumulator     no int32 intermediate can overflow for ANY input codes in range (bounds below)
  multiplier      requant multipliers in [0, 2^(multiplier_bits-1) - 1]; add's operand multipliers likewise or
                  a power of two (a left shift)
  shift           requant shifts and pre-shifts, plus the per-row shift a kernel adds, in [0, max_shift]
  lut             the exp / reciprocal / rsqrt tables an op reads fit max_lut_entries and lut_entry_bits
  tensor-size     the output tensor at check_batch fits max_tensor_bytes

Accumulator bounds (exact integers from the program's own constants, input codes anywhere in their range;
|x| <= 2^(b-1) for a b-bit code):
  dense       max over channels n of sum_k |w_q[k, n]| * 2^(bx-1) + |b_q[n]|   (the int32 x.w + b)
  matmul      K * 2^(ba-1-ka) * 2^(bb-1-kb)        (after the kernel's rounding pre-shifts ka, kb)
  add         2^(bx-1) |mx| + 2^(by-1) |my|;  mask_add: 2^(bx-1) |mx| + 100 |my| (the -100 mask code)
  layernorm   max of C x - sum x: 2 (C-1) 2^(b-1); (z g) >> 4 + beta: 2^15 max|g_q| / 16 + max|b_q|;
              d r <= 2^15 max(RSQRT_TABLE)
  softmax     max of the exp sum N * max(EXP_TABLE) and e r <= max(EXP_TABLE) * max(RECIP_TABLE)
  dense_grid(_mask)  the lattice point (L_max + R) * step and x + step // 2 (arith.grid_acc_bound)
Requantization itself (`arith.mul_shift`) is exact for any int32 input (16-bit limbs), so it has no bound
of its own; relu, masked max / fill, concat and the layout ops do no arithmetic wider than their codes. The
int16 x int8 dots run as three int8 dots whose int32 sum wraps back to the exact value: the bound checked is
the mathematical sum, as on a target with a native int16 MAC.
Per-row shifts: softmax adds k = bitlen(exp sum) - 15 in [0, bitlen(N max(EXP_TABLE)) - 15]; layernorm's z
requant adds k + h in [-7, 16] (rsqrt exponent and square shift).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from densetnt_jax.quant import arith as A
from densetnt_jax.quant.program import GLUE, Op, Program

RULES = ("graph", "op-supported", "op-bits", "scale", "static-shape", "accumulator", "multiplier", "shift", "lut",
         "tensor-size")
LUTS_BY_KIND = {"softmax": ("EXP_TABLE", "RECIP_TABLE"), "layernorm": ("RSQRT_TABLE",)}
ACCUMULATOR_KINDS = ("dense", "matmul", "add", "mask_add", "layernorm", "softmax", "dense_grid", "dense_grid_mask")


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
  return int(np.prod([batch if d is None else d for d in shape], dtype=np.int64)) * element_bytes(bits, dtype)


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


# --------------------------------------------------------------------------------------------- bounds
def _code_max(bits: int) -> int:
  """Largest |code| of a signed b-bit code (the negative end): 2^(b-1)."""
  return 2**(bits - 1)


def accumulator_bound(o: Op) -> int | None:
  """Largest |int32 intermediate| of one op for any input codes in range, from its constants (module doc)."""
  c, a = o.consts, o.attrs
  if o.kind == "dense":
    w = np.abs(c["w_q"].astype(np.int64))
    b = np.abs(np.broadcast_to(c["b_q"], (w.shape[1],)).astype(np.int64))
    return int(np.max(w.sum(axis=0) * _code_max(a["in_bits"][0]) + b))
  if o.kind == "matmul":
    k, (ba, bb) = a["k"], a["in_bits"]
    ka, kb = A.matmul_pre_shifts(k, ba, bb)
    return k * 2**(ba - 1 - ka) * 2**(bb - 1 - kb)
  if o.kind in ("add", "mask_add"):
    mx, my = (int(np.max(np.abs(c[n].astype(np.int64)))) for n in ("mx", "my"))
    y_max = -A.MASK_NEG_Q if o.kind == "mask_add" else _code_max(a["in_bits"][1])
    return _code_max(a["in_bits"][0]) * mx + y_max * my
  if o.kind == "layernorm":
    ch = o.shape[-1]
    centred = 2 * (ch - 1) * _code_max(a["in_bits"][0])
    affine = 2**15 * int(np.max(np.abs(c["g_q"].astype(np.int64)))) // 2**A.LN_PRE_SHIFT \
        + int(np.max(np.abs(c["b_q"].astype(np.int64))))
    return max(centred, affine, 2**15 * int(np.max(A.RSQRT_TABLE)))
  if o.kind == "softmax":
    n = o.shape[-1]
    e_max = int(np.max(A.EXP_TABLE))
    return max(n * e_max, e_max * int(np.max(A.RECIP_TABLE)))
  if o.kind in ("dense_grid", "dense_grid_mask"):
    step = int(np.max(c["step"]))
    if step < 1:
      return 2**63                                 # a zero lattice step divides by zero: never fits
    return A.grid_acc_bound(step, int(a["radius"]), a["in_bits"][0])
  return None


def _requant_prefixes(o: Op) -> list[str]:
  """Prefixes of the op's requant triples ({p}mult, {p}shift, {p}pre): '', 'z_', 't_', '0_', '1_', ..."""
  return sorted(k[:-4] for k in o.consts if k.endswith("mult"))


def _row_shift(o: Op, prefix: str) -> tuple[int, int]:
  """(min, max) shift the kernel adds per row to this requant's static shift."""
  if o.kind == "softmax" and prefix == "":
    return 0, max(0, (o.shape[-1] * int(np.max(A.EXP_TABLE))).bit_length() - 15)
  if o.kind == "layernorm" and prefix == "z_":
    return -7, 16
  return 0, 0


# --------------------------------------------------------------------------------------------- check
def check_program(program: Program, spec: TargetSpec) -> CheckReport:
  """Every rule on every op; a violation per (layer, rule) with the numbers that broke it."""
  violations: list[Violation] = []
  acc_limit = 2**(spec.accumulator_bits - 1) - 1
  mult_limit = 2**(spec.multiplier_bits - 1) - 1
  bits_of = {}
  known = set()

  def fail(layer: str, rule: str, message: str) -> None:
    violations.append(Violation(layer, rule, message))

  for name, (shape, _) in program.inputs.items():
    known.add(name)
    bits_of[name] = 0
    _check_shape(name, shape, fail)

  rows = []
  for o in program.ops:
    before = len(violations)
    # graph
    missing = [i for i in o.inputs if i not in known]
    if missing:
      fail(o.name, "graph", f"reads {missing}, which no earlier op or program input defines")
    # op-supported / op-bits
    on_chip = o.kind in spec.op_bits
    if not (on_chip or o.kind in spec.layout_ops or o.kind in spec.host_ops):
      fail(o.name, "op-supported", f"op kind {o.kind!r} is not supported by target {spec.name!r} (compute: "
           f"{sorted(spec.op_bits)}, layout: {list(spec.layout_ops)}, host: {list(spec.host_ops)})")
    if on_chip and o.bits not in spec.op_bits[o.kind]:
      fail(o.name, "op-bits", f"{o.kind} with int{o.bits} output; target {spec.name!r} allows "
           + "/".join(f"int{b}" for b in spec.op_bits[o.kind]) + f" for {o.kind}")
    if o.kind not in GLUE:
      wide = [b for b in o.attrs.get("in_bits", ()) if b and b not in (8, 16)]
      if wide:
        fail(o.name, "op-bits", f"code inputs of {wide} bits; the target reads int8/int16 codes")
    if o.kind == "dense":
      w = o.consts["w_q"]
      lim = 2**(spec.weight_bits - 1) - 1
      if w.dtype.itemsize * 8 > spec.weight_bits or int(np.max(np.abs(w.astype(np.int64)))) > lim:
        fail(o.name, "op-bits", f"weights {w.dtype} with max |w_q| {int(np.max(np.abs(w.astype(np.int64))))}; "
             f"the target takes int{spec.weight_bits} weights in [-{lim}, {lim}]")
    # scale
    if o.bits:
      if o.scale is None or not math.isfinite(o.scale) or o.scale <= 0:
        fail(o.name, "scale", f"int{o.bits} code tensor without a finite positive scale (scale={o.scale})")
    if o.kind not in GLUE and "in_bits" in o.attrs:
      got = tuple(bits_of.get(i, 0) for i in o.inputs)
      if tuple(o.attrs["in_bits"]) != got:
        fail(o.name, "scale", f"expects input widths {tuple(o.attrs['in_bits'])}, its producers give {got}")
    # static-shape
    _check_shape(o.name, o.shape, fail)
    # accumulator
    bound = accumulator_bound(o) if o.kind in ACCUMULATOR_KINDS else None
    if bound is not None and bound > acc_limit:
      fail(o.name, "accumulator", f"int{spec.accumulator_bits} accumulator can reach {bound} "
           f"(2^{math.log2(bound):.2f}) > {acc_limit} for inputs in range")
    # multiplier / shift
    mults, shifts = [], []
    for p in _requant_prefixes(o):
      m = o.consts[f"{p}mult"].astype(np.int64)
      s = o.consts[f"{p}shift"].astype(np.int64)
      pre = o.consts.get(f"{p}pre", np.zeros((), np.int64)).astype(np.int64)
      lo_row, hi_row = _row_shift(o, p)
      mults += [int(m.min()), int(m.max())]
      shifts += [int(s.min()) + lo_row, int(s.max()) + hi_row]
      if m.min() < 0 or m.max() > mult_limit:
        bad = int(m.max()) if m.max() > mult_limit else int(m.min())
        fail(o.name, "multiplier", f"requant multiplier {p}mult = {bad} is outside [0, {mult_limit}] "
             f"({spec.multiplier_bits}-bit signed)")
      if s.min() + lo_row < 0 or s.max() + hi_row > spec.max_shift:
        fail(o.name, "shift", f"requant {p}shift in [{int(s.min())}, {int(s.max())}]"
             + (f" plus a per-row shift in [{lo_row}, {hi_row}]" if hi_row or lo_row else "")
             + f" leaves [0, {spec.max_shift}]")
      if pre.min() < 0 or pre.max() > spec.max_shift:
        fail(o.name, "shift", f"requant pre-shift {p}pre in [{int(pre.min())}, {int(pre.max())}] leaves "
             f"[0, {spec.max_shift}]")
    if o.kind in ("add", "mask_add"):
      for n in ("mx", "my"):
        v = int(np.max(np.abs(o.consts[n].astype(np.int64))))
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
    nbytes = tensor_bytes(o.shape, o.bits, o.dtype, spec.check_batch) if _static(o.shape) else -1
    if nbytes > spec.max_tensor_bytes:
      fail(o.name, "tensor-size", f"output {nbytes} bytes at batch {spec.check_batch} > max_tensor_bytes "
           f"{spec.max_tensor_bytes}")
    known.add(o.name)
    bits_of[o.name] = o.bits
    rows.append(LayerRow(o.name, o.kind, tuple(o.attrs.get("in_bits", ())), o.bits, bound,
                         (min(mults), max(mults)) if mults else None,
                         (min(shifts), max(shifts)) if shifts else None, nbytes,
                         sorted({v.rule for v in violations[before:]})))

  for role, name in program.outputs.items():
    if name not in known:
      violations.append(Violation(name, "graph", f"output {role!r} names {name!r}, which no op defines"))
  return CheckReport(spec, rows, violations)


def _static(shape) -> bool:
  return all(isinstance(d, int) and d > 0 for d in shape[1:])


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
    from densetnt_jax.train.stages import load_program
    program = load_program(workdir)
  report = check_program(program, TargetSpec.from_config(config.target))
  if not quiet:
    print(format_report(report))
  return 0 if report.ok else 1

