"""The ONNX exports (`onnx_export`) run in onnxruntime beside their references and held to their bars (`failures`,
config.export): float vs the JAX float predict; qat (QDQ) vs the fake-quant model in output LSB, in three
sessions (onnxruntime's fused kernels re-derive the arithmetic); int vs `run_program`, bit for bit (the five
outputs after the host part, `complete_int`, and every op's codes).

Goal NMS and mode selection stay on the host: `finish(outputs, settings)` runs the model's own
`postprocess.finish_prediction` on the five outputs (as `run_program` does). `run` is bin/export_onnx.py: a
workdir's stage exported, written, checked and reported.

  proto = export_int(program); sess = make_session(proto); outs = run_onnx(sess, inputs)
  result = check_export("int", proto, batches, int_reference(program), config,   # numbers + failures
                        complete=complete_int(program))
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

import jax
import numpy as np
import onnx

from densetnt_jax.data.loader import open_split
from densetnt_jax.data.scene import model_inputs
from densetnt_jax.deploy import onnx_ops as ops
from densetnt_jax.deploy.onnx_export import OUTPUT_ROLES, export_float, export_int, export_qdq, opset_of
from densetnt_jax.metrics import TABLE_METRICS as METRICS
from densetnt_jax.metrics import Agreement, evaluate
from densetnt_jax.model import build_model
from densetnt_jax.postprocess import PostprocessSettings
from densetnt_jax.quant import calibration
from densetnt_jax.quant import convert, run_program
from densetnt_jax.quant.interpreter import finish_kernel, run_host_part
from densetnt_jax.quant.program import Program
from densetnt_jax.quant.qtensor import raw
from densetnt_jax.train.checkpoint import restore_stage
from densetnt_jax.workdir import load_program, onnx_path

LOGPROB_ROLES = ("goal_logprobs_BxG", "topk_logprobs_BxN")    # float epilogue (config.target.host_ops)
TOPK_ROLES = ("topk_goals_BxNx2", "topk_logprobs_BxN", "topk_valid_BxN", "topk_trajs_BxNxFx2")
STAGES = ("float", "qat", "int")

# ------------------------------------------------------------------------------------------ onnxruntime
def make_session(model: onnx.ModelProto | str, *, qdq_int8: bool = False, optimize: bool = True,
                 threads: int = 0):
  """An onnxruntime CPU session. qdq_int8: `session.qdqisint8allowed=1` (fused QDQ kernels keep int8 x int8
  instead of u8 x s8); optimize=False: ORT_DISABLE_ALL (every Q/DQ node runs as written)."""
  import onnxruntime as ort
  so = ort.SessionOptions()
  so.log_severity_level = 3
  if threads:
    so.intra_op_num_threads = threads
  if qdq_int8:
    so.add_session_config_entry("session.qdqisint8allowed", "1")
  if not optimize:
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
  data = model if isinstance(model, str) else model.SerializeToString()
  return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: dict) -> dict:
  """{output name: array} of a session (or ModelProto) on a batch of model inputs (any dict holding the
  model-input fields: a batch, `scene.model_inputs(...)`)."""
  if isinstance(session, onnx.ModelProto):
    session = make_session(session)
  feed = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs()}
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(names, feed)))


def complete_int(program: Program):
  """raw int-graph outputs -> the five program outputs: the host part (`interpreter.run_host_part`: the float
  log-softmax of the dequantized goal scores and its top-k gather) on the `host/<name>` tensors."""
  def complete(raw: dict) -> dict:
    handed = {k.split("/", 1)[1]: v for k, v in raw.items() if k.startswith("host/")}
    host = {r: np.asarray(v) for r, v in run_host_part(program, handed).items()}
    return {**{k: v for k, v in raw.items() if not k.startswith("host/")}, **host}
  return complete


def finish(outputs: dict, settings):
  """Host epilogue: the model's mode selection on the five ONNX outputs (a Prediction), with the interpreter's
  own jitted kernel (`run_program` runs the same one on its outputs: the same bits)."""
  return finish_kernel(settings)({r: outputs[r] for r in OUTPUT_ROLES})


# ------------------------------------------------------------------------------------------ references
def _complete_only(mdl, method_name: str) -> bool:
  return method_name == "complete"


@functools.partial(jax.jit, static_argnames=("model",))
def _jax_outputs(variables, inputs, *, model):
  """The five program outputs of a float (params) or fake-quant (params + quant) predict; the top-k
  trajectories are the decoder's `complete` output, captured."""
  pred, state = model.apply(variables, inputs, method="predict", capture_intermediates=_complete_only,
                            mutable=["intermediates"])
  trajs = raw(state["intermediates"]["decoder"]["complete"][0])
  return dict(goal_logprobs_BxG=pred.goal_logprobs_BxG, topk_goals_BxNx2=pred.topk_goals_BxNx2,
              topk_logprobs_BxN=pred.topk_logprobs_BxN, topk_valid_BxN=pred.topk_valid_BxN,
              topk_trajs_BxNxFx2=trajs)


