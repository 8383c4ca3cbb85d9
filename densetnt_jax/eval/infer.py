"""Inference pictures: one PNG per scene, a stage comparison per scene, a contact sheet of N scenes.

Every function takes `Predictor`s (densetnt_jax.api) and a packed dataset, so `bin/infer.py`, `make demo`,
`make real` and a notebook draw the same pictures. Scenes are chosen by `select_scenes`: the first N, N at
random (by seed) or the worst N by the first predictor's minFDE_k6.
"""
from __future__ import annotations

import os

import numpy as np

from densetnt_jax.api import load
from densetnt_jax.data.scene import Scene
from densetnt_jax.eval.curves import plot_metrics
from densetnt_jax.eval.visualize import (contact_sheet_figure, prediction_kwargs, save_figure, scene_figure,
                                         stage_comparison_figure)
from densetnt_jax.metrics import per_sequence_errors
from densetnt_jax.progress import progress_bar

SELECTIONS = ("first", "worst", "random")


def _row(pred: dict, b: int) -> dict:
  """One scene's prediction from a batch's dict: keys without the `Bx` (as `Predictor.predict_scene`)."""
  return {k.replace("Bx", "", 1): np.asarray(v)[b] for k, v in pred.items()}


def _padded_batch(dataset, rows, batch_size: int):
  """The dataset rows as one batch padded with empty rows to `batch_size` (one compiled shape)."""
  return dataset.make_batch(np.concatenate([rows, -np.ones(batch_size - len(rows), np.int64)]))


def scene_errors(predictor, dataset, *, batch_size: int = 16, max_scenes: int = -1, miss_threshold: float = 2.0,
                 progress: bool = True) -> dict[str, np.ndarray]:
  """{'index_N', 'seq_id_N', 'fde_N', 'miss_N'}: the predictor's K=6 minFDE of each scene with a GT future
  (dataset order; the first `max_scenes` scenes when > 0), scored by `metrics.per_sequence_errors`."""
  n = len(dataset) if max_scenes <= 0 else min(max_scenes, len(dataset))
  out = {"index_N": [], "seq_id_N": [], "fde_N": [], "miss_N": []}
  order = np.arange(n)
  with progress_bar(total=n, desc=f"score {predictor.stage}", disable=not progress, unit="scene") as bar:
    for start in range(0, n, batch_size):
      rows = order[start:start + batch_size]
      batch = _padded_batch(dataset, rows, batch_size)
      pred = predictor.predict(batch)
      scored = np.flatnonzero(np.asarray(batch.has_future)[:len(rows)])
      if len(scored):
        e = per_sequence_errors(pred["trajs_BxKxFx2"][scored], pred["probs_BxK"][scored],
                                np.asarray(batch.future_Fx2)[scored], miss_threshold=miss_threshold, k=6)
        out["index_N"].append(rows[scored])
        out["seq_id_N"].append(np.asarray(batch.seq_id)[scored])
        out["fde_N"].append(e["fde_N"])
        out["miss_N"].append(e["miss_N"])
      bar.update(len(rows))
  return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def select_scenes(predictor, dataset, num: int, *, how: str = "first", seed: int = 0, batch_size: int = 16,
                  max_scenes: int = -1, progress: bool = True) -> np.ndarray:
  """Dataset indices of `num` scenes: the first ones, `num` at random (seeded), or the `num` with the largest
  minFDE_k6 of `predictor` (worst first; scoring predicts the first `max_scenes`, all when <= 0)."""
  if how not in SELECTIONS:
    raise ValueError(f"unknown selection {how!r}; expected one of {SELECTIONS}")
  total = len(dataset) if max_scenes <= 0 else min(max_scenes, len(dataset))
  num = min(num, total)
  if how == "first":
    return np.arange(num)
  if how == "random":
    return np.sort(np.random.default_rng(seed).choice(total, size=num, replace=False))
  errors = scene_errors(predictor, dataset, batch_size=batch_size, max_scenes=total, progress=progress)
  worst = np.argsort(-errors["fde_N"], kind="stable")[:num]
  return errors["index_N"][worst].astype(np.int64)


