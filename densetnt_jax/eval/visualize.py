"""Matplotlib drawing of one vectorized Scene in the agent frame: lanes, tracks, goal heatmap, GT, predictions.

`draw_scene` draws on any Axes (a notebook's inline backend included). The figure builders
(`scene_figure`, `stage_comparison_figure`, `contact_sheet_figure`) return a `Figure` on a private Agg
canvas, so they never touch pyplot or the global backend; `save_figure` writes one to PNG.

By default the view fits what a reader looks at (the agent's history, the GT future, the predictions and the
high-probability goals) with a margin; `view="full"` keeps the whole vectorized scene (up to
data.max_distance = 50 m around the agent).
"""
from __future__ import annotations

import math
import os

import numpy as np
from matplotlib import colormaps, colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from densetnt_jax.data.scene import Scene, decode_city
from densetnt_jax.metrics import per_sequence_errors

AGENT_COLOR, AV_COLOR, OTHERS_COLOR = "#d62728", "#2ca02c", "#1f77b4"
LANE_COLOR = "#bdbdbd"
# Modes by rank (most probable first): tab10 without the track colours (red, green, blue) and grey.
MODE_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
GOAL_CMAP = "viridis"
GOAL_FLOOR = 1e-3    # goal heatmap: candidates below this probability are not drawn
VIEW_GOAL_FLOOR = 0.02   # the fitted view includes goals at least this probable
VIEW_MARGIN_M, VIEW_MIN_SIZE_M = 5.0, 20.0
VIEWS = ("fit", "full")


def _segments(vectors_NxVxC: np.ndarray, mask_NxV: np.ndarray) -> np.ndarray:
  """Valid vectors as (S, 2, 2) start/end segments for a LineCollection."""
  v = vectors_NxVxC[mask_NxV]
  return np.stack([v[:, 0:2], v[:, 2:4]], axis=1).reshape(-1, 2, 2)


def goal_probabilities(goal_scores_G: np.ndarray, goal_mask_G: np.ndarray) -> np.ndarray:
  """Softmax over the real candidates (scores may be logits or log-probabilities); 0 on padding."""
  s = np.where(goal_mask_G, np.asarray(goal_scores_G, np.float64), -np.inf)
  if not goal_mask_G.any():
    return np.zeros_like(s)
  e = np.exp(s - s.max())
  return e / e.sum()


def heatmap_goals(scene: Scene, *, goal_scores_G=None, topk_goals_Nx2=None, topk_logprobs_N=None,
                  floor: float = GOAL_FLOOR) -> tuple[np.ndarray, np.ndarray]:
  """(goals_Mx2, probs_M) above `floor`, least probable first (drawn first, so the best end on top).

  The model's top goals over the whole goal set (sparse + dense, `topk_*`) when given: their log-probabilities
  are over that set; otherwise the softmax of the sparse candidates' scores."""
  if topk_goals_Nx2 is not None and topk_logprobs_N is not None:
    goals_Mx2 = np.asarray(topk_goals_Nx2, np.float64).reshape(-1, 2)
    probs_M = np.exp(np.asarray(topk_logprobs_N, np.float64).reshape(-1))
  elif goal_scores_G is not None:
    mask_G = np.asarray(scene.goal_mask_G, bool)
    goals_Mx2 = np.asarray(scene.goals_Gx2, np.float64)[mask_G]
    probs_M = goal_probabilities(goal_scores_G, mask_G)[mask_G]
  else:
    return np.zeros((0, 2)), np.zeros(0)
  keep = np.isfinite(probs_M) & (probs_M >= floor)
  order = np.argsort(probs_M[keep], kind="stable")
  return goals_Mx2[keep][order], probs_M[keep][order]


