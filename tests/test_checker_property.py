"""Checker soundness (issue 10): random single-op programs within the rules never overflow an int32 intermediate
in the interpreter when the checker passes them, and programs built to overflow are always caught.

A program is `inputs/<x>` (float codes) -> quantize at scale 1 (the float is the code) -> the op under test. The
interpreter runs it (`interpreter._step` per op, general kernel paths, one jit per program shape) on worst-case
codes: all -max, all +max, alternating, the signs that drive each dense channel to its extreme, spikes and
random codes. `Shadow` redoes each kernel's integer math in int64 numpy and records the largest |value| of
every intermediate; its outputs must equal the interpreter's bit for bit (so it is the same math), and then
no intermediate may leave int32 and none may exceed the checker's reported bound.
"""
import copy

import jax
import numpy as np
import pytest

from densetnt_jax.deploy import checker
from densetnt_jax.quant import arith as A
from densetnt_jax.quant import interpreter
from densetnt_jax.quant.program import Op, Program

INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def spec():
  from conftest import load_config
  return checker.TargetSpec.from_config(load_config("tiny").target)


# ------------------------------------------------------------------------------------------ programs
def _quantize(name: str, shape: tuple, bits: int) -> Op:
  """`inputs/<name>` float codes -> int codes at scale 1 (quantize(x, 1) = x for integer x in range)."""
  return Op(f"q/{name}", "quantize", (f"inputs/{name}", f"inputs/{name}_valid"), (None,) + shape, "float32", bits,
            1.0, {"in_bits": (0, 0)}, {"scale": np.asarray(1.0, np.float32)})


def _program(code_inputs: dict, op: Op, masks: dict | None = None) -> Program:
  """{name: (shape, bits)} quantized code inputs and {name: shape} bool inputs feeding `op`."""
  inputs, ops = {}, []
  for name, (shape, bits) in code_inputs.items():
    inputs[f"inputs/{name}"] = ((None,) + shape, "float32")
    inputs[f"inputs/{name}_valid"] = ((None,) + shape, "bool")
    ops.append(_quantize(name, shape, bits))
  for name, shape in (masks or {}).items():
    inputs[f"inputs/{name}"] = ((None,) + shape, "bool")
  return Program(inputs, ops + [op], {}, {})


def _requant(rng, prefix: str = "", shape: tuple = ()) -> dict:
  """A random requant triple in the rules: multiplier in [2^14, 2^15), shift in [8, 30], no pre-shift."""
  return {f"{prefix}mult": rng.integers(2**14, 2**15, shape).astype(np.int32),
          f"{prefix}shift": rng.integers(8, 31, shape).astype(np.int32),
          f"{prefix}pre": np.zeros(shape, np.int32)}