def jax_reference(model, params, quant: dict | None = None):
  """inputs -> the five outputs of the float predict (quant None) or the fake-quant predict (numpy)."""
  variables = {"params": params} if quant is None else {"params": params, "quant": quant}
  return lambda inputs: jax.device_get(_jax_outputs(variables, calibration.model_inputs(inputs), model=model))


def int_reference(program: Program, codes: bool = False):
  """inputs -> the five outputs of `run_program` (before the host epilogue); codes: (outputs, {op: int32
  codes}) for a graph exported with codes=True."""
  def ref(inputs):
    out = jax.device_get(run_program(program, calibration.model_inputs(inputs), return_codes=codes,
                                     outputs_only=True))
    return ({r: np.asarray(v) for r, v in out[0].items()}, {k: np.asarray(v) for k, v in out[1].items()}) \
        if codes else {r: np.asarray(v) for r, v in out.items()}
  return ref


# ------------------------------------------------------------------------------------------ agreement
def output_scales(program: Program) -> dict:
  """LSB of each output for the QDQ bar: the dequantized outputs' scales; a float output's from its kind's
  `OnnxOpDef.lsb` (the log-probs: the goal scores' scale, also through the top-k gather)."""
  def lsb(name: str):
    if name in program.inputs:
      return None
    op = program.op(name)
    if op.bits:
      return float(op.consts["scale"])
    d = ops.onnx_op(op, "qdq")
    return None if d.lsb is None else d.lsb(op, lsb)
  return {role: s for role in OUTPUT_ROLES if (s := lsb(program.outputs[role])) is not None}