def agent_history_Hx2(scene: Scene) -> np.ndarray:
  """The AGENT's observed points (row 0 of the tracks; the last one is the origin)."""
  trajs_TxVxC = np.asarray(scene.trajs_TxVxC)
  mask_V = np.asarray(scene.traj_vector_mask_TxV)[0] & bool(np.asarray(scene.traj_mask_T)[0])
  v = trajs_TxVxC[0][mask_V]
  return np.concatenate([v[:, 0:2], v[:, 2:4], np.zeros((1, 2))]).astype(np.float64)


def view_points(scene: Scene, *, prediction_trajs_KxFx2=None, goals_Mx2=None, probs_M=None,
                goal_floor: float = VIEW_GOAL_FLOOR) -> np.ndarray:
  """The points the fitted view must contain: agent history, GT future, predictions, goals >= goal_floor."""
  pts = [agent_history_Hx2(scene)]
  if bool(scene.has_future):
    pts.append(np.asarray(scene.future_Fx2, np.float64))
  if prediction_trajs_KxFx2 is not None:
    pts.append(np.asarray(prediction_trajs_KxFx2, np.float64).reshape(-1, 2))
  if goals_Mx2 is not None and probs_M is not None and len(goals_Mx2):
    pts.append(np.asarray(goals_Mx2, np.float64)[np.asarray(probs_M) >= goal_floor])
  pts_Px2 = np.concatenate(pts)
  return pts_Px2[np.isfinite(pts_Px2).all(axis=1)]


def scene_extent_points(scene: Scene) -> np.ndarray:
  """Every vectorized point of the scene (lanes, tracks, goal candidates): the full view."""
  lanes = _segments(np.asarray(scene.lanes_LxVxC),
                    np.asarray(scene.lane_vector_mask_LxV) & np.asarray(scene.lane_mask_L)[:, None])
  tracks = _segments(np.asarray(scene.trajs_TxVxC),
                     np.asarray(scene.traj_vector_mask_TxV) & np.asarray(scene.traj_mask_T)[:, None])
  goals = np.asarray(scene.goals_Gx2)[np.asarray(scene.goal_mask_G, bool)]
  return np.concatenate([lanes.reshape(-1, 2), tracks.reshape(-1, 2), goals, np.zeros((1, 2))]).astype(np.float64)


def fit_view(points_Px2: np.ndarray, *, margin: float = VIEW_MARGIN_M,
             min_size: float = VIEW_MIN_SIZE_M) -> tuple[tuple[float, float], tuple[float, float]]:
  """Square (xlim, ylim) centred on the points' bounding box, `margin` metres (or 10% of the span, whichever
  is larger) beyond it on every side, at least `min_size` metres wide: square so that equal aspect needs no
  adjustment and panels can share axes."""
  pts = np.asarray(points_Px2, np.float64).reshape(-1, 2)
  pts = pts[np.isfinite(pts).all(axis=1)]
  if not len(pts):
    pts = np.zeros((1, 2))
  lo, hi = pts.min(axis=0), pts.max(axis=0)
  span = float((hi - lo).max())
  side = max(span + 2 * max(margin, 0.1 * span), min_size)
  cx, cy = (lo + hi) / 2
  return (cx - side / 2, cx + side / 2), (cy - side / 2, cy + side / 2)


def mode_errors(scene: Scene, trajs_KxFx2, probs_K, miss_threshold: float = 2.0) -> dict | None:
  """The Argoverse K=6 errors of one scene (`metrics.per_sequence_errors`): fde, ade, miss, best_index (the
  min-FDE mode), and fde_K of every mode; None without a GT future."""
  if not bool(scene.has_future) or trajs_KxFx2 is None:
    return None
  trajs = np.asarray(trajs_KxFx2, np.float64)
  probs = np.ones(len(trajs)) / len(trajs) if probs_K is None else np.asarray(probs_K, np.float64).reshape(-1)
  gt_Fx2 = np.asarray(scene.future_Fx2, np.float64)
  e = per_sequence_errors(trajs[None], probs[None], gt_Fx2[None], miss_threshold=miss_threshold, k=6)
  return {"fde": float(e["fde_N"][0]), "ade": float(e["ade_N"][0]), "miss": bool(e["miss_N"][0]),
          "best_index": int(e["best_index_N"][0]),
          "fde_K": np.linalg.norm(trajs[:, -1] - gt_Fx2[-1], axis=-1)}


