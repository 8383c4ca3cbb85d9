"""ONNX export of the three deployable forms, emitted with `onnx.helper` from the integer program's op list
(`quant.program`: the model's predict path recorded layer by layer); `onnx_check` runs them in onnxruntime and
compares them with their JAX references:

  float  the float model: each op's float reference (`OPS[kind].float`, arith's float forms; MatMul/Add,
         LayerNorm, softmax, masked ReduceMax, LogSoftmax, TopK) on ONNX tensors; float params by op name.
  qat    QDQ: the float ops with QuantizeLinear/DequantizeLinear after every quantization point (activation
         scales of the quant state; int16 points need opset >= 21) and int8 per-channel weights
         (DequantizeLinear axis=1, int32 bias on the s_x s_w grid): the portable form other toolchains read.
  int    the integer program's accelerator part, each op's own kernel (`OPS[kind].kernel`) on ONNX tensors
         (`onnx_ops.OnnxNamespace`). It hands the goal score codes and top-k indices to the host part (the float
         log-softmax, `Program.host_part`), which `onnx_check.complete_int` runs with the interpreter's kernels.

Every graph has the model-input fields as inputs (batch axis symbolic, "B") and ends at the program's five
outputs: goal_logprobs_BxG, topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN, topk_trajs_BxNxFx2. Goal NMS
and mode selection stay on the host (`onnx_check.finish`). No TensorFlow, no jax2onnx.

  proto = export_int(program)                      # or export_float(model, params, ...), export_qdq(...)
"""
from __future__ import annotations

import numpy as np
import onnx

from densetnt_jax.deploy import onnx_ops as ops
from densetnt_jax.deploy.onnx_ops import Emitter
from densetnt_jax.quant import convert, init_quant_state
from densetnt_jax.quant.ops import TensorFacts
from densetnt_jax.quant.program import Program

OUTPUT_ROLES = ("goal_logprobs_BxG", "topk_goals_BxNx2", "topk_logprobs_BxN", "topk_valid_BxN", "topk_trajs_BxNxFx2")
DEFAULT_OPSET = 21          # int16 QuantizeLinear / DequantizeLinear


def opset_of(config) -> int:
  if config is None or "export" not in config:
    return DEFAULT_OPSET
  return int(config.export.get("opset", DEFAULT_OPSET))


def _build(program: Program, emit_op, out_value, *, opset: int, name: str, doc: str, codes_as_int: bool = False,
           extra_outputs: tuple = (), host: tuple = (), handed: tuple = ()) -> onnx.ModelProto:
  """Walks the program's ops through `emit_op(e, op, xs, ins) -> tensor` (ins: the inputs' TensorFacts, code
  tensors int32 when `codes_as_int`, else float32); `out_value(e, op, t) -> (tensor, dtype)` turns an output
  tensor into the graph output; `extra_outputs`: op names exposed too.
  `host`: ops left to the host (not emitted; roles they produce are not graph outputs); `handed`: tensors the
  graph hands to them, output as `host/<name>` (codes int32, as the interpreter's kernels read them)."""
  e = Emitter()
  env, facts, inputs = {}, {}, []
  for tname, (shape, dtype) in program.inputs.items():
    field = tname.split("/", 1)[1]
    env[tname], facts[tname] = field, TensorFacts(tuple(shape), str(np.dtype(dtype)), 0)
    inputs.append(ops.value_info(field, shape, dtype))
  for op in program.ops:
    if op.name in host:
      continue
    e.scope = op.name
    env[op.name] = emit_op(e, op, [env[i] for i in op.inputs], [facts[i] for i in op.inputs])
    facts[op.name] = TensorFacts(tuple(op.shape), "int32" if op.bits and codes_as_int else op.dtype, op.bits)
  e.scope = "outputs"
  outputs = []
  for tname in handed:
    e.node("Identity", [env[tname]], outputs=f"host/{tname}")
    outputs.append(ops.value_info(f"host/{tname}", facts[tname].shape, facts[tname].dtype))
  for role in OUTPUT_ROLES:
    if program.outputs[role] in host:
      continue
    op = program.op(program.outputs[role])
    value, dtype = out_value(e, op, env[op.name])
    e.node("Identity", [value], outputs=role)
    outputs.append(ops.value_info(role, op.shape, dtype))
  for oname in extra_outputs:
    op = program.op(oname)
    e.node("Identity", [env[oname]], outputs=f"codes/{oname}")
    outputs.append(ops.value_info(f"codes/{oname}", op.shape, np.int32))
  return e.model(inputs, outputs, opset=opset, name=name, doc=doc)


