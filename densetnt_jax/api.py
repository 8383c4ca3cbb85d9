"""Programmatic use: `predictor = densetnt_jax.load(workdir, stage="float")`, then
`predictor.predict(batch)` or `predictor.predict_csv(path)`.

The predictor is the one place that maps a stage to its prediction function; evaluation, inference
visualization and notebooks all go through it.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.scene import Scene, model_inputs, to_city_frame_batch
from densetnt_jax.data.vectorize import vectorize_csv


class Predictor:
  """A trained stage's jitted predict function. Outputs are numpy dicts: `trajs_BxKxFx2` and `goals_BxKx2`
  (agent frame), `trajs_city_BxKxFx2` (city frame), `probs_BxK`, `goal_logprobs_BxG`."""

  def __init__(self, config, params, stage: str = "float"):
    from densetnt_jax.model import DenseTNT, build_model
    self.config, self.params, self.stage = config, params, stage
    if stage != "float":
      raise NotImplementedError(f"stage {stage!r}: only 'float' is available so far")
    self.model = build_model(config)
    self._predict = jax.jit(lambda p, x: self.model.apply({"params": p}, x, method=DenseTNT.predict))

  def predict(self, batch: Scene) -> dict[str, np.ndarray]:
    """Predicts a batch (a Scene with a leading batch axis, e.g. from `ArgoverseDataset.batches`)."""
    pred = jax.device_get(self._predict(self.params, model_inputs(batch)))
    out = {"trajs_BxKxFx2": np.asarray(pred.trajs_BxKxFx2), "probs_BxK": np.asarray(pred.probs_BxK),
           "goals_BxKx2": np.asarray(pred.goals_BxKx2), "goal_logprobs_BxG": np.asarray(pred.goal_logprobs_BxG)}
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
    from densetnt_jax.data.pack import split_lmdb_path
    return ArgoverseDataset(split_lmdb_path(self.config.data.lmdb_dir, split or self.config.data.val_split),
                            self.config.data)


def load(workdir, stage: str = "float", *, which: str = "best", config=None) -> Predictor:
  """The predictor of a training workdir's stage; `config` defaults to the run's saved config.json.

  `which="best"` (lowest val minFDE_k6) falls back to the latest checkpoint if the run was never validated.
  """
  from densetnt_jax.train.checkpoint import load_config, restore_params
  config = config if config is not None else load_config(workdir)
  try:
    params = restore_params(workdir, stage=stage, which=which)
  except FileNotFoundError:
    if which != "best":
      raise
    params = restore_params(workdir, stage=stage, which="latest")
  return Predictor(config, params, stage)