def predict_indices(predictor, dataset, indices, *, batch_size: int = 16) -> tuple[list, list[dict]]:
  """(scenes, one prediction dict per scene) for dataset `indices`, in batches of `batch_size` padded with
  empty rows (one compiled shape, the same as `scene_errors`)."""
  scenes, preds = [], []
  indices = np.asarray(indices, np.int64)
  for start in range(0, len(indices), batch_size):
    rows = indices[start:start + batch_size]
    batch = _padded_batch(dataset, rows, batch_size)
    pred = predictor.predict(batch)
    for b in range(len(rows)):
      scenes.append(Scene(*(np.asarray(a)[b] for a in batch)))
      preds.append(_row(pred, b))
  return scenes, preds


def render_predictions(predictor, dataset, save_path: str, *, num: int = 10, batch_size: int = 16,
                       select: str = "first", seed: int = 0, view: str = "fit", dpi: int = 100, indices=None,
                       progress: bool = True) -> list[str]:
  """Writes `save_path/<seq_id>.png` (`visualize.scene_figure`) for `num` scenes chosen by `select` (or the
  dataset `indices` given); returns the paths."""
  if indices is None:
    indices = select_scenes(predictor, dataset, num, how=select, seed=seed, batch_size=batch_size,
                            progress=progress)
  scenes, preds = predict_indices(predictor, dataset, indices, batch_size=batch_size)
  paths = []
  for scene, pred in progress_bar(list(zip(scenes, preds)), desc="draw", disable=not progress, unit="scene"):
    fig = scene_figure(scene, **prediction_kwargs(pred), stage=predictor.stage, view=view, dpi=dpi)
    paths.append(save_figure(fig, os.path.join(save_path, f"{int(scene.seq_id)}.png")))
  return paths


def render_stage_comparison(predictors: list, dataset, save_path: str, *, num: int = 4, batch_size: int = 16,
                            select: str = "first", seed: int = 0, view: str = "fit", dpi: int = 100, indices=None,
                            progress: bool = True) -> list[str]:
  """For `num` scenes (chosen by `select` with the first predictor, or the dataset `indices` given),
  `save_path/<seq_id>_<s1>-<s2>.png`: the scene once per predictor's stage, side by side on shared axes;
  returns the paths."""
  if not predictors:
    raise ValueError("render_stage_comparison needs at least one predictor")
  if indices is None:
    indices = select_scenes(predictors[0], dataset, num, how=select, seed=seed, batch_size=batch_size,
                            progress=progress)
  per_stage = {}
  for p in progress_bar(predictors, desc="predict stages", disable=not progress, unit="stage"):
    scenes, per_stage[p.stage] = predict_indices(p, dataset, indices, batch_size=batch_size)
  tag = "-".join(per_stage)
  paths = []
  for i, scene in enumerate(progress_bar(scenes, desc="draw", disable=not progress, unit="scene")):
    fig = stage_comparison_figure(scene, {s: preds[i] for s, preds in per_stage.items()}, view=view, dpi=dpi)
    paths.append(save_figure(fig, os.path.join(save_path, f"{int(scene.seq_id)}_{tag}.png")))
  return paths


def render_contact_sheet(predictor, dataset, path: str, *, num: int = 9, batch_size: int = 16,
                         select: str = "worst", seed: int = 0, view: str = "fit", dpi: int = 90, indices=None,
                         progress: bool = True) -> str:
  """One PNG at `path` with `num` scenes in a grid (`visualize.contact_sheet_figure`), e.g. the worst by
  minFDE_k6 (`select`; or the dataset `indices` given, described as `select`); returns the path."""
  if indices is None:
    indices = select_scenes(predictor, dataset, num, how=select, seed=seed, batch_size=batch_size,
                            progress=progress)
  scenes, preds = predict_indices(predictor, dataset, indices, batch_size=batch_size)
  what = {"worst": f"the {len(scenes)} worst by minFDE_k6", "random": f"{len(scenes)} at random (seed {seed})",
          "first": f"the first {len(scenes)}"}[select]
  fig = contact_sheet_figure(scenes, preds, view=view, dpi=dpi,
                             suptitle=f"{predictor.stage}: {what} of {len(dataset)} scenes")
  return save_figure(fig, path)