def compare_batches(session, batches, reference, *, scales: dict | None = None, codes: bool = False,
                    postprocess: PostprocessSettings | None = None, miss_threshold: float = 2.0, complete=None) -> dict:
  """Runs `session` and `reference(inputs)` on every batch; per output: max |diff|, share of bit-identical
  elements (top-k outputs on the rows where both picked the same goal), max LSB where `scales` give one;
  `rows_agree`: share of top-k rows whose goal both sides picked alike. codes: the reference also returns
  per-op codes, compared with the session's `codes/<op>` outputs. postprocess=PostprocessSettings and
  batches carrying labels (future_Fx2, has_future, seq_id): end metrics of both after the host NMS."""
  scales = scales or {}
  stats = {r: Agreement(scales.get(r), ulp=r in LOGPROB_ROLES) for r in OUTPUT_ROLES}
  code_stats: dict = {}
  rows_total = rows_same = 0
  seconds = 0.0

  def predict(inputs):
    """Both sides' outputs compared element by element; their end predictions (after the host NMS) scored."""
    nonlocal rows_total, rows_same, seconds
    ref = reference(inputs)
    ref, ref_codes = ref if codes else (ref, None)
    t0 = time.perf_counter()
    got = run_onnx(session, inputs)
    seconds += time.perf_counter() - t0
    if complete is not None:                  # the int graph's host part (complete_int)
      got = complete(got)
    agree = np.all(np.asarray(ref["topk_goals_BxNx2"]) == got["topk_goals_BxNx2"], axis=-1)
    rows_total += agree.size
    rows_same += int(agree.sum())
    stats["goal_logprobs_BxG"].add(ref["goal_logprobs_BxG"], got["goal_logprobs_BxG"])
    stats["topk_goals_BxNx2"].add(ref["topk_goals_BxNx2"], got["topk_goals_BxNx2"])
    for r in TOPK_ROLES[1:]:
      stats[r].add(ref[r], got[r], agree)
    if codes:
      for name, v in ref_codes.items():
        code_stats.setdefault(name, Agreement(1.0)).add(v, got[f"codes/{name}"])
    if postprocess is None or "future_Fx2" not in inputs:
      return {}
    return {k: (pred.trajs_BxKxFx2, pred.probs_BxK)
            for k, pred in (("reference", finish(ref, postprocess)), ("onnx", finish(got, postprocess)))}

  accs = evaluate(predict, batches, ks=(6, 1), miss_threshold=miss_threshold)
  res = {"outputs": {r: s.result() for r, s in stats.items()}, "rows_agree": rows_same / max(rows_total, 1),
         "rows": rows_total, "onnx_seconds": seconds}
  if accs["onnx"].num_sequences:
    res["metrics"] = {k: accs[k].result() for k in ("reference", "onnx")}
    res["metrics"]["sequences"] = accs["onnx"].num_sequences
  if codes:
    res["codes"] = {k: s.result() for k, s in code_stats.items()}
  return res


def failures(stage: str, result: dict, config) -> list[str]:
  """Reasons a comparison fails the stage's bar (config.export): float within float_atol, int bit-identical
  (every output, every row and code), qat within qdq_max_lsb on the dequantized outputs and log-probs."""
  ex = config.export
  out, bad = result["outputs"], []
  if stage == "float":
    atol = float(ex.float_atol)
    for r in ("goal_logprobs_BxG", "topk_logprobs_BxN", "topk_trajs_BxNxFx2"):
      if out[r]["max_abs"] > atol:
        bad.append(f"{r}: max |diff| {out[r]['max_abs']:.3g} > float_atol {atol:g}")
    if out["topk_valid_BxN"]["identical"] < 1.0:
      bad.append("topk_valid_BxN differs on rows with the same goal")
  elif stage == "int":
    for r in OUTPUT_ROLES:
      if out[r]["identical"] < 1.0:
        bad.append(f"{r}: {100 * out[r]['identical']:.4f}% bit-identical (max |diff| {out[r]['max_abs']:.3g}"
                   + (f", {out[r]['max_ulp']} ulp)" if "max_ulp" in out[r] else ")"))
    if result["rows_agree"] < 1.0:
      bad.append(f"top-k goals differ on {100 * (1 - result['rows_agree']):.3f}% of rows")
    for name, s in result.get("codes", {}).items():
      if s["identical"] < 1.0:
        bad.append(f"codes of {name}: {100 * s['identical']:.4f}% identical, max {s['max_abs']:.0f} LSB")
  elif stage == "qat":
    bar = float(ex.qdq_max_lsb)
    if out["topk_trajs_BxNxFx2"].get("max_lsb", 0.0) > bar:
      bad.append(f"topk_trajs_BxNxFx2: {out['topk_trajs_BxNxFx2']['max_lsb']:.1f} LSB > qdq_max_lsb {bar:g}")
    if out["topk_valid_BxN"]["identical"] < 1.0:
      bad.append("topk_valid_BxN differs on rows with the same goal")
  else:
    raise ValueError(f"stage {stage!r}; expected one of {STAGES}")
  if "metrics" in result and stage in ("float", "qat"):
    tol = float(ex.get("qdq_max_metric_diff" if stage == "qat" else "float_max_metric_diff", 0.01))
    # QDQ re-derives the arithmetic, so near-tied goals rank differently: the K=1 metrics hinge on one goal per
    # scene (demo: minFDE_k1 moved 0.38 m on 128 scenes while K=6 moved <= 0.01); the bar holds K=6 only
    for k in METRICS if stage == "float" else [m for m in METRICS if m.endswith("_k6")]:
      a, b = result["metrics"]["reference"].get(k), result["metrics"]["onnx"].get(k)
      if a is not None and b is not None and abs(a - b) > tol:
        bad.append(f"end metric {k}: reference {a:.4f} vs onnx {b:.4f} (bar |diff| <= {tol:g})")
  if "metrics" in result and stage == "int":
    for k in METRICS:
      if result["metrics"]["reference"].get(k) != result["metrics"]["onnx"].get(k):
        bad.append(f"end metric {k} differs: {result['metrics']['reference'].get(k)} vs "
                   f"{result['metrics']['onnx'].get(k)}")
  return bad


