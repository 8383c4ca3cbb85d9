"""The `quant` collection as pure transforms: create it (`init_quant_state`), fill its observers from a few
batches and freeze the activation scales (`calibrate`). Both run the model's predict path, so the completion's
points see the top-k goals the deployed program sees (the train path's ground-truth endpoint is quantized on
the goal candidates' scale)."""
from __future__ import annotations

import functools
import itertools
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from densetnt_jax.data.scene import MODEL_INPUT_FIELDS
from densetnt_jax.quant import observers as O
from densetnt_jax.quant import qtensor as Q


def model_inputs(batch: dict) -> dict[str, jax.Array]:
  """The model-input fields of a batch (labels and extra fields dropped), as arrays."""
  missing = [k for k in MODEL_INPUT_FIELDS if k not in batch]
  if missing:
    raise KeyError(f"batch lacks model inputs {missing}; expected the fields of data.scene.MODEL_INPUT_FIELDS")
  return {k: jnp.asarray(batch[k]) for k in MODEL_INPUT_FIELDS}


def _points(tree: Any, prefix: tuple = ()):
  """(path, point dict) of every quantization point in a quant state."""
  if "qmax" in tree:
    yield "/".join(prefix), tree
    return
  for k, v in tree.items():
    yield from _points(v, prefix + (k,))


def _map_points(fn, tree: Any, prefix: tuple = ()) -> dict:
  if "qmax" in tree:
    return fn("/".join(prefix), dict(tree))
  return {k: _map_points(fn, v, prefix + (k,)) for k, v in tree.items()}


def point_bits(point: dict) -> int:
  return jnp.iinfo(jnp.asarray(point["qmax"]).dtype).bits


def init_quant_state(model, params, example_inputs: dict, quant_config) -> dict:
  """The `quant` collection of `model`: one point per op output that has a scale of its own, code width from
  `quant_config` (`bits`, 16 where a path matches an `int16` glob), scale 1.0, empty observers. Shapes only
  are traced (jax.eval_shape): no forward pass runs."""
  bits_of = Q.bits_by_pattern(quant_config)
  inputs = model_inputs(example_inputs)

  def f(params, inputs):
    return model.apply({"params": params}, inputs, method="predict", mutable=["quant"])[1]["quant"]

  with Q.creating_points(bits_of):
    shapes = jax.eval_shape(f, params, inputs)
  return _map_points(lambda name, pt: Q.new_point(jnp.iinfo(pt["qmax"].dtype).bits), shapes)


@functools.partial(jax.jit, static_argnames=("model",))
def observe_batch(params, quant_state: dict, inputs: dict, *, model) -> dict:
  """One calibration step: the float forward with every point's observer updated (valid entries only)."""
  _, state = model.apply({"params": params, "quant": quant_state}, inputs, method="predict", mutable=["quant"])
  return state["quant"]


def freeze_scales(quant_state: dict, quant_config) -> dict:
  """Every point's scale from its observer (`quant_config.observer`: mse | minmax | percentile)."""
  method = str(quant_config.get("observer", "mse"))
  if method not in O.METHODS:
    raise ValueError(f"config.quant.observer={method!r}; expected one of {O.METHODS}")
  pct = float(quant_config.get("percentile", 99.99))

  def fix(name, pt):
    st = O.ObserverState(**pt["observer"])
    pt["scale"] = O.scale_from(st, bits=point_bits(pt), method=method, percentile=pct)
    return pt

  return _map_points(fix, quant_state)


def calibrate(model, params, quant_state: dict, batches: Iterable[dict], quant_config) -> dict:
  """Observe the first `quant_config.calibration_batches` batches, then freeze the scales. Pure: the same
  params, state and batches give the same state (one jitted step per batch, no randomness)."""
  n = int(quant_config.get("calibration_batches", 10))
  seen = 0
  for batch in itertools.islice(batches, n):
    quant_state = observe_batch(params, quant_state, model_inputs(batch), model=model)
    seen += 1
  if seen == 0:
    raise ValueError("calibrate: no batches given")
  return freeze_scales(quant_state, quant_config)


def scales(quant_state: dict) -> dict[str, tuple[float, int]]:
  """{point name: (scale, bits)}, for printing and the converter."""
  return {name: (float(pt["scale"]), point_bits(pt)) for name, pt in _points(quant_state)}