def run(config, workdir: str, save_path: str, *, stages=("float",), num: int = 10, grid: int = 0,
        select: str = "first", seed: int = 0, view: str = "fit", split: str | None = None, batch_size: int = 16,
        max_scenes: int = -1, dpi: int | None = None, progress: bool = True) -> list[str]:
  """What `bin/infer.py` does: for one stage, `num` scene PNGs; for several, `num` stage comparisons; with
  `grid` > 0 also `save_path/grid_<select>_<stage>.png` (the first stage). Scenes are chosen once (`select`,
  by the first stage) and shared by every picture. Returns the paths written."""
  stages = list(stages)
  if not stages:
    raise ValueError("no stage to draw: give --stages=float[,int,...]")
  predictors = [load(workdir, s, config=config) for s in stages]
  dataset = predictors[0].dataset(split)
  if len(dataset) == 0:
    raise ValueError(f"{dataset.path} holds no scenes")
  indices = select_scenes(predictors[0], dataset, max(num, grid), how=select, seed=seed, batch_size=batch_size,
                          max_scenes=max_scenes, progress=progress)
  paths, dpi_kw = [], {} if dpi is None else {"dpi": dpi}
  if num > 0 and len(predictors) == 1:
    paths += render_predictions(predictors[0], dataset, save_path, indices=indices[:num], view=view,
                                batch_size=batch_size, progress=progress, **dpi_kw)
  elif num > 0:
    paths += render_stage_comparison(predictors, dataset, save_path, indices=indices[:num], view=view,
                                     batch_size=batch_size, progress=progress, **dpi_kw)
  if grid > 0:
    paths.append(render_contact_sheet(predictors[0], dataset, os.path.join(save_path, f"grid_{select}_{stages[0]}.png"),
                                      indices=indices[:grid], select=select, seed=seed, view=view,
                                      batch_size=batch_size, progress=progress, **dpi_kw))
  return paths


def write_pictures(config, workdir: str, out_dir: str | None = None, *, num: int = 2, grid: int = 9,
                   split: str | None = None, batch_size: int = 16, progress: bool = False) -> list[str]:
  """The last step of `make demo` and `make real`: into `out_dir` (default `workdir/pictures`) the training
  curves and the stage bars (`curves.plot_metrics`), `num` scene PNGs of the float model and, when the int
  program exists, `num` float-vs-int comparisons, for the worst scenes by float minFDE_k6, and a contact
  sheet of the `grid` worst. Cheap: one scoring pass of the float model over the split, a few scenes drawn."""
  out_dir = out_dir or os.path.join(str(workdir), "pictures")
  paths = plot_metrics(workdir, out_dir)
  float_p = load(workdir, "float", config=config)
  dataset = float_p.dataset(split)
  worst = select_scenes(float_p, dataset, max(num, grid), how="worst", batch_size=batch_size, progress=progress)
  paths += render_predictions(float_p, dataset, os.path.join(out_dir, "scenes"), indices=worst[:num],
                              batch_size=batch_size, progress=progress)
  try:
    int_p = load(workdir, "int", config=config)
  except FileNotFoundError:
    int_p = None
  if int_p is not None:
    paths += render_stage_comparison([float_p, int_p], dataset, os.path.join(out_dir, "compare"),
                                     indices=worst[:num], batch_size=batch_size, progress=progress)
  if grid > 0:
    paths.append(render_contact_sheet(float_p, dataset, os.path.join(out_dir, "grid_worst_float.png"),
                                      indices=worst[:grid], select="worst", batch_size=batch_size,
                                      progress=progress))
  return paths