def mode_spread(trajs_KxFx2) -> float:
  """The largest distance between two modes' endpoints (m): near 0 when the modes collapse onto one path."""
  ends_Kx2 = np.asarray(trajs_KxFx2, np.float64)[:, -1]
  if len(ends_Kx2) < 2:
    return 0.0
  return float(np.max(np.linalg.norm(ends_Kx2[:, None] - ends_Kx2[None], axis=-1)))


def scene_title(scene: Scene, *, stage: str | None = None, errors: dict | None = None,
                spread: float | None = None) -> str:
  """'seq 252 (PIT), float: minFDE_k6 3.41 m, MISS', and with `spread` a second line 'mode ends within 1.2 m'
  (panels without a legend table)."""
  city = decode_city(scene.city_code)
  title = f"seq {int(scene.seq_id)}" + (f" ({city})" if city else "")
  if stage:
    title += f", {stage}"
  if errors is not None:
    title += f": minFDE_k6 {errors['fde']:.2f} m, " + ("MISS" if errors["miss"] else "hit")
  if spread is not None:
    title += f"\nmode ends within {spread:.1f} m"
  return title


def draw_scene(ax, scene: Scene, *, prediction_trajs_KxFx2=None, prediction_probs_K=None, goal_scores_G=None,
               topk_goals_Nx2=None, topk_logprobs_N=None, title=None, stage: str | None = None,
               view: str = "fit", limits=None, goal_floor: float = GOAL_FLOOR, goal_norm=None,
               miss_threshold: float = 2.0, legend: bool = True, colorbar: bool = True, fontsize: float = 8):
  """Draws one scene (no batch axis, numpy) on `ax` in the agent frame; returns `ax`.

  Lanes thin grey; OTHERS blue, AV green, AGENT red (observed); the goal heatmap (`heatmap_goals`) as points
  coloured by probability above `goal_floor`; the GT future dashed red with the `miss_threshold` circle at its
  endpoint; the modes in colours by probability rank, each ending in a dot, the min-FDE mode thicker with a
  black-ringed end, their probabilities (and FDE) in a legend table. `limits` ((x0, x1), (y0, y1)) overrides
  the view; otherwise `view` "fit" (`fit_view` of `view_points`) or "full".
  """
  if view not in VIEWS:
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
  lane_segs = _segments(np.asarray(scene.lanes_LxVxC),
                        np.asarray(scene.lane_vector_mask_LxV) & np.asarray(scene.lane_mask_L)[:, None])
  ax.add_collection(LineCollection(lane_segs, colors=LANE_COLOR, linewidths=0.8, zorder=1))

  trajs_TxVxC = np.asarray(scene.trajs_TxVxC)
  mask_TxV = np.asarray(scene.traj_vector_mask_TxV) & np.asarray(scene.traj_mask_T)[:, None]
  handles = [Line2D([], [], color=LANE_COLOR, lw=0.8, label="lanes")]
  # OTHERS first so the AV and the AGENT stay on top.
  for channel, color, name, lw, zorder in ((7, OTHERS_COLOR, "others", 1.2, 3), (6, AV_COLOR, "AV", 1.5, 4),
                                           (5, AGENT_COLOR, "agent", 2.2, 5)):
    rows_T = ((trajs_TxVxC[:, :, channel] > 0.5) & mask_TxV).any(axis=1)
    segs = _segments(trajs_TxVxC[rows_T], mask_TxV[rows_T])
    if len(segs):
      ax.add_collection(LineCollection(segs, colors=color, linewidths=lw, alpha=0.85, zorder=zorder))
      ax.scatter(segs[:, 1, 0], segs[:, 1, 1], s=3, color=color, zorder=zorder)
      handles.append(Line2D([], [], color=color, lw=lw, label=name))
  ax.scatter([0.0], [0.0], s=40, color=AGENT_COLOR, edgecolors="k", zorder=8)

  goals_Mx2, probs_M = heatmap_goals(scene, goal_scores_G=goal_scores_G, topk_goals_Nx2=topk_goals_Nx2,
                                     topk_logprobs_N=topk_logprobs_N, floor=goal_floor)
  if goal_scores_G is None and topk_logprobs_N is None:   # no model: the candidates themselves, small grey
    cand_Gx2 = np.asarray(scene.goals_Gx2)[np.asarray(scene.goal_mask_G, bool)]
    ax.scatter(cand_Gx2[:, 0], cand_Gx2[:, 1], s=3, color="#7f7f7f", alpha=0.6, zorder=2)
    handles.append(Line2D([], [], ls="", marker=".", color="#7f7f7f", label="goal candidates"))
  if len(goals_Mx2):
    norm = goal_norm or goal_log_norm(probs_M, floor=goal_floor)
    sc = ax.scatter(goals_Mx2[:, 0], goals_Mx2[:, 1], c=probs_M, s=12, cmap=GOAL_CMAP, norm=norm,
                    edgecolors="none", zorder=2)
    if colorbar:
      _goal_colorbar(ax.figure, sc, ax, goal_floor, fontsize, location="bottom")

  errors = None
  if bool(scene.has_future):
    fut_Fx2 = np.concatenate([np.zeros((1, 2)), np.asarray(scene.future_Fx2, np.float64)])
    ax.plot(fut_Fx2[:, 0], fut_Fx2[:, 1], ls="--", color=AGENT_COLOR, lw=2, zorder=6)
    ax.scatter(fut_Fx2[-1:, 0], fut_Fx2[-1:, 1], marker="*", s=140, color=AGENT_COLOR, edgecolors="k",
               zorder=11)
    ax.add_patch(Circle(fut_Fx2[-1], miss_threshold, fill=False, ls=":", lw=1.2, color=AGENT_COLOR, zorder=6))
    handles.append(Line2D([], [], ls="--", color=AGENT_COLOR, lw=2, marker="*", markersize=9,
                          markeredgecolor="k", label="GT future"))
    handles.append(Line2D([], [], ls=":", color=AGENT_COLOR, lw=1.2, label=f"{miss_threshold:g} m miss circle"))

  mode_handles, mode_title = [], None
  if prediction_trajs_KxFx2 is not None:
    preds_KxFx2 = np.asarray(prediction_trajs_KxFx2, np.float64)
    num_modes = len(preds_KxFx2)
    probs_K = (np.full(num_modes, 1.0 / num_modes) if prediction_probs_K is None
               else np.asarray(prediction_probs_K, np.float64).reshape(-1))
    errors = mode_errors(scene, preds_KxFx2, probs_K, miss_threshold)
    best = None if errors is None else errors["best_index"]
    rank_K = np.argsort(-probs_K, kind="stable")
    for r, j in enumerate(rank_K):
      color = MODE_COLORS[r % len(MODE_COLORS)]
      path_Fx2 = np.concatenate([np.zeros((1, 2)), preds_KxFx2[j]])
      is_best = j == best
      ax.plot(path_Fx2[:, 0], path_Fx2[:, 1], color=color, lw=2.6 if is_best else 1.4, alpha=0.95,
              zorder=7 + (0.5 if is_best else 0) + (num_modes - r) * 0.01)
      ax.scatter(path_Fx2[-1:, 0], path_Fx2[-1:, 1], s=60 if is_best else 28, color=color, edgecolors="k",
                 linewidths=2.0 if is_best else 0.6, zorder=10)
      label = f"{r + 1}  p={probs_K[j]:.2f}"
      if errors is not None:
        label += f"  FDE {errors['fde_K'][j]:5.1f}" + ("  best" if is_best else "")
      mode_handles.append(Line2D([], [], color=color, lw=2.6 if is_best else 1.4, marker="o", markersize=6,
                                 markeredgecolor="k", markeredgewidth=2.0 if is_best else 0.6, label=label))
    mode_title = f"K={num_modes} modes, ends within {mode_spread(preds_KxFx2):.1f} m"

  if limits is None:
    if view == "fit":
      limits = fit_view(view_points(scene, prediction_trajs_KxFx2=prediction_trajs_KxFx2, goals_Mx2=goals_Mx2,
                                    probs_M=probs_M))
    else:
      limits = fit_view(scene_extent_points(scene), margin=2.0)
  ax.set_xlim(*limits[0])
  ax.set_ylim(*limits[1])
  ax.set_aspect("equal", adjustable="box")
  ax.tick_params(labelsize=fontsize)
  ax.set_xlabel("x (m, agent frame)", fontsize=fontsize)
  ax.set_ylabel("y (m, heading)", fontsize=fontsize)
  if title is None:
    title = scene_title(scene, stage=stage, errors=errors)
  ax.set_title(title, fontsize=fontsize + 1)
  if legend:
    scene_legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize,
                             borderaxespad=0.0, frameon=False)
    if mode_handles:
      ax.add_artist(scene_legend)
      ax.legend(handles=mode_handles, loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=fontsize,
                title=mode_title, title_fontsize=fontsize, borderaxespad=0.0, frameon=False,
                prop={"family": "monospace", "size": fontsize})
  return ax