# ------------------------------------------------------------------------------------------- the three forms
def _float_out(e, op, t):
  return t, op.dtype


def export_float(model, params, example_inputs: dict, config) -> onnx.ModelProto:
  """The float model's predict (up to the five program outputs) as ONNX, float params as initializers. The op
  list is recorded as `convert` records it, with a fresh quant state (its scales are not used)."""
  program = convert(model, params, init_quant_state(model, params, example_inputs, config.quant), example_inputs)
  ctx = ops.QuantCtx(params)
  float_op = lambda e, op, xs, ins: ops.onnx_op(op, "float").float(e, op, xs, ins, ctx)   # its float reference
  return _build(program, float_op, _float_out, opset=opset_of(config),
                name="densetnt_float", doc="DenseTNT float predict up to the top-k goals; NMS on the host")


def export_qdq(model, params, quant: dict, example_inputs: dict, config, program: Program | None = None
               ) -> onnx.ModelProto:
  """QDQ ONNX of the fake-quant model (params + calibrated/QAT quant state): float ops with Q/DQ after each
  quantization point (int8/int16 activation scales), int8 per-channel weights and int32 biases dequantized
  in the graph. `program`: the convert of the same (params, quant), if already at hand."""
  program = program or convert(model, params, quant, example_inputs)
  scales = {o.name: o.scale for o in program.ops if o.scale is not None}
  opset = opset_of(config)
  if opset < 21 and any(o.bits == 16 for o in program.ops if ops.onnx_op(o, "qdq").point):
    raise ValueError(f"export_qdq: int16 QuantizeLinear needs opset >= 21; config.export.opset is {opset}")
  ctx = ops.QuantCtx(params, scales)
  qdq_op = lambda e, op, xs, ins: ops.onnx_op(op, "qdq").emit_qdq(e, op, xs, ins, ctx)   # Q/DQ at points, int8 weights
  return _build(program, qdq_op, _float_out, opset=opset,
                name="densetnt_qdq", doc="DenseTNT fake-quant predict as QDQ (int8/int16 activations, int8 "
                "per-channel weights) up to the top-k goals; NMS on the host")


# ------------------------------------------------------------------------------------------- int graph
def _int_op(e: Emitter, op, xs, ins):
  """One program op on int32 codes: its kernel (the interpreter's) on ONNX tensors."""
  ops.onnx_op(op, "int")                    # a kind the table lacks: a ValueError naming it
  return ops.run_kernel(e, op, xs, ins)


def _int_out(e, op, t):
  if op.bits:
    return e.node("Mul", [e.cast(t, np.float32), np.float32(op.consts["scale"])]), np.float32
  return t, op.dtype


def export_int(program: Program, config=None, *, codes: bool = False) -> onnx.ModelProto:
  """The integer program's accelerator part as ONNX integer ops: its outputs are the roles that part produces
  (top-k goals, validity, trajectories) and the tensors it hands to the host part (`Program.host_part`: the
  goal score codes and the top-k indices, as `host/<name>`); `complete_int(program)` runs the host part with
  the interpreter's kernels, so the five outputs are bit-identical to `run_program`. `codes`: also output
  every code op's int32 codes as `codes/<op name>` (what run_program's return_codes gives)."""
  extra = tuple(program.code_ops()) if codes else ()
  host, handed = program.host_part()
  return _build(program, _int_op, _int_out, opset=opset_of(config), name="densetnt_int", codes_as_int=True,
                extra_outputs=extra, host=tuple(host), handed=tuple(handed),
                doc="DenseTNT integer program (int8/int16 codes, int32 requant, LUTs) up to the top-k goals; "
                "NMS on the host")
