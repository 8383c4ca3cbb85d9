"""The integer program: the fake-quant model's predict path as a static list of layer-level ops, read off the
model itself (record mode under jax.eval_shape, no second copy of the architecture), with the integer
constants the fake-quant graph uses, derived here by the same `arith.*_params` calls on the same float32
params and scales (so the two agree bit for bit).

An op: name (its output tensor: the module path, or `<input>~<glue>` for glue), kind, input tensor names,
output shape (batch axis None), dtype (int32 codes, bool masks, int32 indices, float32), bits (code width,
0 for non-code tensors), scale (the output codes' scale), attrs (static: axes, shapes, bits of the inputs,
alpha, k, ...) and consts (numpy: int8 weights, int16 gammas, int32 biases, requant multipliers and shifts).
Program inputs are the model-input fields (`inputs/<field>`); outputs map the prediction's roles to tensors.

Files (`save`/`load_program`, no pickle): program.json (everything but arrays) + arrays.npz (consts).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from densetnt_jax.quant.ops import GLUE, HOST_KINDS, declared_bounds, op_def

FORMAT = "densetnt-int-program/1"
RECORD_BATCH = 3     # traced batch size: every tensor's axis 0 must be it, and becomes the symbolic batch


@dataclasses.dataclass
class Op:
  name: str
  kind: str
  inputs: tuple[str, ...]
  shape: tuple                      # output shape, batch axis None
  dtype: str
  bits: int                         # output code width; 0: mask, index or float tensor
  scale: float | None               # output scale (code tensors)
  attrs: dict = dataclasses.field(default_factory=dict)
  consts: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for v in self.consts.values():   # constants are values: replace an array, never edit one in place
      if isinstance(v, np.ndarray):
        v.setflags(write=False)

  def __deepcopy__(self, memo) -> "Op":
    return Op(self.name, self.kind, self.inputs, self.shape, self.dtype, self.bits, self.scale,
              copy.deepcopy(self.attrs, memo), {k: np.array(v) for k, v in self.consts.items()})

  def line(self) -> str:
    shape = "(" + ",".join("B" if d is None else str(d) for d in self.shape) + ")"
    ty = f"i{self.bits}" if self.bits else {"bool": "bool", "float32": "f32"}.get(self.dtype, self.dtype)
    scale = f" s={self.scale:.4g}" if self.scale is not None else ""
    consts = " [" + " ".join(f"{k}:{v.dtype}{list(v.shape)}" for k, v in self.consts.items()) + "]" \
        if self.consts else ""
    return f"{self.kind:<15} {self.name:<46} {shape:<14} {ty:<5}{scale} <- {', '.join(self.inputs)}{consts}"


@dataclasses.dataclass
class Program:
  inputs: dict                      # name -> (shape with None batch, dtype)
  ops: list
  outputs: dict                     # prediction role -> tensor name
  meta: dict                        # threshold, mode_num, format
  _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  def __str__(self) -> str:
    lines = [f"Program ({len(self.ops)} ops; outputs: " + ", ".join(f"{k}={v}" for k, v in self.outputs.items())
             + ")"]
    for name, (shape, dtype) in self.inputs.items():
      lines.append(f"{'input':<15} {name:<46} (" + ",".join("B" if d is None else str(d) for d in shape)
                   + f") {dtype}")
    lines += [op.line() for op in self.ops]
    return "\n".join(lines)

  def __deepcopy__(self, memo) -> "Program":
    """A copy with read-only constants of its own and empty caches (the interpreter's are per program)."""
    return Program(copy.deepcopy(self.inputs, memo), [copy.deepcopy(o, memo) for o in self.ops],
                   dict(self.outputs), copy.deepcopy(self.meta, memo))

  def op(self, name: str) -> Op:
    for o in self.ops:
      if o.name == name:
        return o
    raise KeyError(f"no op {name!r} in the program")

  def code_ops(self) -> list[str]:
    """Names of the ops whose integer output codes `run_program(..., return_codes=True)` returns."""
    return [o.name for o in self.ops if o.bits and o.kind not in GLUE]

  def host_part(self) -> tuple[list[str], list[str]]:
    """(host ops, their inputs): ops of HOST_KINDS and every op that depends on one run on the host CPU; the
    tensors they read from the accelerator's part (or the program inputs) are what a deployed graph hands over.
    The integer ONNX export ends there; `interpreter.run_host_part` runs the rest with the interpreter's own
    kernels, so a deployment's outputs equal `run_program`'s bit for bit."""
    host: list[str] = []
    for o in self.ops:
      if o.kind in HOST_KINDS or any(i in host for i in o.inputs):
        host.append(o.name)
    handed = []
    for o in self.ops:
      if o.name in host:
        handed += [i for i in o.inputs if i not in host and i not in handed]
    return host, handed

  def accumulator_bounds(self) -> dict[str, int]:
    """Largest int32 intermediate of every op with wide arithmetic (the op table's bounds), in Python ints."""
    return {name: max(b.values()) for name, b in declared_bounds(self).items()}

  def save(self, directory: str) -> None:
    """program.json (the document) + arrays.npz (the constants, keys c0, c1, ...)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {}

    def add(op_index: int, op: "Op", const: str, value) -> str:
      key = f"c{len(arrays)}"
      arrays[key] = np.asarray(value)
      return key

    with open(os.path.join(directory, "program.json"), "w") as f:
      json.dump(to_document(self, add), f, indent=1)
    np.savez(os.path.join(directory, "arrays.npz"), **arrays)


def to_document(program: Program, add_array) -> dict:
  """The program as a JSON-able document: format, meta, outputs, inputs and ops, each op's constants replaced by
  the keys `add_array(op_index, op, const_name, array)` returns (where the caller stores the arrays). The one
  encoding of a program, shared by the program directory and the compiled artifact."""
  ops = []
  for i, o in enumerate(program.ops):
    consts = {c: add_array(i, o, c, v) for c, v in o.consts.items()}
    ops.append(dict(name=o.name, kind=o.kind, inputs=list(o.inputs), shape=list(o.shape), dtype=o.dtype,
                    bits=o.bits, scale=o.scale, attrs=_encode_attrs(o.attrs), consts=consts))
  return dict(format=FORMAT, meta=program.meta, outputs=program.outputs,
              inputs={k: [list(s), d] for k, (s, d) in program.inputs.items()}, ops=ops)


def from_document(doc: dict, arrays: dict) -> Program:
  """The Program of a document written by `to_document`, its constants looked up in `arrays` by key."""
  ops = [Op(d["name"], d["kind"], tuple(d["inputs"]), tuple(d["shape"]), d["dtype"], d["bits"], d["scale"],
            _decode_attrs(d["attrs"]), {c: arrays[k] for c, k in d["consts"].items()}) for d in doc["ops"]]
  inputs = {k: (tuple(s), dt) for k, (s, dt) in doc["inputs"].items()}
  return Program(inputs, ops, doc["outputs"], doc["meta"])


def load_program(directory: str) -> Program:
  """A program written by `Program.save` (JSON + .npz, loaded with allow_pickle=False)."""
  path = os.path.join(directory, "program.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no program.json in {directory}: write one with convert(...).save(dir)")
  with open(path) as f:
    doc = json.load(f)
  if doc.get("format") != FORMAT:
    raise ValueError(f"{path}: format {doc.get('format')!r}, this reader understands {FORMAT!r}")
  with np.load(os.path.join(directory, "arrays.npz"), allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  return from_document(doc, arrays)


# ---------------------------------------------------------------------------------------- attrs <-> JSON
def encode_index(idx: tuple) -> list:
  out = []
  for i in idx:
    if i is Ellipsis:
      out.append("...")
    elif isinstance(i, slice):
      out.append({"slice": [i.start, i.stop, i.step]})
    else:
      out.append(i)                  # int or None (new axis)
  return out


def decode_index(enc: list) -> tuple:
  return tuple(Ellipsis if i == "..." else slice(*i["slice"]) if isinstance(i, dict) else i for i in enc)


def _encode_attrs(attrs: dict) -> dict:
  return {k: encode_index(v) if k == "index" else v for k, v in attrs.items()}


def _decode_attrs(attrs: dict) -> dict:
  out = {}
  for k, v in attrs.items():
    if k == "index":
      v = decode_index(v)
    elif isinstance(v, list):
      v = tuple(v)
    out[k] = v
  return out


# ------------------------------------------------------------------------------------------- convert
def _at(tree: Any, name: str, what: str) -> Any:
  """The params / quant state of the module that produced tensor `name` (a `call_tag` suffix dropped)."""
  node = tree
  for k in name.split("@", 1)[0].split("/"):
    if k not in node:
      raise KeyError(f"convert: no {what} for layer {name!r} (missing {k!r})")
    node = node[k]
  return node


def _consts(r: dict, params, s_in: list, s_out, b_in: list) -> dict:
  """Integer constants of one recorded op: its op definition's `derive`, the same arith.*_params calls as the
  fake-quant forms."""
  derive = op_def(r["kind"]).derive
  return {} if derive is None else derive(r, lambda: _at(params, r["name"], "params"), s_in, s_out, b_in)


def _derive(recorded: list, input_names: tuple, params, quant_state) -> tuple[dict, dict]:
  """({op: consts}, {tensor: scale}) of the recorded ops, scales chained producer -> consumer."""
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  scales, bits, consts = {}, {f"inputs/{k}": 0 for k in input_names}, {}
  for r in recorded:
    if r["point"]:
      s_out = jnp.asarray(_at(quant_state, r["name"], "quant state")["scale"], jnp.float32)
    elif r["bits"]:
      s_out = scales[r["inputs"][0]]
    else:
      s_out = None
    s_in = [scales.get(i) for i in r["inputs"]]
    consts[r["name"]] = _consts(r, params, s_in, s_out, [bits[i] for i in r["inputs"]])
    bits[r["name"]] = r["bits"]
    if s_out is not None:
      scales[r["name"]] = s_out
  return consts, scales


def convert(model, params, quant_state: dict, example_inputs: dict, config=None) -> "Program":
  """The integer program of `model.predict` with these params and (calibrated / QAT) quant state.

  Traces the fake-quant model once under jax.eval_shape with a batch of RECORD_BATCH (only the input shapes
  of `example_inputs` are used), then derives every op's constants in one jit (the arith helpers give the
  same bits eagerly and under jit; eager, thousands of tiny dispatches took seconds). `config` is not needed
  (code widths live in the quant state, postprocess settings on the model); accepted for a uniform call."""
  del config
  from densetnt_jax.quant import qtensor as Q            # flax: only the converter needs the model side
  from densetnt_jax.quant.calibration import model_inputs, point_bits
  inputs = model_inputs(example_inputs)
  specs = {k: jax.ShapeDtypeStruct((RECORD_BATCH,) + tuple(v.shape[1:]), v.dtype) for k, v in inputs.items()}
  with Q.recording() as rec:
    def trace(params, quant, inputs):
      named = {k: rec.add_input(f"inputs/{k}", v) for k, v in inputs.items()}
      return model.apply({"params": params, "quant": quant}, named, method="predict")
    jax.eval_shape(trace, params, quant_state, specs)
  for r in rec.ops:
    if r["shape"][:1] != (RECORD_BATCH,):
      raise ValueError(f"convert: op {r['name']!r} ({r['kind']}) has shape {r['shape']}: the batch must stay "
                       "on axis 0 of every tensor for the program's batch to be symbolic")
    if r["point"] and point_bits(_at(quant_state, r["name"], "quant state")) != r["bits"]:
      raise ValueError(f"convert: {r['name']} traced with {r['bits']} bits, the quant state says otherwise")

  consts_by_op, scales = jax.jit(functools.partial(_derive, rec.ops, tuple(inputs)))(params, quant_state)
  bits = {f"inputs/{k}": 0 for k in inputs}
  ops = []
  for r in rec.ops:
    attrs = dict(r["attrs"])
    if "shape" in attrs:                    # reshape / broadcast_to targets: the batch becomes symbolic
      attrs["shape"] = (None,) + tuple(attrs["shape"][1:])
    if r["kind"] not in GLUE:
      attrs["in_bits"] = tuple(bits[i] for i in r["inputs"])
    bits[r["name"]] = r["bits"]
    consts = {k: np.asarray(v) for k, v in consts_by_op[r["name"]].items()}
    s_out = scales.get(r["name"])
    if s_out is not None and r["name"] in rec.outputs.values():
      consts["scale"] = np.asarray(s_out, np.float32)   # the host dequantizes outputs with it
    scale = None if s_out is None else float(s_out)
    ops.append(Op(r["name"], r["kind"], tuple(r["inputs"]), (None,) + tuple(r["shape"][1:]), r["dtype"],
                  r["bits"], scale, attrs, consts))
  prog_inputs = {f"inputs/{k}": ((None,) + tuple(v.shape[1:]), str(v.dtype)) for k, v in inputs.items()}
  post = model.postprocess
  meta = {"threshold": float(post.threshold), "mode_num": int(post.mode_num), "postprocess": post.to_dict(),
          "record_batch": RECORD_BATCH}
  prog = Program(prog_inputs, ops, dict(rec.outputs), meta)
  for o in ops:
    d = op_def(o.kind)
    problems = d.attr_problems(o, None) if d.attr_problems else []
    if problems:
      raise ValueError(f"convert: {o.name}: {'; '.join(problems)}")
    if d.joins_codes and o.bits and len({float(scales[i]) for i in o.inputs}) != 1:   # P.join: one scale
      raise ValueError(f"convert: {o.name} concatenates codes of different scales "
                       f"{[float(scales[i]) for i in o.inputs]}: join tensors of one quantization point only")
  for name, bound in prog.accumulator_bounds().items():
    if bound >= 2**31:
      raise ValueError(f"convert: the int32 accumulator of {name} can reach {bound} >= 2^31")
  return prog
