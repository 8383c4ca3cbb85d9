"""QTensor, the activation of the quantized modes, and the quantization points the primitives attach to their
modules: observers (calibration), frozen scales (fake-quant), per-op codes (`intermediates`) and the recorder
the converter reads the integer program from. The model code is the same in every mode; what `model.apply`
is given picks the mode:

  float        no `quant` collection: primitives see plain arrays (the float path, untouched).
  calibration  `quant` mutable: every op runs in float and each quantization point folds its output, valid
               entries only, into its observer. Activations travel as QTensor(value, scale=None, valid).
  fake-quant   `quant` given, not mutable: activation scales frozen, per-channel weight scales recomputed from
               the current params on every call; activations travel as QTensor(value = codes * scale, scale).
  record       fake-quant traced inside `recording()`: every op also appends itself to a Recorder (`convert`).

The `quant` collection holds one entry per quantization point, at the path of the module whose output it is:
  quant/<module path>/qmax      int8 127 or int16 32767: its dtype is the point's code width (static under jit)
  quant/<module path>/scale     float32 scalar: the activation scale (1.0 until calibrated)
  quant/<module path>/observer  {count, min, max, absmax, hist_exp, hist}: an `observers.ObserverState`
Ops whose output keeps its input's scale (relu, masked max, glue) have no entry.
"""
from __future__ import annotations

import contextlib
import contextvars
import fnmatch
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from densetnt_jax.quant import arith as A
from densetnt_jax.quant import observers as O


@jax.tree_util.register_pytree_node_class
class QTensor:
  """An activation in a quantized mode. value: float32 (fake-quant: exactly codes * scale); scale: float32
  scalar (None while calibrating, and for raw inputs, masks and indices while recording); valid: bool of
  value's shape, the entries observers see (calibration only, None = all); bits: code width (0 = not a code
  tensor); name: the tensor's name in the integer program (the producing module's path)."""

  def __init__(self, value, scale=None, valid=None, bits: int = 0, name: str = ""):
    self.value, self.scale, self.valid, self.bits, self.name = value, scale, valid, bits, name

  def tree_flatten(self):
    return (self.value, self.scale, self.valid), (self.bits, self.name)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*children, *aux)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.value.shape)

  @property
  def ndim(self) -> int:
    return len(self.value.shape)

  @property
  def dtype(self):
    return self.value.dtype

  def __repr__(self):
    return f"QTensor({self.name!r}, shape={self.shape}, bits={self.bits})"


def is_q(x: Any) -> bool:
  """A quantized activation (calibration or fake-quant), as opposed to a plain array or a recorded raw tensor."""
  return isinstance(x, QTensor) and x.bits > 0


def calibrating(x: Any) -> bool:
  return is_q(x) and x.scale is None


def raw(x: Any) -> Any:
  """The array inside (masks and indices are QTensors only while recording)."""
  return x.value if isinstance(x, QTensor) else x


def full_valid(x: QTensor) -> jax.Array:
  return jnp.ones(x.shape, bool) if x.valid is None else jnp.broadcast_to(x.valid, x.shape)


def rows(valid: jax.Array | None) -> jax.Array | None:
  """Row validity (any over the last axis, kept): what survives an op that mixes the last axis."""
  return None if valid is None else jnp.any(valid, axis=-1, keepdims=True)


# -------------------------------------------------------------------------------------------- recorder
class Recorder:
  """Ops appended in trace order while the fake-quant model runs under `recording()` (e.g. in jax.eval_shape).

  Each op: {name, kind, inputs, attrs, shape, dtype, bits, point}; `point` says the op owns a quantization
  point (its output scale is quant/<name>/scale; otherwise it keeps its first input's scale)."""

  def __init__(self):
    self.ops: list[dict] = []
    self.outputs: dict[str, str] = {}
    self._names: set[str] = set()

  def fresh(self, base: str) -> str:
    name, i = base, 1
    while name in self._names:
      i += 1
      name = f"{base}{i}"
    return name

  def add(self, kind: str, name: str, inputs: Sequence[Any], out: Any, attrs: dict | None = None,
          point: bool = False) -> None:
    if name in self._names:
      raise ValueError(f"record: tensor {name!r} produced twice (a module called twice in one trace?); the "
                       "integer program needs one name per tensor")
    names = []
    for x in inputs:
      if not isinstance(x, QTensor) or not x.name or x.name not in self._names:
        raise ValueError(f"record: op {name!r} ({kind}) reads an array that is not a program tensor: glue must "
                         "go through the primitives' helpers (P.reshape, P.index, ...)")
      names.append(x.name)
    self._names.add(name)
    value = raw(out)
    self.ops.append(dict(name=name, kind=kind, inputs=names, attrs=dict(attrs or {}), shape=tuple(value.shape),
                         dtype=str(value.dtype), bits=out.bits if isinstance(out, QTensor) else 0, point=point))

  def add_input(self, name: str, value: Any) -> QTensor:
    self._names.add(name)
    return QTensor(value, None, None, 0, name)

  def output(self, role: str, x: QTensor) -> None:
    if not isinstance(x, QTensor) or x.name not in self._names:
      raise ValueError(f"record: output {role!r} is not a program tensor")
    self.outputs[role] = x.name


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("densetnt_recorder", default=None)
_CALL_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("densetnt_call_tag", default="")
_INIT_BITS: contextvars.ContextVar[Callable[[str], int] | None] = contextvars.ContextVar("densetnt_init_bits",
                                                                                         default=None)


@contextlib.contextmanager
def _set(var: contextvars.ContextVar, value):
  """`var` holds `value` inside the block (yielded), its previous value after."""
  token = var.set(value)
  try:
    yield value
  finally:
    var.reset(token)


