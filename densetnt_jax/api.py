"""Programmatic use: `predictor = densetnt_jax.load(workdir, stage="float")`, then
`predictor.predict(batch)` or `predictor.predict_csv(path)`.

The predictor binds a stage's state (params, quant, program) to the stage's predict function from the one
stage registry (`densetnt_jax.train.predict`, which the trainer's validation uses too); evaluation, inference
visualization and notebooks all go through it.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from densetnt_jax.data.loader import ArgoverseDataset, open_split
from densetnt_jax.data.scene import Scene, model_inputs, to_city_frame_batch
from densetnt_jax.data.vectorize import vectorize_csv
from densetnt_jax.model import build_model
from densetnt_jax.postprocess import PostprocessSettings
from densetnt_jax.train.checkpoint import load_config, restore_stage
from densetnt_jax.train.predict import check_stage_state, stage_predict_fn
from densetnt_jax.workdir import STAGES, load_program


class Predictor:
  """A stage's jitted predict function. Outputs are numpy dicts: `trajs_BxKxFx2` and `goals_BxKx2`
  (agent frame), `trajs_city_BxKxFx2` (city frame), `probs_BxK`, `goal_logprobs_BxG` (the sparse candidates),
  `topk_goals_BxNx2` / `topk_logprobs_BxN` (the top goals of the sparse + dense goal set, for the heatmap).

  float: `params`; calibration and qat: `params` and `quant` (fake-quant); int: `program` (integer)."""

  def __init__(self, config, params=None, stage: str = "float", *, quant=None, program=None):
    check_stage_state(stage, params, quant, program)
    self.config, self.params, self.quant, self.program, self.stage = config, params, quant, program, stage
    self.model = build_model(config)
    # The whole batch in one call (no micro-batches); the int stage's host epilogue follows the config.
    predict = stage_predict_fn(stage, model=self.model, program=program, chunk_size=None,
                               postprocess=PostprocessSettings.from_config(config.postprocess))
    self._predict = lambda x: predict(self.params, x, self.quant)

  def predict(self, batch: Scene) -> dict[str, np.ndarray]:
    """Predicts a batch (a Scene with a leading batch axis, e.g. from `ArgoverseDataset.batches`)."""
    pred = jax.device_get(self._predict(model_inputs(batch)))
    out = {"trajs_BxKxFx2": np.asarray(pred.trajs_BxKxFx2), "probs_BxK": np.asarray(pred.probs_BxK),
           "goals_BxKx2": np.asarray(pred.goals_BxKx2), "goal_logprobs_BxG": np.asarray(pred.goal_logprobs_BxG),
           "topk_goals_BxNx2": np.asarray(pred.topk_goals_BxNx2),
           "topk_logprobs_BxN": np.asarray(pred.topk_logprobs_BxN)}
    out["trajs_city_BxKxFx2"] = to_city_frame_batch(out["trajs_BxKxFx2"], batch.origin_2, batch.rotation_2x2)
    return out

  def predict_scene(self, scene: Scene) -> dict[str, np.ndarray]:
    """One scene (no batch axis) -> outputs without the batch axis (`trajs_KxFx2`, `probs_K`, ...)."""
    batch = Scene(*(np.asarray(a)[None] for a in scene))
    return {k.replace("Bx", "", 1): v[0] for k, v in self.predict(batch).items()}

  def predict_csv(self, path, map_dir=None) -> dict[str, np.ndarray]:
    """One raw forecasting CSV (20 or 50 steps; the first 20 are observed); `map_dir` defaults to the
    `map_files/` of the CSV's Argoverse root (CSV in ROOT/SPLIT/data/)."""
    if map_dir is None:
      map_dir = os.path.join(os.path.dirname(os.path.abspath(str(path))), "..", "..", "map_files")
    scene = vectorize_csv(path, map_dir, self.config.data)
    out = self.predict_scene(scene)
    out["scene"] = scene
    return out

  def dataset(self, split: str | None = None) -> ArgoverseDataset:
    """The config's packed split (default: val) with this model's shapes."""
    return open_split(self.config.data, split or self.config.data.val_split)


def load(workdir, stage: str = "float", *, which: str = "best", config=None) -> Predictor:
  """The predictor of a training workdir's stage; `config` defaults to the run's saved config.json.

  `which="best"` (lowest val minFDE_k6) falls back to the latest checkpoint if the run was never validated
  (float, qat); a best checkpoint that is there but does not restore raises `CheckpointError` (its path, step
  and what to do) rather than quietly predicting with another state. The int stage loads
  `{workdir}/int/program` (`which` does not apply).
  """
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  config = config if config is not None else load_config(workdir)
  if stage == "int":
    return Predictor(config, stage="int", program=load_program(workdir))
  try:
    params, quant, _ = restore_stage(workdir, stage=stage, which=which)
  except FileNotFoundError:
    if which != "best" or stage == "calibration":
      raise
    params, quant, _ = restore_stage(workdir, stage=stage, which="latest")
  return Predictor(config, params, stage, quant=quant)