def check_export(stage: str, proto: onnx.ModelProto, batches, reference, config, *, scales: dict | None = None,
                 codes: bool = False, session_kwargs: dict | None = None, metrics: bool = True,
                 complete=None) -> dict:
  """`compare_batches` of one export in one onnxruntime session, plus `onnx.checker` and the stage's bar:
  {"outputs", "rows_agree", ..., "failures": [...]} (empty failures: the export passes)."""
  onnx.checker.check_model(proto)
  session = make_session(proto, **(session_kwargs or {}))
  post = PostprocessSettings.from_config(config.postprocess) if metrics else None
  res = compare_batches(session, batches, reference, scales=scales, codes=codes, postprocess=post,
                        miss_threshold=float(config.eval.miss_threshold) if "eval" in config else 2.0,
                        complete=complete)
  res["failures"] = failures(stage, res, config)
  return res


# ------------------------------------------------------------------------------------------ workdir tool
def format_result(stage: str, result: dict) -> str:
  """Per output: max |diff|, max LSB (when scaled) and % bit-identical; top-k rows agreement."""
  lines = [f"{'output':<22}{'max |diff|':>12}{'max ulp':>10}{'max LSB':>10}{'identical %':>13}"]
  for r, s in result["outputs"].items():
    lsb = f"{s['max_lsb']:10.2f}" if "max_lsb" in s else f"{'':>10}"
    ulp = f"{s['max_ulp']:10d}" if "max_ulp" in s else f"{'':>10}"
    if "max_ulp" in s and s["max_ulp"] > 10**6:
      ulp = f"{'>1e6':>10}"
    lines.append(f"{r:<22}{s['max_abs']:12.3g}{ulp}{lsb}{100 * s['identical']:13.4f}")
  lines.append(f"top-k rows with the same goal: {100 * result['rows_agree']:.3f}% of {result['rows']} "
               "(top-k outputs compared on those rows)")
  if "codes" in result:
    c = result["codes"]
    n = sum(s["elements"] for s in c.values())
    same = sum(s["identical"] * s["elements"] for s in c.values())
    lines.append(f"per-op codes: {len(c)} ops, {100 * same / max(n, 1):.4f}% identical, max "
                 f"{max([s['max_abs'] for s in c.values()] + [0]):.0f} LSB")
  if "metrics" in result:
    m = result["metrics"]
    lines.append(f"{'end metrics (host NMS)':<22}" + "".join(f"{k:>11}" for k in METRICS))
    for k in ("reference", "onnx"):
      lines.append(f"{k:<22}" + "".join(f"{m[k].get(x, float('nan')):11.4f}" for x in METRICS))
    lines.append(f"({m['sequences']} scored sequences)")
  return "\n".join(lines)