def _goal_colorbar(fig, mappable, ax, floor: float, fontsize: float, location: str = "right"):
  cb = fig.colorbar(mappable, ax=ax, location=location, shrink=0.6, pad=0.02, aspect=30)
  cb.set_label(f"goal probability (points >= {floor:g})", fontsize=fontsize)
  cb.ax.tick_params(labelsize=fontsize)
  return cb


def goal_log_norm(probs_M, *, floor: float = GOAL_FLOOR) -> mcolors.LogNorm:
  """Log colour scale from `floor` to the largest probability (at least 10 x floor); `probs_M` may be a list
  of arrays (several panels sharing one scale)."""
  arrays = probs_M if isinstance(probs_M, (list, tuple)) else [probs_M]
  vmax = max([floor * 10] + [float(np.max(p)) for p in arrays if np.size(p)])
  return mcolors.LogNorm(vmin=floor, vmax=vmax)


def prediction_kwargs(pred: dict) -> dict:
  """`draw_scene` keyword arguments from one scene's prediction (`Predictor.predict_scene`'s keys, or a
  batch's row with the `Bx` dropped)."""
  keys = {"trajs_KxFx2": "prediction_trajs_KxFx2", "probs_K": "prediction_probs_K",
          "goal_logprobs_G": "goal_scores_G", "topk_goals_Nx2": "topk_goals_Nx2",
          "topk_logprobs_N": "topk_logprobs_N"}
  return {arg: pred[k] for k, arg in keys.items() if k in pred}


