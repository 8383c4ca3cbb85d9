"""ONNX export (densetnt_jax.deploy.onnx_export), each export run in onnxruntime beside its JAX reference
(deploy.onnx_check) on the tiny calibrated model: float within config.export.float_atol, QDQ within qdq_max_lsb
of the fake-quant model, the integer graph bit-identical to run_program (every output and every op's codes)."""
import copy

import numpy as np
import onnx
import pytest
from onnx import helper

from densetnt_jax.deploy import onnx_check as C
from densetnt_jax.deploy import onnx_export as X
from densetnt_jax.deploy import onnx_ops
from densetnt_jax.postprocess import PostprocessSettings
from densetnt_jax.quant import arith as A
from densetnt_jax.quant.ops import TensorFacts


def _op_types(proto):
  return {n.op_type for n in proto.graph.node}


def _batch_is_symbolic(proto):
  ios = list(proto.graph.input) + list(proto.graph.output)
  return all(v.type.tensor_type.shape.dim[0].dim_param == "B" for v in ios)


@pytest.fixture(scope="module")
def int_export(tiny_quant):
  proto = X.export_int(tiny_quant["program"], tiny_quant["config"], codes=True)
  return proto, C.make_session(proto)


def test_int_export_bit_identical_to_interpreter(tiny_quant, int_export):
  proto, session = int_export
  program, config = tiny_quant["program"], tiny_quant["config"]
  onnx.checker.check_model(proto, full_check=True)
  assert _batch_is_symbolic(proto)
  assert {"MatMulInteger", "Gather", "Mod", "TopK"} <= _op_types(proto)
  assert "MatMul" not in _op_types(proto)                     # every dot is an integer one
  res = C.compare_batches(session, tiny_quant["batches"], C.int_reference(program, codes=True), codes=True,
                          complete=C.complete_int(program))
  assert C.failures("int", res, config) == []
  assert set(res["codes"]) == set(program.code_ops())
  assert all(s["identical"] == 1.0 and s["elements"] > 0 for s in res["codes"].values())
  for role in X.OUTPUT_ROLES:                                 # the host part included: every bit
    assert res["outputs"][role]["identical"] == 1.0, role
  assert res["rows_agree"] == 1.0
  assert {o.name for o in proto.graph.output} >= {"host/" + n for n in program.host_part()[1]}


def test_int_export_other_batch_size_and_host_nms(tiny_quant, int_export):
  """The batch axis is symbolic: 3 scenes run in the graph exported at batch 4; the host epilogue gives the
  interpreter's modes."""
  from densetnt_jax.quant import run_program
  _, session = int_export
  program, batch = tiny_quant["program"], tiny_quant["batches"][1]
  inputs = {k: v[:3] for k, v in batch.items()}
  outs = C.complete_int(program)(C.run_onnx(session, inputs))
  assert outs["topk_trajs_BxNxFx2"].shape[0] == 3
  pred = C.finish(outs, PostprocessSettings.from_meta(program.meta))
  ref = run_program(program, inputs)
  np.testing.assert_array_equal(np.asarray(pred.trajs_BxKxFx2), np.asarray(ref.trajs_BxKxFx2))
  np.testing.assert_array_equal(np.asarray(pred.mode_mask_BxK), np.asarray(ref.mode_mask_BxK))


def test_int_check_catches_a_one_lsb_change(tiny_quant):
  """The comparison can fail: a dense bias off by one code in the exported graph is reported."""
  program = copy.deepcopy(tiny_quant["program"])
  op = next(o for o in program.ops if o.kind == "dense" and o.name.startswith("decoder/traj_out"))
  op.consts["b_q"] = op.consts["b_q"] + 2000
  proto = X.export_int(program, tiny_quant["config"])
  res = C.check_export("int", proto, tiny_quant["batches"][:1], C.int_reference(tiny_quant["program"]),
                       tiny_quant["config"], complete=C.complete_int(program))
  assert any("topk_trajs_BxNxFx2" in f for f in res["failures"])


def test_float_export_within_atol(tiny_quant):
  t = tiny_quant
  proto = X.export_float(t["model"], t["params"], t["batches"][0], t["config"])
  assert _batch_is_symbolic(proto) and "QuantizeLinear" not in _op_types(proto)
  res = C.check_export("float", proto, t["batches"], C.jax_reference(t["model"], t["params"]), t["config"])
  assert res["failures"] == []
  for role in ("goal_logprobs_BxG", "topk_logprobs_BxN", "topk_trajs_BxNxFx2"):
    assert res["outputs"][role]["max_abs"] <= t["config"].export.float_atol, role
  assert res["rows_agree"] > 0.9                              # near ties may reorder a few top-k rows


