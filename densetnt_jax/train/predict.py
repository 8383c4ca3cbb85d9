"""One map from a stage to its predict function, used by `densetnt_jax.load` (api.Predictor) and the trainer
(every stage's validation):

  float               the float model (params)
  calibration, qat    the fake-quant model (params + the stage's quant state)
  int                 the integer program's interpreter (`densetnt_jax.quant.run_program`)

Each is `predict(params, inputs, quant=None) -> Prediction`; the int stage ignores params and quant.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from densetnt_jax.model.densetnt import Prediction
from densetnt_jax.quant import run_program
from densetnt_jax.train.step import DEFAULT_CHUNK, predict_step
from densetnt_jax.workdir import STAGES

PredictFn = Callable[[Any, dict, Any], Prediction]


@functools.lru_cache(maxsize=16)
def _jit_model_predict(model, chunk_size: int | None, mesh: Mesh | None) -> PredictFn:
  """jit(predict_step), batch-sharded on `mesh` when given; cached per (model, chunk, mesh): every stage and
  every Predictor of one model (calibration, each QAT validation, reloads in a notebook) compiles once."""
  fn = functools.partial(predict_step, model=model, chunk_size=chunk_size)
  if mesh is None:
    return jax.jit(fn)
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P("data")))


def _model_stage(stage, *, model, program, postprocess, chunk_size, mesh) -> PredictFn:
  del program, postprocess
  if model is None:
    raise ValueError(f"stage {stage!r} predicts with the model: stage_predict_fn({stage!r}, model=...)")
  return _jit_model_predict(model, chunk_size, mesh)


def _program_stage(stage, *, model, program, postprocess, chunk_size, mesh) -> PredictFn:
  del model, chunk_size, mesh
  if program is None:
    raise ValueError(f"the {stage} stage predicts with an integer program: program=...")

  def fn(params, inputs, quant=None):
    del params, quant
    return run_program(program, inputs, postprocess=postprocess)

  return fn


STAGE_PREDICT = {"float": _model_stage, "calibration": _model_stage, "qat": _model_stage, "int": _program_stage}
FAKE_QUANT_STAGES = ("calibration", "qat")      # predict with the stage's quant state
assert tuple(STAGE_PREDICT) == STAGES


def stage_predict_fn(stage: str, *, model=None, program=None, postprocess=None,
                     chunk_size: int | None = DEFAULT_CHUNK, mesh: Mesh | None = None) -> PredictFn:
  """The stage's `predict(params, inputs, quant=None) -> Prediction`. Model stages: jit(predict_step) in
  micro-batches of `chunk_size` (None: the whole batch at once), outputs sharded on `mesh`'s data axis when
  given. int: `run_program(program, inputs, postprocess=postprocess)` (None: the program's own settings)."""
  if stage not in STAGE_PREDICT:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  return STAGE_PREDICT[stage](stage, model=model, program=program, postprocess=postprocess,
                              chunk_size=chunk_size, mesh=mesh)


def check_stage_state(stage: str, params=None, quant=None, program=None) -> None:
  """Raises unless (params, quant, program) is what the stage predicts from (the table above)."""
  if stage not in STAGE_PREDICT:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  if STAGE_PREDICT[stage] is _program_stage:
    if program is None:
      raise ValueError(f"the {stage} stage predicts with an integer program: Predictor(..., program=...)")
    return
  if params is None:
    raise ValueError(f"stage {stage!r} needs params")
  if stage in FAKE_QUANT_STAGES and quant is None:
    raise ValueError(f"stage {stage!r} is the fake-quant model: Predictor(..., quant=...) (its quant state)")
  if stage not in FAKE_QUANT_STAGES and quant is not None:
    raise ValueError("the float stage takes no quant state")