def _figure(figsize, dpi) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig: Figure, path: str, *, dpi: int | None = None) -> str:
  """Writes `fig` to a PNG file (creating its directory); returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
  fig.savefig(path, format="png", dpi=dpi)
  return str(path)


def scene_figure(scene: Scene, *, figsize=(8.6, 6.6), dpi: int = 100, **draw_kwargs) -> Figure:
  """A figure of `draw_scene(scene, **draw_kwargs)` (legends to the right of the map)."""
  fig = _figure(figsize, dpi)
  draw_scene(fig.add_subplot(1, 1, 1), scene, **draw_kwargs)
  return fig


def save_scene_png(path: str, scene: Scene, *, figsize=(8.6, 6.6), dpi: int = 100, **draw_kwargs) -> Figure:
  """Renders `draw_scene(scene, **draw_kwargs)` to a PNG file with the Agg canvas (headless-safe); creates
  the file's directory; returns the Figure."""
  fig = scene_figure(scene, figsize=figsize, dpi=dpi, **draw_kwargs)
  save_figure(fig, path)
  return fig


def _shared_norm(scene, preds: list[dict], floor: float):
  probs = [heatmap_goals(scene, **{k: v for k, v in prediction_kwargs(p).items()
                                   if k in ("goal_scores_G", "topk_goals_Nx2", "topk_logprobs_N")},
                         floor=floor)[1] for p in preds]
  return goal_log_norm(probs, floor=floor), probs


