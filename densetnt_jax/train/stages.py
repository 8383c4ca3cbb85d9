"""The stages after float (HAT's `--stage calibration`, `--stage qat`, then the fixed-point model), each reading
the previous stage's best checkpoint from the same workdir:

  float        -> {workdir}/float/best         random init, `loop.train_and_evaluate`
  calibration  -> {workdir}/calibration/best/0 float params + activation scales from `config.quant.calibration_batches`
                                               train batches (`densetnt_jax.quant.calibrate`), then a fake-quant eval
  qat          -> {workdir}/qat/best           the float loop on the fake-quant model (`config.qat` optimizer)
  int          -> {workdir}/int/program        `densetnt_jax.quant.convert` of the qat best, evaluated by the
                                               integer interpreter

Every stage logs its val metrics to `{workdir}/{stage}/metrics.jsonl` under the float stage's names
(`val/minFDE_k6`, ...). `run_stage` is what `bin/train.py --stage=...` calls.
"""
from __future__ import annotations

import itertools
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from densetnt_jax.data.loader import open_split
from densetnt_jax.data.scene import model_inputs
from densetnt_jax.model import build_model
from densetnt_jax.quant import calibrate, convert, init_quant_state
from densetnt_jax.train import checkpoint as ckpt
from densetnt_jax.train import loop
from densetnt_jax.train.predict import stage_predict_fn
from densetnt_jax.workdir import STAGE_INPUT, STAGES, checkpoint_dir, program_dir


def _fresh_log(stage_dir: str, tensorboard: bool) -> loop.MetricsLog:
  """A new metrics.jsonl for a stage that runs in one go (a re-run replaces the old log)."""
  if jax.process_index() == 0 and os.path.exists(os.path.join(stage_dir, "metrics.jsonl")):
    os.remove(os.path.join(stage_dir, "metrics.jsonl"))
  return loop.MetricsLog(stage_dir, tensorboard, resume_step=0)


def _warn_if_downstream(workdir: str, stage: str) -> None:
  later = [s for s, prev in STAGE_INPUT.items() if prev == stage]
  for s in later:
    if os.path.isdir(os.path.join(workdir, s)):
      logging.warning("%s/%s exists and was made from the previous %s result; re-run --stage=%s (in a new "
                      "workdir or after removing %s/%s) to use the new one", workdir, s, stage, s, workdir, s)


def calibration_batches(config, dataset, num: int | None = None):
  """The first `config.quant.calibration_batches` shuffled train batches (epoch 0 of the float order) of
  `config.quant.calibration_batch_size` scenes (default: the train batch size), as model-input dicts."""
  q = config.quant
  num = int(q.calibration_batches) if num is None else num
  size = int(q.get("calibration_batch_size", 0) or config.train.batch_size)
  batches = dataset.batches(size, shuffle=True, seed=config.seed, epoch=0, drop_remainder=True,
                            prefetch=config.data.prefetch)
  return (model_inputs(scene) for scene in itertools.islice(batches, num))


def evaluate_stage(config, stage: str, params, quant=None, *, model=None, program=None) -> dict[str, float]:
  """val metrics (`val/...`) of the stage's predict function (`stage_predict_fn`), data parallel on the mesh
  as in training."""
  t = config.train
  mesh = loop.make_mesh()
  predict_fn = stage_predict_fn(stage, model=model, program=program, mesh=mesh)
  val_ds = open_split(config.data, config.data.val_split)
  params = loop.replicate(params, mesh) if params is not None else None
  quant = loop.replicate(quant, mesh) if quant is not None else None
  val = loop.evaluate_split(predict_fn, params, val_ds, config.eval, t.eval_batch_size, mesh,
                            max_batches=t.eval_max_batches, prefetch=config.data.prefetch, quant=quant)
  return {f"val/{k}": v for k, v in val.items()}


def _start_one_shot(config: ml_collections.ConfigDict, workdir, stage: str, split: str):
  """The start both one-shot stages share: the previous stage's output, the checked (and saved) config, the
  split it reads, the model. -> (absolute workdir, params, quant, dataset, model)."""
  workdir = os.path.abspath(str(workdir))
  params, quant = ckpt.load_stage_input(workdir, stage)
  loop.check_batch_sizes(config.train)
  dataset = open_split(config.data, split)
  if jax.process_index() == 0:
    ckpt.save_config(config, workdir)
  return workdir, params, quant, dataset, build_model(config)


def _evaluate_and_log(config, workdir: str, stage: str, timing: dict, params, quant=None, **predict_from) -> dict:
  """val metrics of a one-shot stage, logged at step 0 beside its timing to {workdir}/{stage}/metrics.jsonl."""
  log = _fresh_log(os.path.join(workdir, stage), bool(config.train.tensorboard))
  try:
    val = evaluate_stage(config, stage, params, quant, **predict_from)
    log.write(0, {**timing, **val})
  finally:
    log.close()
  return {"step": 0, **timing, **val}


def run_calibration(config: ml_collections.ConfigDict, workdir) -> dict:
  """Calibrates the float best on train batches, saves {workdir}/calibration/best/0, evaluates it (fake-quant)."""
  workdir, params, _, train_ds, model = _start_one_shot(config, workdir, "calibration", config.data.train_split)
  start = time.perf_counter()
  quant = init_quant_state(model, params, model_inputs(train_ds.make_batch([0])), config.quant)
  quant = calibrate(model, params, quant, calibration_batches(config, train_ds), config.quant)
  quant = jax.device_get(quant)
  seconds = time.perf_counter() - start

  best_dir = checkpoint_dir(workdir, "calibration", "best")
  if jax.process_index() == 0 and os.path.isdir(best_dir):
    shutil.rmtree(best_dir)                # calibration is deterministic: a re-run replaces it
  _warn_if_downstream(workdir, "calibration")
  meta = {"step": 0, "stage": "calibration", "calibration_batches": int(config.quant.calibration_batches),
          "observer": str(config.quant.get("observer", ""))}
  manager = ckpt.single_manager(best_dir)
  try:
    ckpt.save(manager, 0, params=params, quant=quant, meta=meta)
    manager.wait_until_finished()
  finally:
    manager.close()
  return _evaluate_and_log(config, workdir, "calibration", {"calibration/seconds": seconds}, params, quant,
                           model=model)


def run_int(config: ml_collections.ConfigDict, workdir) -> dict:
  """Converts the qat best to an integer program ({workdir}/int/program) and evaluates it (interpreter)."""
  workdir, params, quant, val_ds, model = _start_one_shot(config, workdir, "int", config.data.val_split)
  start = time.perf_counter()
  example = model_inputs(val_ds.make_batch(np.arange(min(len(val_ds), config.train.eval_batch_size))))
  program = convert(model, params, quant, example, config)
  seconds = time.perf_counter() - start
  path = program_dir(workdir)
  if jax.process_index() == 0:
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    program.save(path)
  result = _evaluate_and_log(config, workdir, "int", {"int/convert_seconds": seconds}, None, program=program)
  return dict(result, program=path)


def run_stage(config: ml_collections.ConfigDict, workdir, stage: str) -> dict:
  """One stage of the pipeline (what `bin/train.py --stage=STAGE` runs); returns its final metrics."""
  if stage in loop.TRAINED_STAGES:
    return loop.train_and_evaluate(config, workdir, stage=stage)
  if stage == "calibration":
    return run_calibration(config, workdir)
  if stage == "int":
    return run_int(config, workdir)
  raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