def recording():
  """Primitives append their ops to the yielded Recorder while the (fake-quant) model is traced inside."""
  return _set(_RECORDER, Recorder())


def recorder() -> Recorder | None:
  return _RECORDER.get()


def call_tag(tag: str):
  """Inside: the tensors modules produce are named `<module path>@<tag>`. For a module called a second time on
  other inputs (the goal scorer on the dense goals): its ops get names of their own in the program and their
  codes an entry of their own in `intermediates`, while the quantization point (scale, observer, params)
  stays the module's, shared by both calls."""
  return _set(_CALL_TAG, tag)


def module_path(name: str) -> str:
  """The module path of a module op's tensor name (drops a `call_tag` suffix): where its params and quant
  state live."""
  return name.split("@", 1)[0]


def bits_by_pattern(quant_config) -> Callable[[str], int]:
  """Code width of the point at a module path: 16 if the path matches a `quant_config.int16` glob, else `bits`."""
  patterns = tuple(quant_config.get("int16", ()) or ())
  default = int(quant_config.get("bits", 8))
  if default not in (8, 16):
    raise ValueError(f"config.quant.bits must be 8 or 16; got {default}")
  return lambda name: 16 if any(fnmatch.fnmatchcase(name, p) for p in patterns) else default


def creating_points(bits_of: Callable[[str], int]):
  """Inside: a quant-mode apply creates missing points with `bits_of(path)` bits (init_quant_state only)."""
  return _set(_INIT_BITS, bits_of)


def new_point(bits: int) -> dict:
  """A fresh point: qmax (its dtype says the bits), scale 1.0, an empty observer."""
  return {"qmax": jnp.asarray(A.qrange(bits)[1], jnp.int8 if bits == 8 else jnp.int16),
          "scale": jnp.float32(1.0), "observer": O.init_state()._asdict()}


def in_quant_mode(m: nn.Module) -> bool:
  """For ops that meet the raw inputs (input quantization points): is a quant state given or being built?"""
  return m.has_variable("quant", "qmax") or _INIT_BITS.get() is not None


# ----------------------------------------------------------------------------------------- points
def path(m: nn.Module) -> str:
  """The name of the tensor module m produces: its path, with the current `call_tag` if any."""
  tag = _CALL_TAG.get()
  return "/".join(m.path) + (f"@{tag}" if tag else "")


class Point:
  """The quantization point of a module's output: its `quant` variables, code width and scale."""

  def __init__(self, m: nn.Module):
    self.m, self.name = m, path(m)
    if not m.has_variable("quant", "qmax"):
      bits_of = _INIT_BITS.get()
      if bits_of is None or not m.is_mutable_collection("quant"):
        raise KeyError(f"the quant state has no entry for layer {self.name!r}: build it with "
                       "densetnt_jax.quant.init_quant_state for this model (same config.model)")
      for k, v in new_point(bits_of(module_path(self.name))).items():
        m.variable("quant", k, lambda v=v: v)
    self.bits = jnp.iinfo(m.get_variable("quant", "qmax").dtype).bits

  @property
  def scale(self) -> jax.Array:
    return self.m.get_variable("quant", "scale")

  def observed(self, y: jax.Array, valid: jax.Array | None, extra: tuple | None = None) -> QTensor:
    """Calibration: fold y's valid entries into the observer (not while the state is being created);
    `extra` = (value, flag): one more sample, observed where flag."""
    valid = jnp.ones(y.shape, bool) if valid is None else jnp.broadcast_to(valid, y.shape)
    if _INIT_BITS.get() is None:
      st = O.ObserverState(**self.m.get_variable("quant", "observer"))
      values, mask = y.reshape(-1), valid.reshape(-1)
      if extra is not None:
        values = jnp.concatenate([values, jnp.reshape(extra[0], (1,)).astype(values.dtype)])
        mask = jnp.concatenate([mask, jnp.reshape(extra[1], (1,))])
      self.m.put_variable("quant", "observer", O.observe(st, values, mask)._asdict())
    return QTensor(y, None, valid, self.bits, self.name)

  def emit(self, kind: str, y: jax.Array, inputs: Sequence[Any], attrs: dict | None = None) -> QTensor:
    return emit(self.m, kind, y, self.scale, self.bits, inputs, attrs, point=True)


def emit(m: nn.Module, kind: str, y: jax.Array, scale, bits: int, inputs: Sequence[Any],
         attrs: dict | None = None, point: bool = False) -> QTensor:
  """Fake-quant output of module m: sow its codes (when `intermediates` is mutable) and record the op."""
  out = QTensor(y, scale, None, bits, path(m))
  if m.is_mutable_collection("intermediates"):
    tag = _CALL_TAG.get()
    m.sow("intermediates", f"codes@{tag}" if tag else "codes", A.quantize(y, scale, bits),
          reduce_fn=lambda _, new: new, init_fn=lambda: None)
  rec = recorder()
  if rec is not None:
    rec.add(kind, out.name, inputs, out, attrs, point)
  return out


def passed(m: nn.Module, y: jax.Array, x: QTensor, valid: jax.Array | None) -> QTensor:
  """Calibration output of an op that keeps its input's scale (no observer of its own)."""
  return QTensor(y, None, None if valid is None else jnp.broadcast_to(valid, y.shape), x.bits, path(m))


def codes_by_name(intermediates: dict) -> dict[str, jax.Array]:
  """{tensor name: int32 codes} from a fake-quant apply's `intermediates` (names = the program's names)."""
  out = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      if hasattr(v, "items"):
        walk(v, prefix + (k,))
      elif k == "codes" or k.startswith("codes@"):
        out["/".join(prefix) + k[len("codes"):]] = v

  walk(dict(intermediates), ())
  return out