def stage_comparison_figure(scene: Scene, preds_by_stage: dict[str, dict], *, view: str = "fit",
                            goal_floor: float = GOAL_FLOOR, panel_size: float = 5.0, dpi: int = 100,
                            miss_threshold: float = 2.0) -> Figure:
  """One scene drawn once per stage, side by side on shared axes (one view fitting every stage's
  predictions) and one goal colour scale, so what quantization changed shows as a difference between
  panels. `preds_by_stage`: {stage: one scene's prediction dict (`Predictor.predict_scene` keys)}."""
  stages = list(preds_by_stage)
  if not stages:
    raise ValueError("stage_comparison_figure needs at least one stage")
  fig = _figure((panel_size * len(stages) + 1.0, panel_size + 1.9), dpi)
  norm, _ = _shared_norm(scene, [preds_by_stage[s] for s in stages], goal_floor)
  limits = None
  if view == "fit":
    pts = []
    for s in stages:
      kw = prediction_kwargs(preds_by_stage[s])
      g, p = heatmap_goals(scene, goal_scores_G=kw.get("goal_scores_G"), topk_goals_Nx2=kw.get("topk_goals_Nx2"),
                           topk_logprobs_N=kw.get("topk_logprobs_N"), floor=goal_floor)
      pts.append(view_points(scene, prediction_trajs_KxFx2=kw.get("prediction_trajs_KxFx2"), goals_Mx2=g,
                             probs_M=p))
    limits = fit_view(np.concatenate(pts))
  # Two rows: the maps (shared axes), and under each an empty axes holding its mode table, so the layout
  # engine sizes the tables (a legend hung below an equal-aspect axes falls off the figure).
  grid = fig.add_gridspec(2, len(stages), height_ratios=(panel_size, 0.6))
  axes = [fig.add_subplot(grid[0, 0])]
  axes += [fig.add_subplot(grid[0, i], sharex=axes[0], sharey=axes[0]) for i in range(1, len(stages))]
  sc = None
  for ax, s in zip(axes, stages):
    draw_scene(ax, scene, **prediction_kwargs(preds_by_stage[s]), stage=s, view=view, limits=limits,
               goal_floor=goal_floor, goal_norm=norm, miss_threshold=miss_threshold, legend=False,
               colorbar=False)
    table_ax = fig.add_subplot(grid[1, stages.index(s)])
    table_ax.set_axis_off()
    table_ax.set_label("<mode table>")
    _mode_table(table_ax, scene, preds_by_stage[s], miss_threshold)
    sc = sc or next((c for c in ax.collections if c.get_array() is not None), None)
  if sc is not None:
    _goal_colorbar(fig, sc, list(axes), goal_floor, 8)
  fig.suptitle(scene_title(scene) + ": " + " vs ".join(stages), fontsize=10)
  return fig