def _loguniform(rng, lo: float, hi: float) -> int:
  return int(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def dense_program(rng, k: int, n: int, x_bits: int, edge: str = "random") -> Program:
  """Weights of a random magnitude; each bias at, just inside or just past the room the weights leave."""
  w_max = int(rng.integers(1, 128))
  w = rng.integers(-w_max, w_max + 1, (k, n))
  room = INT32_MAX - np.abs(w).sum(axis=0) * 2**(x_bits - 1)
  if edge == "random":
    edge = rng.choice(["inside", "edge", "past", "small"])
  b = {"inside": room - rng.integers(1, 2**20, n), "edge": room, "past": room + 1,
       "small": rng.integers(-2**20, 2**20, n)}[edge]
  b = np.clip(b, -2**31, INT32_MAX) * rng.choice([-1, 1], n)
  op = Op("op", "dense", ("q/x",), (None, n), "float32", 16, 0.5, {"in_bits": (x_bits,)},
          {"w_q": w.astype(np.int8), "b_q": b.astype(np.int32), **_requant(rng, "", (n,))})
  return _program({"x": ((k,), x_bits)}, op)


def matmul_program(rng, k: int, a_bits: int, b_bits: int, transpose_b: bool) -> Program:
  m, n = 3, 2
  b_shape = (n, k) if transpose_b else (k, n)
  op = Op("op", "matmul", ("q/a", "q/b"), (None, m, n), "float32", 16, 0.5,
          {"transpose_b": transpose_b, "alpha": 1.0, "k": k, "in_bits": (a_bits, b_bits)}, _requant(rng))
  return _program({"a": ((m, k), a_bits), "b": (b_shape, b_bits)}, op)


def add_program(rng, x_bits: int, y_bits: int, mask: bool = False) -> Program:
  """Operand multipliers: one a power-of-two shift (from 5 bits short of what its operand leaves to 2 bits
  past it), the other <= 32767 (random)."""
  q = int(rng.integers(1, 2**15))
  if rng.random() < 0.5:
    mx, my = 2**int(rng.integers(28 - x_bits, 34 - x_bits)), q
  else:
    mx, my = q, 2**int(rng.integers(28 - (7 if mask else y_bits), 34 - (7 if mask else y_bits)))
  c = {"mx": np.asarray(mx, np.int32), "my": np.asarray(my, np.int32), **_requant(rng)}
  if mask:
    op = Op("op", "mask_add", ("q/x", "inputs/mask"), (None, 6), "float32", 16, 0.5, {"in_bits": (x_bits, 0)}, c)
    return _program({"x": ((6,), x_bits)}, op, {"mask": (6,)})
  op = Op("op", "add", ("q/x", "q/y"), (None, 6), "float32", 16, 0.5, {"in_bits": (x_bits, y_bits)}, c)
  return _program({"x": ((6,), x_bits), "y": ((6,), y_bits)}, op)


def layernorm_program(rng, ch: int, x_bits: int, g_q=None, b_q=None, eps_m=None, eps_e=None) -> Program:
  """Constants from `layernorm_params` at random scales and gammas (eps from 1e-12 to 1e3), or the given ones."""
  gamma = rng.standard_normal(ch).astype(np.float32) * np.float32(rng.uniform(0.01, 10.0))
  beta = rng.standard_normal(ch).astype(np.float32) * np.float32(10.0**rng.uniform(-3, 9))
  s_x, s_y = (np.float32(10.0**rng.uniform(-5, 1)) for _ in range(2))
  p = A.layernorm_params(gamma, beta, s_x, s_y, x_bits, float(10.0**rng.uniform(-12, 3)), 16)
  c = {"eps_m": np.asarray(p.eps_m if eps_m is None else eps_m, np.int32),
       "eps_e": np.asarray(p.eps_e if eps_e is None else eps_e, np.int32),
       "z_mult": np.asarray(p.rq_z.multiplier), "z_shift": np.asarray(p.rq_z.shift),
       "z_pre": np.asarray(p.rq_z.pre_shift), **_requant(rng),
       "g_q": np.asarray(p.g_q, np.int16) if g_q is None else g_q,
       "b_q": np.asarray(p.b_q, np.int32) if b_q is None else np.asarray(b_q, np.int32)}
  op = Op("op", "layernorm", ("q/x",), (None, ch), "float32", 16, 0.5, {"eps": 1e-5, "in_bits": (x_bits,)}, c)
  return _program({"x": ((ch,), x_bits)}, op)


def softmax_program(rng, n: int, x_bits: int, declared_n: int | None = None) -> Program:
  p = A.softmax_params(np.float32(10.0**rng.uniform(-4, 0)), np.float32(1 / 255))
  c = {"t_mult": np.asarray(p.rq_t.multiplier), "t_shift": np.asarray(p.rq_t.shift),
       "t_pre": np.asarray(p.rq_t.pre_shift), "mult": np.asarray(p.rq_y.multiplier),
       "shift": np.asarray(p.rq_y.shift), "pre": np.asarray(p.rq_y.pre_shift)}
  op = Op("op", "softmax", ("q/x",), (None, declared_n or n), "float32", 8, 1 / 255, {"in_bits": (x_bits,)}, c)
  return _program({"x": ((n,), x_bits)}, op)


def grid_program(rng, bits: int, step: int | None = None, radius: int = 2, seeds: int = 4) -> Program:
  """dense_grid and dense_grid_mask around `seeds` code pairs, one lattice step (random: half of them from 1 to
  2^(bits+2), half from 2^27 to 2^31 - 1, where the lattice points leave int32)."""
  if step is None:
    step = _loguniform(rng, 1, 2**(bits + 2)) if rng.random() < 0.5 else int(rng.integers(2**27, INT32_MAX))
  d = (2 * radius + 1)**2
  c = {"step": np.asarray(step, np.int32)}
  attrs = {"spacing": 1.0, "radius": radius, "in_bits": (bits,)}
  grid = Op("grid", "dense_grid", ("q/x",), (None, seeds * d, 2), "float32", bits, 1.0, attrs, c)
  mask = Op("op", "dense_grid_mask", ("q/x", "inputs/seed_valid"), (None, seeds * d), "bool", 0, None,
            {**attrs, "in_bits": (bits, 0)}, dict(c))
  prog = _program({"x": ((seeds, 2), bits)}, grid, {"seed_valid": (seeds,)})
  prog.ops.append(mask)
  return prog


# ------------------------------------------------------------------------------------------- inputs
def worst_codes(shape: tuple, bits: int, rng, channel_signs: np.ndarray | None = None) -> np.ndarray:
  """(B, *shape) codes: all -max, all +max, alternating both ways, one spike, a constant row; then for each
  column of `channel_signs` (K, N) the codes driving that channel's x.w down and up; then 4 random rows."""
  lo, hi = A.qrange(bits)
  size = int(np.prod(shape))
  alt = np.where(np.arange(size) % 2 == 0, lo, hi)
  spike = np.full(size, hi)
  spike[size // 2] = lo
  rows = [np.full(size, lo), np.full(size, hi), alt, lo + hi - alt, spike, np.full(size, 7)]
  if channel_signs is not None:
    for s in channel_signs.T:
      rows += [np.where(s > 0, lo, hi), np.where(s > 0, hi, lo)]
  rows += [rng.integers(lo, hi + 1, size) for _ in range(4)]
  return np.stack(rows).reshape((-1,) + shape)


def program_inputs(program: Program, rng) -> dict:
  """Worst-case float codes for every quantized input (all valid) and random masks (a seed mask's first seed
  always valid)."""
  out = {}
  op = program.ops[-1]
  signs = np.sign(op.consts["w_q"].astype(np.int64)) if op.kind == "dense" else None
  codes = {o.inputs[0]: o for o in program.ops if o.kind == "quantize"}
  batch = None
  for name, o in codes.items():
    x = worst_codes(o.shape[1:], o.bits, rng, signs)
    batch = x.shape[0] if batch is None else min(batch, x.shape[0])
    out[name.split("/", 1)[1]] = x
  out = {k: v[:batch].astype(np.float32) for k, v in out.items()}
  for name, (shape, dtype) in program.inputs.items():
    field = name.split("/", 1)[1]
    if field.endswith("_valid") and field[:-6] in out:
      out[field] = np.ones((batch,) + shape[1:], bool)
    elif dtype == "bool":
      m = rng.random((batch,) + shape[1:]) < 0.7
      m[..., 0] = True
      out[field] = m
  return out


_RUNNERS: dict = {}


def run_interpreter(program: Program, inputs: dict) -> dict:
  """{tensor: array} of every op, by the interpreter's per-op step (narrow codes in, kernel, narrow out) in
  one jit per program shape, constants as arguments (general kernel paths: no requant hints)."""
  key = interpreter._structure(program)
  fn = _RUNNERS.get(key)
  if fn is None:
    ops = list(program.ops)

    def run(consts, xs):
      env = dict(xs)
      for o in ops:
        env[o.name] = interpreter._step(o, consts[o.name], [env[i] for i in o.inputs], None)
      return {o.name: env[o.name] for o in ops}
    fn = _RUNNERS[key] = jax.jit(run)
  xs = {n: inputs[n.split("/", 1)[1]] for n in program.inputs}
  return {k: np.asarray(v) for k, v in fn({o.name: dict(o.consts) for o in program.ops}, xs).items()}


# -------------------------------------------------------------------------------------------- shadow
def bit_length(v: np.ndarray) -> np.ndarray:
  """Bits of non-negative ints below 2^53 (frexp's exponent: exact)."""
  return np.frexp(np.asarray(v, np.float64))[1].astype(np.int64)


def rshift_round(v, k) -> np.ndarray:
  v, k = np.asarray(v, np.int64), np.minimum(np.asarray(k, np.int64), 62)
  return np.where(k > 0, (v >> np.maximum(k, 0)) + ((v >> np.maximum(k - 1, 0)) & 1), v)


class Shadow:
  """The integer kernels of `arith` in int64 numpy, step for step; `peak[name]`: the largest |value| an
  intermediate reached. Names starting with "requant" are `mul_shift`'s 16-bit limbs (bounded by the multiplier
  rule, not part of the checker's accumulator bound)."""

  def __init__(self):
    self.peak: dict[str, int] = {}

  def see(self, name: str, v) -> np.ndarray:
    v = np.asarray(v, np.int64)
    self.peak[name] = max(self.peak.get(name, 0), int(np.max(np.abs(v), initial=0)))
    return v

  def mul_shift(self, v, m, s) -> np.ndarray:
    v, m, s = (np.asarray(a, np.int64) for a in (v, m, s))
    lm = self.see("requant limbs", (v & 0xFFFF) * m)
    self.see("requant limbs", (v >> 16) * m + (lm >> 16))
    p = v * m                                         # exact: the kernel's result wherever it is in int16
    res = np.where(s > 0, (p + (np.int64(1) << np.clip(s - 1, 0, 62))) >> np.clip(s, 0, 62), p)
    return np.where(s > A.MAX_SHIFT, 0, res)

  def requantize(self, v, c: dict, prefix: str, bits: int) -> np.ndarray:
    v = rshift_round(v, c[f"{prefix}pre"])
    lo, hi = A.qrange(bits)
    return np.clip(self.mul_shift(v, c[f"{prefix}mult"], c[f"{prefix}shift"]), lo, hi)

  def interp(self, name: str, table, u, frac_bits: int) -> np.ndarray:
    t = np.asarray(table, np.int64)
    i = np.clip(u >> frac_bits, 0, len(t) - 1)
    f = u & (2**frac_bits - 1)
    t0, t1 = t[i], t[np.minimum(i + 1, len(t) - 1)]
    return t0 + (self.see(name, (t1 - t0) * f + 2**(frac_bits - 1)) >> frac_bits)

  def run(self, program: Program, inputs: dict) -> dict:
    env = {}
    for o in program.ops:
      xs = [env[i] if i in env else np.asarray(inputs[i.split("/", 1)[1]]) for i in o.inputs]
      env[o.name] = getattr(self, o.kind)(o, {k: np.asarray(v) for k, v in o.consts.items()}, xs)
    return env

  # kernels (o, consts, inputs) -> output, as arith computes them
  def quantize(self, o, c, xs):
    lo, hi = A.qrange(o.bits)
    return np.clip(np.floor(np.where(xs[1], xs[0], 0) + 0.5), lo, hi).astype(np.int64)

  def dense(self, o, c, xs):
    acc = self.see("x.w + b", self.see("x.w + b", xs[0] @ c["w_q"].astype(np.int64)) + c["b_q"])
    return self.requantize(acc, c, "", o.bits)

  def matmul(self, o, c, xs):
    ka, kb = A.matmul_pre_shifts(xs[0].shape[-1], *o.attrs["in_bits"])
    a, b = rshift_round(xs[0], ka), rshift_round(xs[1], kb)
    acc = self.see("a.b", a @ (np.swapaxes(b, -1, -2) if o.attrs["transpose_b"] else b))
    return self.requantize(acc, c, "", o.bits)

  def add(self, o, c, xs):
    y = np.where(xs[1], 0, A.MASK_NEG_Q) if o.kind == "mask_add" else xs[1]
    acc = self.see("x mx + y my", self.see("x mx + y my", xs[0] * c["mx"]) + self.see("x mx + y my", y * c["my"]))
    return self.requantize(acc, c, "", o.bits)

  mask_add = add

  def layernorm(self, o, c, xs):
    x = xs[0]
    ch = x.shape[-1]
    big_d = self.see("centred", self.see("centred", x * ch) - self.see("centred", x.sum(-1, keepdims=True)))
    dmax = np.maximum(big_d.max(-1, keepdims=True), -big_d.min(-1, keepdims=True))
    kd = np.maximum(bit_length(dmax) - 15, 0)
    d = np.clip(rshift_round(big_d, kd), -2**15, 2**15 - 1)
    h = np.maximum(bit_length(np.minimum(rshift_round(dmax, kd), 2**15 - 1)) - 7, 0)
    sq = rshift_round(self.see("d^2", d * d), 2 * h)
    sh = self.see("eps shift", c["eps_e"] - 2 * (kd + h))
    self.see("eps shift", -sh)
    shifted = self.see("eps_m << shift", c["eps_m"].astype(np.int64) << np.clip(sh, 0, 15))
    eps_row = np.where(sh >= 16, 2**30, np.minimum(shifted, 2**30))
    eps_row = np.where(sh < 0, rshift_round(c["eps_m"], np.minimum(-sh, 31)), eps_row)
    v = np.maximum(self.see("sum of squares + eps", sq.sum(-1, keepdims=True) + eps_row), 1)
    k = (bit_length(v) - 14) >> 1
    m = np.where(k >= 0, rshift_round(v, 2 * np.maximum(k, 0)), v << (-2 * np.minimum(k, 0)))
    r = self.interp("rsqrt interpolation", A.RSQRT_TABLE, np.clip(m - 2**13, 0, 3 * 2**13), A.RSQRT_FRAC_BITS)
    z = np.clip(self.mul_shift(self.see("d r", d * r), c["z_mult"], c["z_shift"] + k + h), -2**15, 2**15 - 1)
    acc = self.see("(z g >> 4) + beta", rshift_round(self.see("z g", z * c["g_q"]), A.LN_PRE_SHIFT) + c["b_q"])
    return self.requantize(acc, c, "", o.bits)

  def softmax(self, o, c, xs):
    x = xs[0]
    d = np.minimum(self.see("x - max x", x - x.max(-1, keepdims=True)), 0)
    t = np.clip(self.mul_shift(d, c["t_mult"], c["t_shift"]), -2**15, 0)
    e = self.interp("exp interpolation", A.EXP_TABLE, t + 2**15, A.EXP_FRAC_BITS)
    s = self.see("exp sum", e.sum(-1, keepdims=True))
    k = np.maximum(bit_length(s) - 15, 0)
    r = self.interp("reciprocal interpolation", A.RECIP_TABLE, np.clip((s >> k) - 2**14, 0, 2**14),
                    A.RECIP_FRAC_BITS)
    return np.clip(self.mul_shift(self.see("e r", e * r), c["mult"], c["shift"] + k), 0, A.qrange(o.bits)[1])

  def _points(self, o, c, x):
    step, radius = c["step"].astype(np.int64), o.attrs["radius"]
    lat = np.floor_divide(self.see("x + step // 2", x + step // 2), step)
    pts = lat[..., :, None, :] + A.grid_offsets(radius).astype(np.int64)
    return lat, self.see("lattice point", pts.reshape(pts.shape[:-3] + (-1, 2)) * step)

  def dense_grid(self, o, c, xs):
    lo, hi = A.qrange(o.bits)
    return np.clip(self._points(o, c, xs[0])[1], lo, hi)

  def dense_grid_mask(self, o, c, xs):
    lo, hi = A.qrange(o.attrs["in_bits"][0])
    lat, pts = self._points(o, c, xs[0])
    inside = np.all((pts >= lo) & (pts <= hi), axis=-1)
    radius, valid = o.attrs["radius"], xs[1]
    m, w = lat.shape[-2], 2 * radius + 1
    d = self.see("seed differences", lat[..., :, None, :] - lat[..., None, :, :])
    near = np.abs(self.see("seed differences", d[..., None, :] + np.arange(-radius, radius + 1)[:, None])) <= radius
    covered = near[..., :, None, 0] & near[..., None, :, 1]
    earlier = np.tri(m, m, -1, dtype=bool) & valid[..., None, :]
    dup = np.any(covered & earlier[..., None, None], axis=-3)
    keep = valid[..., None] & ~dup.reshape(dup.shape[:-2] + (w * w,))
    return keep.reshape(keep.shape[:-2] + (-1,)) & inside


def shadow_peaks(program: Program, inputs: dict) -> tuple[dict, dict]:
  shadow = Shadow()
  return shadow.run(program, inputs), shadow.peak


# --------------------------------------------------------------------------------------------- tests
def _random_programs(rng) -> list:
  """(kind, program): every kind with wide arithmetic, shapes from a few per kind (one compile each), values
  drawn to land on both sides of the int32 limit where the kind can reach it."""
  out = []
  for _ in range(6):
    out += [("dense", dense_program(rng, 600, 4, 16)), ("dense", dense_program(rng, 48, 4, 8))]
    out += [("layernorm", layernorm_program(rng, 48, 8)), ("layernorm", layernorm_program(rng, 700, 16))]
    out += [("add", add_program(rng, 16, 8)), ("mask_add", add_program(rng, 16, 0, mask=True))]
    out += [("dense_grid", grid_program(rng, 16))]
  for _ in range(2):
    out += [("matmul", matmul_program(rng, 300, 16, 16, True)), ("softmax", softmax_program(rng, 300, 16))]
  return out


def test_programs_the_checker_passes_never_overflow_int32_in_the_interpreter(spec):
  rng = np.random.default_rng(10)
  passed, failed = {}, {}
  for kind, program in _random_programs(rng):
    report = checker.check_program(program, spec)
    if not report.ok:
      assert {v.rule for v in report.violations} <= {"accumulator", "multiplier"}, \
          "\n".join(map(str, report.violations))
      failed[kind] = failed.get(kind, 0) + 1
      continue
    passed[kind] = passed.get(kind, 0) + 1
    inputs = program_inputs(program, rng)
    expected, peaks = shadow_peaks(program, inputs)
    got = run_interpreter(program, inputs)
    for o in program.ops:                             # the shadow is the kernels' own math
      np.testing.assert_array_equal(got[o.name], expected[o.name], err_msg=f"{kind} {o.name}")
    assert max(peaks.values()) <= INT32_MAX, (kind, peaks)
    rows = {r.name: r for r in report.rows}
    bounded = max((v for n, v in peaks.items() if not n.startswith("requant")), default=0)
    bound = max(rows[o.name].acc_bound or 0 for o in program.ops)
    assert bounded <= bound, (kind, peaks, bound)     # the reported bound is a bound
  assert set(passed) == {"dense", "layernorm", "add", "mask_add", "dense_grid", "matmul", "softmax"}, passed
  assert {"dense", "add", "dense_grid"} <= set(failed), failed      # the draws reach past the limit too


def _wide_gamma(rng):
  return layernorm_program(rng, 48, 8, g_q=np.full(48, 2**17, np.int32))      # |z| <= sqrt(47) 2^12 here


def _long_row_huge_eps(rng):
  return layernorm_program(rng, 65790, 8, eps_m=2**15, eps_e=50)


def _huge_eps_m(rng):
  return layernorm_program(rng, 48, 8, eps_m=2**17, eps_e=15)


def _eps_e_at_int32_min(rng):
  return layernorm_program(rng, 48, 8, eps_e=-2**31 + 4)


def _big_beta(rng):
  return layernorm_program(rng, 48, 8, b_q=np.full(48, 2**31 - 2**20))


def _big_bias(rng):
  """One-signed weights: the all -128 row meets x.w = 48 * 127 * 128 and a bias one past the room left."""
  p = dense_program(rng, 48, 4, 8, edge="small")
  p.ops[-1].consts["w_q"] = np.full((48, 4), -127, np.int8)
  p.ops[-1].consts["b_q"] = np.full(4, INT32_MAX - 48 * 127 * 128 + 1, np.int32)
  return p


def _big_k(rng):
  p = dense_program(rng, 600, 4, 16, edge="small")
  p.ops[-1].consts["w_q"] = np.full((600, 4), 127, np.int8)
  return p


def _long_softmax(rng):
  return softmax_program(rng, 65540, 8)


def _softmax_shape_lies(rng):
  return softmax_program(rng, 65540, 8, declared_n=8)


def _big_shift_add(rng):
  p = add_program(rng, 16, 8)
  p.ops[-1].consts["mx"] = np.asarray(2**17, np.int32)
  return p


def _big_mask_multiplier(rng):
  p = add_program(rng, 16, 0, mask=True)
  p.ops[-1].consts["my"] = np.asarray(2**25, np.int32)
  return p


def _huge_grid_step(rng):
  return grid_program(rng, 16, step=2**30, radius=3)


WRAPS = {"layernorm-wide-gamma": (_wide_gamma, "z g"), "layernorm-long-row": (_long_row_huge_eps,
         "sum of squares + eps"), "layernorm-huge-eps-m": (_huge_eps_m, "eps_m << shift"),
         "layernorm-eps-e": (_eps_e_at_int32_min, "eps shift"), "layernorm-big-beta": (_big_beta,
         "(z g >> 4) + beta"), "dense-big-bias": (_big_bias, "x.w + b"), "dense-big-k": (_big_k, "x.w + b"),
         "softmax-long-row": (_long_softmax, "exp sum"), "softmax-declared-shape-lies": (_softmax_shape_lies,
         "exp sum"), "add-big-shift": (_big_shift_add, "x mx + y my"), "mask-add-big-multiplier":
         (_big_mask_multiplier, "x mx + y my"), "grid-huge-step": (_huge_grid_step, "lattice point")}


@pytest.mark.parametrize("case", sorted(WRAPS))
def test_programs_built_to_overflow_are_caught(spec, case):
  build, intermediate = WRAPS[case]
  program = build(np.random.default_rng(1))
  _, peaks = shadow_peaks(program, program_inputs(program, np.random.default_rng(2)))
  assert peaks[intermediate] > INT32_MAX, peaks                    # the int32 kernel really overflows here
  report = checker.check_program(program, spec)
  assert ("op", "accumulator") in report.rules_failed(), "\n".join(map(str, report.violations))
  line = next(str(v) for v in report.violations if v.layer == "op" and v.rule == "accumulator")
  assert line.startswith("FAIL layer=op rule=accumulator: ") and "\n" not in line


# ------------------------------------------------------------------------------------ malformed programs
def _merged(programs: list) -> Program:
  """One program holding each of `programs` under its own prefix."""
  inputs, ops = {}, []
  for i, p in enumerate(programs):
    rename = {n: f"inputs/p{i}_{n.split('/', 1)[1]}" for n in p.inputs}
    inputs.update({rename[n]: v for n, v in p.inputs.items()})
    for o in p.ops:
      rename[o.name] = f"p{i}/{o.name}"
      ops.append(Op(rename[o.name], o.kind, tuple(rename[x] for x in o.inputs), o.shape, o.dtype, o.bits, o.scale,
                    dict(o.attrs), dict(o.consts)))
  return Program(inputs, ops, {}, {})


def _mutations(program: Program, rng) -> list:
  """(what, program) pairs, each one op of `program` broken in one way a forged file could break it."""
  out = []
  for _ in range(40):
    p = copy.deepcopy(program)
    o = p.ops[int(rng.integers(len(p.ops)))]
    key = sorted(o.consts)[int(rng.integers(len(o.consts)))]
    how = ["delete", "float", "object", "string", "wide", "ragged", "empty", "attr", "shape"][int(rng.integers(9))]
    if how == "delete":
      del o.consts[key]
    elif how == "float":
      o.consts[key] = np.asarray(np.nan if key in checker.FLOAT_CONSTS else 0.5, np.float32)
    elif how == "object":
      o.consts[key] = np.asarray([None, 1], object)
    elif how == "string":
      o.consts[key] = np.asarray("abc")
    elif how == "wide":
      o.consts[key] = np.full(np.shape(o.consts[key]), 2**40, np.int64)
    elif how == "ragged":
      o.consts[key] = np.zeros((2, 5, 11), np.float32 if key in checker.FLOAT_CONSTS else np.int32)
    elif how == "empty":
      o.consts[key] = np.zeros((0,), np.float32 if key in checker.FLOAT_CONSTS else np.int32)
    elif how == "attr":
      key = "radius" if "radius" in o.attrs else "in_bits"
      o.attrs = {**o.attrs, key: ["not", {"a": "number"}]}
    else:
      o.shape = (None, -3, "x")
    out.append((f"{o.kind} {key} {how}", p))
  return out


def test_malformed_ops_are_violations_never_exceptions(spec):
  rng = np.random.default_rng(3)
  base = _merged([layernorm_program(rng, 48, 8), dense_program(rng, 48, 4, 8, edge="small"),
                  softmax_program(rng, 40, 16), grid_program(rng, 16, step=3), add_program(rng, 8, 0, mask=True),
                  matmul_program(rng, 64, 16, 8, True)])
  assert checker.check_program(base, spec).ok, checker.format_report(checker.check_program(base, spec))
  for what, broken in _mutations(base, rng):
    report = checker.check_program(broken, spec)                   # raises nothing
    assert not report.ok, what
    assert all(v.rule in checker.RULES and "\n" not in v.message and len(v.message) <= checker.MESSAGE_CHARS
               for v in report.violations), what
    assert "FAIL:" in checker.format_report(report).splitlines()[-1], what


def test_a_missing_constant_is_an_operands_violation(spec):
  program = dense_program(np.random.default_rng(4), 48, 4, 8)
  del program.ops[-1].consts["w_q"]
  report = checker.check_program(program, spec)
  assert report.rules_failed() == {("op", "operands")}, "\n".join(map(str, report.violations))
  assert "missing constant(s) ['w_q']" in report.violations[0].message


def test_dense_params_clips_the_bias_in_integers(spec):
  """A bias far past the room K = 48 int8 inputs leave lands exactly on 2^31 - 1 - 48 * 128 * 127 = 2146703359
  (clipped in float32 it became 2146703360: one past), and the checker passes the layer with its accumulator
  bound exactly 2^31 - 1. Under jit, as the converter and fake-quant call it."""
  w, one = np.ones((48, 2), np.float32), np.float32(1.0)
  room = INT32_MAX - A.dense_acc_bound(48, 8)
  params = jax.jit(lambda b: A.dense_params(w, b, one, one, 8))(np.float32([1e12, -1e12]))
  assert np.asarray(params.b_q).tolist() == [room, -room]
  rq = params.rq
  op = Op("op", "dense", ("q/x",), (None, 2), "float32", 16, 0.5, {"in_bits": (8,)},
          {"w_q": np.asarray(params.w_q, np.int8), "b_q": np.asarray(params.b_q), "mult": np.asarray(rq.multiplier),
           "shift": np.asarray(rq.shift), "pre": np.asarray(rq.pre_shift)})
  report = checker.check_program(_program({"x": ((48,), 8)}, op), spec)
  assert report.ok and report.rows[-1].acc_bound == INT32_MAX, checker.format_report(report)