def _val_batches(config, n: int):
  ds = open_split(config.data, config.data.val_split)
  out = []
  for i, batch in enumerate(ds.batches(int(config.train.eval_batch_size))):
    if i >= n:
      break
    out.append(dict(model_inputs(batch), future_Fx2=batch.future_Fx2, has_future=batch.has_future,
                    seq_id=batch.seq_id))
  return out


def export_workdir(config, workdir, stage: str, batches):
  """(ModelProto, reference, scales, check) of a workdir's stage: float best, qat best (QDQ) or the int program;
  `check`: None, or for int (the same graph with per-op code outputs, its reference with codes)."""
  model = build_model(config)
  if stage == "float":
    params, _, _ = restore_stage(workdir, "float", "best")
    return export_float(model, params, batches[0], config), jax_reference(model, params), None, None
  if stage == "qat":
    params, quant, _ = restore_stage(workdir, "qat", "best")
    program = convert(model, params, quant, batches[0])
    proto = export_qdq(model, params, quant, batches[0], config, program=program)
    return proto, jax_reference(model, params, quant), output_scales(program), None
  if stage == "int":
    program = load_program(workdir)
    check = (export_int(program, config, codes=True), int_reference(program, codes=True), complete_int(program))
    return export_int(program, config), int_reference(program), None, check
  raise ValueError(f"stage {stage!r}; expected one of {STAGES}")


def run(config, workdir, stage: str, *, output: str | None = None, num_batches: int | None = None) -> int:
  """bin/export_onnx.py: writes the stage's ONNX (default WORKDIR/export/densetnt_<stage>.onnx), runs it in
  onnxruntime on `config.export.num_batches` val batches beside its JAX reference, prints the agreement
  and the verdict, writes <output>.json; returns 0 when the stage's bar holds, else 1. The qat export runs
  in three sessions: ORT defaults, session.qdqisint8allowed=1, and no graph optimization (as written)."""
  n = int(num_batches or config.export.num_batches)
  batches = _val_batches(config, n)
  proto, reference, scales, check = export_workdir(config, workdir, stage, batches)
  path = output or onnx_path(workdir, stage)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  onnx.save(proto, path)
  size = os.path.getsize(path)
  print(f"wrote {path} ({size / 2**20:.2f} MiB, {len(proto.graph.node)} nodes, opset {opset_of(config)})")
  variants = {"default": {}}
  if stage == "qat":
    variants = {"default": {}, "qdqisint8allowed=1": {"qdq_int8": True}, "no optimization": {"optimize": False}}
  report, failed = {"path": path, "bytes": size, "stage": stage, "num_batches": len(batches), "sessions": {}}, []
  for label, kwargs in variants.items():
    if check is not None:          # int: the written graph's outputs are a subset of this one's
      res = check_export(stage, check[0], batches, check[1], config, codes=True, session_kwargs=kwargs,
                         complete=check[2])
    else:
      res = check_export(stage, proto, batches, reference, config, scales=scales, session_kwargs=kwargs)
    report["sessions"][label] = res
    print(f"\n[{stage}] onnxruntime ({label}) vs {_REF_NAME[stage]}, {len(batches)} val batches:")
    print(format_result(stage, res))
    failed += [f"({label}) {f}" for f in res["failures"]]
  with open(os.path.splitext(path)[0] + ".json", "w") as f:
    json.dump(report, f, indent=2)
  if failed:
    print(f"\nFAILED ({len(failed)}):\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1
  print(f"\nPASSED: {_BAR[stage](config)}")
  return 0


_REF_NAME = {"float": "JAX float predict", "qat": "JAX fake-quant predict", "int": "run_program (jitted interpreter)"}
_BAR = {"float": lambda c: f"every float output within {c.export.float_atol:g} of JAX",
        "qat": lambda c: f"trajectories within {c.export.qdq_max_lsb} LSB of the fake-quant model on rows with the "
                         f"same goal, K=6 end metrics within {c.export.get('qdq_max_metric_diff', 0.01)}",
        "int": lambda c: "every integer code and all five outputs (after the host part) bit-identical to the "
                         "interpreter"}