def _mode_table(ax, scene, pred: dict, miss_threshold: float, fontsize: float = 7) -> None:
  """The modes' legend table (rank, probability, FDE, best) in the mode colours, filling `ax`."""
  kw = prediction_kwargs(pred)
  trajs, probs = kw.get("prediction_trajs_KxFx2"), kw.get("prediction_probs_K")
  if trajs is None:
    return
  probs = np.full(len(trajs), 1.0 / len(trajs)) if probs is None else np.asarray(probs, np.float64).reshape(-1)
  errors = mode_errors(scene, trajs, probs, miss_threshold)
  handles = []
  for r, j in enumerate(np.argsort(-probs, kind="stable")):
    is_best = errors is not None and j == errors["best_index"]
    label = f"{r + 1} p={probs[j]:.2f}" + ("" if errors is None else f" FDE {errors['fde_K'][j]:.1f}") + (
        " best" if is_best else "")
    handles.append(Line2D([], [], color=MODE_COLORS[r % len(MODE_COLORS)], lw=2.6 if is_best else 1.4,
                          marker="o", markersize=5, markeredgecolor="k", markeredgewidth=2.0 if is_best else 0.6,
                          label=label))
  ax.legend(handles=handles, loc="upper center", ncol=3, fontsize=fontsize,
            title=f"K={len(trajs)} modes, ends within {mode_spread(trajs):.1f} m", title_fontsize=fontsize,
            frameon=False, prop={"family": "monospace", "size": fontsize}, handlelength=1.2, columnspacing=0.8,
            handletextpad=0.4, borderaxespad=0.0)


def contact_sheet_figure(scenes: list[Scene], preds: list[dict], *, titles: list[str] | None = None,
                         ncols: int | None = None, view: str = "fit", goal_floor: float = GOAL_FLOOR,
                         panel_size: float = 3.2, dpi: int = 90, miss_threshold: float = 2.0,
                         suptitle: str | None = None) -> Figure:
  """N scenes in a grid (one axes each, its own fitted view), small titles with the minFDE and miss, one
  legend for the figure: the page a person scans first."""
  n = len(scenes)
  if n == 0 or len(preds) != n:
    raise ValueError(f"contact sheet needs as many predictions as scenes (>= 1); got {n} and {len(preds)}")
  ncols = ncols or math.ceil(math.sqrt(n))
  nrows = math.ceil(n / ncols)
  fig = _figure((panel_size * ncols, panel_size * nrows + 0.7), dpi)
  axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
  for i, ax in enumerate(axes):
    if i >= n:
      ax.set_axis_off()
      continue
    kw = prediction_kwargs(preds[i])
    errors = mode_errors(scenes[i], kw.get("prediction_trajs_KxFx2"), kw.get("prediction_probs_K"), miss_threshold)
    spread = None if kw.get("prediction_trajs_KxFx2") is None else mode_spread(kw["prediction_trajs_KxFx2"])
    title = titles[i] if titles else scene_title(scenes[i], errors=errors, spread=spread)
    draw_scene(ax, scenes[i], **kw, title=title, view=view, goal_floor=goal_floor, miss_threshold=miss_threshold,
               legend=False, colorbar=False, fontsize=6)
    ax.set_xlabel("")
    ax.set_ylabel("")
  legend = [Line2D([], [], color=AGENT_COLOR, lw=2.2, label="agent"),
            Line2D([], [], ls="--", color=AGENT_COLOR, lw=2, marker="*", markeredgecolor="k", label="GT future"),
            Line2D([], [], ls=":", color=AGENT_COLOR, label=f"{miss_threshold:g} m miss circle")]
  legend += [Line2D([], [], color=c, lw=1.4, marker="o", markeredgecolor="k", markersize=5,
                    label=f"mode {r + 1}" + (" (top p)" if r == 0 else ""))
             for r, c in enumerate(MODE_COLORS)]
  legend += [Line2D([], [], color="k", lw=2.6, marker="o", markeredgewidth=2, markerfacecolor="w",
                    label="thick: min-FDE mode"),
             Line2D([], [], ls="", marker="o", color=mcolors.to_hex(_cmap()(0.8)), label="goal heatmap")]
  fig.legend(handles=legend, loc="outside lower center", ncol=6 if ncols >= 3 else 4, fontsize=7, frameon=False)
  if suptitle:
    fig.suptitle(suptitle, fontsize=10)
  return fig


def _cmap():
  return colormaps[GOAL_CMAP]
