"""Runs an integer program: int32 arithmetic on int8/int16 codes from the input quantization to the goal
scores and the top-k goals' trajectories, dequantized at the very end, then the float model's own
postprocess (`postprocess.finish_prediction`: log-softmax'd scores, NMS, mode probabilities).

Every kernel is the `arith` function the fake-quant form runs, with the program's constants, so codes agree
with the fake-quant model bit for bit; integer ops are exact, so results do not depend on the batch size.
The float epilogue (log-softmax of the dequantized scores, NMS) matches a jitted fake-quant predict bit for
bit too; against an eager (unjitted) apply the log-probs may differ by an ulp (measured 7.6e-6 at -105).
One jitted kernel per segment (`_plan`), shared by every program whose segment is the same; constants are
arguments, not baked in.
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from densetnt_jax.postprocess import PostprocessSettings, finish_prediction
from densetnt_jax.quant import arith as A
from densetnt_jax.quant import ops
from densetnt_jax.quant.program import Op, Program


def requant_hints(o: Op) -> dict[str, A.RequantHint]:
  """{requant prefix: static hint} of an op's constants (see arith.RequantHint): part of the runner's key."""
  return {p: A.requant_hint(ops.requant(o.consts, p)) for p in ops.op_def(o.kind).hinted_requants(o)}


def _narrow(y: jax.Array, bits: int) -> jax.Array:
  """Codes are stored between ops in their own width (int8 / int16): a quarter / half of the int32 traffic."""
  if bits and y.dtype == jnp.int32:
    return y.astype(jnp.int8 if bits <= 8 else jnp.int16)
  return y


def _widen(x: jax.Array) -> jax.Array:
  return x.astype(jnp.int32) if x.dtype in (jnp.int8, jnp.int16) else x


def _step(o: Op, c: dict, xs: list, hints: dict | None) -> jax.Array:
  """One op as the runner executes it: narrow codes in, the op table's kernel on int32, narrow codes out.
  `hints` (`requant_hints`, static) only skip work; without them every kernel takes its general path."""
  d = ops.op_def(o.kind)
  xs = [_widen(x) for x in xs] if d.widen_inputs else xs      # glue moves narrow codes as they are
  return _narrow(d.kernel(o, c, xs, hints), o.bits)


def _outputs(program: Program, consts: dict, env: dict) -> dict:
  """{role: array} of the program outputs, codes dequantized: what the accelerator part hands the host."""
  outs = {}
  for role, name in program.outputs.items():
    o = program.op(name)
    outs[role] = A.dequantize(_widen(env[name]), consts[name]["scale"]) if o.bits else env[name]
  return outs


def finish_kernel(settings: PostprocessSettings):
  """The host epilogue (`finish_prediction`: mode selection, probabilities, endpoints) as one jitted kernel on
  the program's dequantized outputs. Every runner of a program calls this same kernel on materialized outputs
  (interpreter, artifact runner, ONNX + host part), so their predictions agree bit for bit: fused into the
  dequantization, XLA contracts a multiply and an add into one FMA and moved results by an ulp."""
  key = ("finish", settings)
  fn = _SEGMENT_KERNELS.get(key)
  if fn is None:
    fn = _SEGMENT_KERNELS[key] = jax.jit(lambda outs: finish_prediction(**outs, settings=settings))
  return fn


# mode="ops" starts a new segment at every op that reduces rows of its input: there XLA would otherwise fuse
# the producer's requant chain into each of the reduction's passes (measured: LayerNorm's four), so the input
# is materialized first; everything else (dense, matmul, add, concat, ReLU, layout) joins the running segment
# (`OpDef.reduces_rows`: layernorm, softmax, masked_max, top_k, log_softmax). mode="fused": one segment.


class _Segment(NamedTuple):
  ops: tuple            # Op, in program order: a reducing op (or the first op) and the ops up to the next one
  inputs: tuple         # tensor names read from earlier segments or the program inputs
  outputs: tuple        # tensor names later segments, the outputs or return_codes need
  fn: Any               # jitted (consts per op, input arrays) -> output arrays


def _segment_fn(seg_ops: tuple, inputs: tuple, outputs: tuple, hints: dict):
  def run(consts: tuple, xs: tuple):
    env = dict(zip(inputs, xs))
    for o, c in zip(seg_ops, consts):
      env[o.name] = _step(o, c, [env[i] for i in o.inputs], hints.get(o.name))
    return tuple(env[n] for n in outputs)
  return jax.jit(run)


def _plan(program: Program, hints: dict, return_codes: bool, mode: str) -> list:
  """The program cut into segments, each one jitted kernel (see `OpDef.reduces_rows`); a segment returns the
  tensors later segments, the outputs or return_codes read. Cached per program, hints, return_codes and mode."""
  key = ("plan", repr(sorted(hints.items())), return_codes, mode)
  plan = program._cache.get(key)
  if plan is not None:
    return plan
  groups: list[list[Op]] = []
  for o in program.ops:
    if groups and (mode == "fused" or not ops.op_def(o.kind).reduces_rows):
      groups[-1].append(o)
    else:
      groups.append([o])
  wanted = set(program.outputs.values()) | (set(program.code_ops()) if return_codes else set())
  read_by: dict[str, set] = {}
  for gi, g in enumerate(groups):
    for o in g:
      for i in o.inputs:
        read_by.setdefault(i, set()).add(gi)
  plan = []
  for gi, g in enumerate(groups):
    made = [o.name for o in g]
    ins = tuple(dict.fromkeys(i for o in g for i in o.inputs if i not in made))
    outs = tuple(n for n in made if n in wanted or read_by.get(n, set()) - {gi})
    fn = _segment_kernel(tuple(g), ins, outs, {o.name: hints.get(o.name) for o in g})
    plan.append(_Segment(tuple(g), ins, outs, fn))
  program._cache[key] = plan
  return plan


# segment signature -> jitted kernel: a reloaded program (or another program of the same model) reuses them
_SEGMENT_KERNELS: dict = {}


def _segment_kernel(seg_ops: tuple, inputs: tuple, outputs: tuple, hints: dict):
  sig = repr([(o.name, o.kind, o.bits, o.dtype, o.inputs, sorted(o.attrs.items()), sorted(o.consts))
              for o in seg_ops] + [inputs, outputs, sorted(hints.items())])
  fn = _SEGMENT_KERNELS.get(sig)
  if fn is None:
    if len(_SEGMENT_KERNELS) >= 4096:
      _SEGMENT_KERNELS.clear()
    fn = _SEGMENT_KERNELS[sig] = _segment_fn(seg_ops, inputs, outputs, hints)
  return fn


def _op_kernel(o: Op, hints: dict | None):
  """One op alone as a jitted kernel (the host part after a deployed graph: `run_host_part`)."""
  return _segment_kernel((o,), tuple(dict.fromkeys(o.inputs)), (o.name,), {o.name: hints})


def _execute(program: Program, hints: dict, return_codes: bool, consts: dict, inputs: dict, mode: str):
  """Segment by segment, each one jitted kernel: ({role: dequantized output}, codes or None). In one segment
  (mode="fused") XLA fuses each requant chain into all of its consumers (a LayerNorm's four row reductions
  recompute the dense + add before it): measured 1.5x slower at batch 32, 1.8x at batch 8."""
  env = dict(inputs)
  for seg in _plan(program, hints, return_codes, mode):
    outs = seg.fn(tuple(consts.get(o.name, {}) for o in seg.ops), tuple(env[i] for i in seg.inputs))
    env.update(zip(seg.outputs, outs))
  key = ("outputs", _structure(program))
  dequantize = _SEGMENT_KERNELS.get(key)
  if dequantize is None:
    dequantize = _SEGMENT_KERNELS[key] = jax.jit(lambda c, e: _outputs(program, c, e))
  names = set(program.outputs.values())
  outputs = dequantize({n: consts[n] for n in names if n in consts}, {n: env[n] for n in names})
  if not return_codes:
    return outputs, None
  widen = _SEGMENT_KERNELS.setdefault("widen", jax.jit(lambda d: {k: _widen(v) for k, v in d.items()}))
  return outputs, widen({n: env[n] for n in program.code_ops()})


def _hints(program: Program) -> dict:
  """{op: requant hints}, cached per op by the identity of its constant arrays (read-only: an op whose constant
  is replaced gets fresh hints; recomputing all of them took about a millisecond per run)."""
  cache = program._cache.setdefault("hints", {})
  out = {}
  for o in program.ops:
    arrays = tuple(o.consts.values())
    hit = cache.get(o.name)
    if hit is None or len(hit[0]) != len(arrays) or any(a is not b for a, b in zip(hit[0], arrays)):
      hit = cache[o.name] = (arrays, requant_hints(o))
    out[o.name] = hit[1]
  return out


def _structure(program: Program) -> str:
  """Everything the runner's trace depends on except the constants' values (they are arguments)."""
  s = program._cache.get("structure")
  if s is None:
    op_facts = [(o.name, o.kind, o.inputs, o.shape, o.dtype, o.bits, repr(sorted(o.attrs.items())),
                 sorted((k, v.shape, str(v.dtype)) for k, v in o.consts.items())) for o in program.ops]
    meta = json.dumps(program.meta, sort_keys=True)
    s = program._cache["structure"] = repr((op_facts, sorted(program.outputs.items()), meta))
  return s


def _on_device(program: Program, v) -> jax.Array:
  """A constant's device copy, cached by the identity of its (read-only) numpy array: an op whose constant is
  replaced gets the new one, and nothing is transferred twice."""
  cache = program._cache.setdefault("device", {})
  hit = cache.get(id(v))
  if hit is None or hit[0] is not v:
    hit = cache[id(v)] = (v, jnp.asarray(v))
  return hit[1]


def run_host_part(program: Program, handed: dict) -> dict:
  """The program's host ops (`Program.host_part`: the float log-softmax and what reads it) on the tensors the
  accelerator part handed over ({tensor name: array}, codes as int32), with the same jitted kernels as
  `run_program`: {output role: array} of the roles those ops produce."""
  host, needed = program.host_part()
  missing = [n for n in needed if n not in handed]
  if missing:
    raise KeyError(f"run_host_part: the accelerator part did not hand over {missing}")
  env = {n: jnp.asarray(handed[n]) for n in needed}
  hints = _hints(program)
  for name in host:
    o = program.op(name)
    consts = {k: _on_device(program, v) for k, v in o.consts.items()}
    (env[name],) = _op_kernel(o, hints.get(name))((consts,), tuple(env[i] for i in dict.fromkeys(o.inputs)))
  return {role: env[name] for role, name in program.outputs.items() if name in host}


def run_program(program: Program, inputs: dict, return_codes: bool = False, mode: str = "ops",
                postprocess: PostprocessSettings | None = None, outputs_only: bool = False):
  """Prediction (as the float model's predict) from the integer program; with return_codes, also
  {tensor name: int32 codes} of every non-glue op with a code output (the fake-quant model's
  `intermediates` names). mode "ops": one jitted kernel per segment (`_plan`); "fused": the whole accelerator
  part in one. Both give the same bits (the accelerator part, then `finish_kernel`). `postprocess`: the host epilogue's
  settings (mode selection, endpoints; default: the program's own, `meta["postprocess"]`): they change nothing
  on the accelerator. `outputs_only`: the program's outputs ({role: array}, codes dequantized: what the
  accelerator part hands the host) instead of the prediction."""
  missing = [n for n in program.inputs if n.split("/", 1)[1] not in inputs]
  if missing:
    raise KeyError(f"run_program: inputs lack {missing}")
  if mode not in ("ops", "fused"):
    raise ValueError(f"run_program: mode {mode!r}; expected 'ops' or 'fused'")
  hints = _hints(program)
  consts = {o.name: {k: _on_device(program, v) for k, v in o.consts.items()} for o in program.ops if o.consts}
  x = {n: jnp.asarray(inputs[n.split("/", 1)[1]]) for n in program.inputs}
  settings = postprocess or PostprocessSettings.from_meta(program.meta)
  outputs, codes = _execute(program, hints, return_codes, consts, x, mode)
  pred = outputs if outputs_only else finish_kernel(settings)(outputs)
  return (pred, codes) if return_codes else pred
