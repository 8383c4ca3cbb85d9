"""Inference visualization: one PNG per scene with the predictions, their probabilities and the goal heatmap."""
from __future__ import annotations

import os

import numpy as np
from tqdm.auto import tqdm

from densetnt_jax.data.scene import Scene, decode_city
from densetnt_jax.eval.visualize import save_scene_png


def render_predictions(predictor, dataset, save_path: str, *, num: int = 10, batch_size: int = 16,
                       progress: bool = True) -> list[str]:
  """Predicts the first `num` scenes of `dataset` and writes `save_path/<seq_id>.png`; returns the paths."""
  os.makedirs(save_path, exist_ok=True)
  paths = []
  with tqdm(total=min(num, len(dataset)), desc="infer", disable=not progress, unit="scene") as bar:
    for batch in dataset.batches(batch_size):
      pred = predictor.predict(batch)
      for b in np.flatnonzero(batch.seq_id >= 0):
        if len(paths) >= num:
          return paths
        scene = Scene(*(np.asarray(a)[b] for a in batch))
        fde = np.linalg.norm(pred["trajs_BxKxFx2"][b, :, -1] - scene.future_Fx2[-1], axis=-1).min()
        title = (f"seq {int(scene.seq_id)} ({decode_city(scene.city_code)}), {predictor.stage}"
                 + (f": minFDE_k6 {fde:.2f} m" if scene.has_future else ""))
        path = os.path.join(save_path, f"{int(scene.seq_id)}.png")
        save_scene_png(path, scene, prediction_trajs_KxFx2=pred["trajs_BxKxFx2"][b],
                       prediction_probs_K=pred["probs_BxK"][b], goal_scores_G=pred["goal_logprobs_BxG"][b],
                       title=title)
        paths.append(path)
        bar.update(1)
  return paths