def test_qdq_export_within_lsb_bar(tiny_quant):
  t = tiny_quant
  program = t["program"]
  proto = X.export_qdq(t["model"], t["params"], t["quant"], t["batches"][0], t["config"], program=program)
  nodes = proto.graph.node
  points = [o for o in program.ops if onnx_ops.OPS[o.kind].point]
  assert sum(n.op_type == "QuantizeLinear" for n in nodes) == len(points)
  inits = {i.name: i for i in proto.graph.initializer}
  zp_types = {inits[n.input[2]].data_type for n in nodes if n.op_type == "QuantizeLinear"}
  assert zp_types == {onnx.TensorProto.INT8, onnx.TensorProto.INT16}
  weights = [n for n in nodes if n.op_type == "DequantizeLinear"
             and any(a.name == "axis" and a.i == 1 for a in n.attribute)]
  assert len(weights) == sum(o.kind == "dense" for o in program.ops)
  assert all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in weights)
  ref = C.jax_reference(t["model"], t["params"], t["quant"])
  res = C.check_export("qat", proto, t["batches"], ref, t["config"], scales=C.output_scales(program),
                       session_kwargs={"qdq_int8": True})
  assert res["failures"] == []
  assert 0 < res["outputs"]["topk_trajs_BxNxFx2"]["max_lsb"] <= t["config"].export.qdq_max_lsb


def _run_graph(kernel, feeds: dict) -> np.ndarray:
  """`kernel` (an arith function) on ONNX tensors fed with `feeds`, run in onnxruntime."""
  e = onnx_ops.Emitter()
  xp = onnx_ops.OnnxNamespace(e)
  syms = [xp.sym(k, TensorFacts(v.shape, v.dtype.name, 0)) for k, v in feeds.items()]
  e.node("Identity", [kernel(*syms)], outputs="y")
  inputs = [onnx_ops.value_info(k, v.shape, v.dtype) for k, v in feeds.items()]
  proto = e.model(inputs, [helper.make_empty_tensor_value_info("y")], opset=21, name="t")
  return C.run_onnx(C.make_session(proto), feeds)["y"]


def test_integer_kernels_on_onnx_match_jax_on_edge_values():
  """arith's mul_shift (static and per-row shifts), rshift_round up to 31 and bit_length emitted on ONNX tensors
  give what they give on jnp arrays."""
  rng = np.random.default_rng(0)
  v = np.concatenate([rng.integers(-2**31, 2**31, 400), [-2**31, 2**31 - 1, -1, 0, 1, 2**16, -2**16, 32767]])
  v = v.astype(np.int32)[:, None]
  s = np.arange(0, 50, dtype=np.int32)[None, :]
  m = np.int32(-23117)
  want = np.asarray(A.mul_shift(v, m, s))
  got = _run_graph(lambda v_, s_: A.mul_shift(v_, m, s_), {"v": v, "s": s})
  np.testing.assert_array_equal(got, want)
  for shift in (0, 7, 16, 23, 46, 47):                        # static shifts fold into constants
    got = _run_graph(lambda v_: A.mul_shift(v_, m, np.int32(shift)), {"v": v})
    np.testing.assert_array_equal(got, np.asarray(A.mul_shift(v, m, shift)))
    if shift >= 17:                                           # the hinted one-branch form
      got = _run_graph(lambda v_: A.mul_shift(v_, m, np.int32(shift), min_shift=17), {"v": v})
      np.testing.assert_array_equal(got, np.asarray(A.mul_shift(v, m, shift)))
  k = np.arange(0, 32, dtype=np.int32)[None, :]
  got = _run_graph(A.rshift_round, {"v": v, "k": k})
  np.testing.assert_array_equal(got, np.asarray(A.rshift_round(v, k)))
  u = np.minimum(np.abs(v[:, 0].astype(np.int64)), 2**31 - 1).astype(np.int32)
  got = _run_graph(A.bit_length, {"u": u})
  np.testing.assert_array_equal(got, np.asarray(A.bit_length(u)))
