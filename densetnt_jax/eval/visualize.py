"""Matplotlib drawing of one vectorized Scene in the agent frame (lanes, tracks, goals, GT, predictions).

`draw_scene` draws on any Axes (a notebook's inline backend included); `save_scene_png` renders off-screen
through a private Agg canvas, so it never touches pyplot or the global backend.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from densetnt_jax.data.scene import Scene, decode_city

AGENT_COLOR, AV_COLOR, OTHERS_COLOR = "#d62728", "#2ca02c", "#1f77b4"
LANE_COLOR, PRED_COLOR = "#b0b0b0", "#ff7f0e"


def _segments(vectors_NxVxC: np.ndarray, mask_NxV: np.ndarray) -> np.ndarray:
  """Valid vectors as (S, 2, 2) start/end segments for a LineCollection."""
  v = vectors_NxVxC[mask_NxV]
  return np.stack([v[:, 0:2], v[:, 2:4]], axis=1)


def goal_probabilities(goal_scores_G: np.ndarray, goal_mask_G: np.ndarray) -> np.ndarray:
  """Softmax over the real candidates (scores may be logits or log-probabilities); 0 on padding."""
  s = np.where(goal_mask_G, np.asarray(goal_scores_G, np.float64), -np.inf)
  if not goal_mask_G.any():
    return np.zeros_like(s)
  e = np.exp(s - s.max())
  return e / e.sum()


def draw_scene(ax, scene: Scene, *, prediction_trajs_KxFx2=None, prediction_probs_K=None, goal_scores_G=None,
               title=None):
  """Draws one scene (no batch axis, numpy) on `ax` in the agent frame; returns `ax`.

  AGENT red, AV green, OTHERS blue (observed vectors), lanes grey, GT future dashed red, goal candidates as
  dots (a log-scale heatmap of softmax(goal_scores_G) if given), predictions orange with their probabilities
  at the endpoints.
  """
  lane_segs = _segments(np.asarray(scene.lanes_LxVxC),
                        np.asarray(scene.lane_vector_mask_LxV) & np.asarray(scene.lane_mask_L)[:, None])
  ax.add_collection(LineCollection(lane_segs, colors=LANE_COLOR, linewidths=1.0, zorder=1))

  trajs_TxVxC = np.asarray(scene.trajs_TxVxC)
  mask_TxV = np.asarray(scene.traj_vector_mask_TxV) & np.asarray(scene.traj_mask_T)[:, None]
  handles = [Line2D([], [], color=LANE_COLOR, label="lanes")]
  # Draw OTHERS first so the AV and the AGENT stay on top.
  for channel, color, name, zorder in ((7, OTHERS_COLOR, "others", 3), (6, AV_COLOR, "AV", 4),
                                       (5, AGENT_COLOR, "agent", 5)):
    rows_T = ((trajs_TxVxC[:, :, channel] > 0.5) & mask_TxV).any(axis=1)
    segs = _segments(trajs_TxVxC[rows_T], mask_TxV[rows_T])
    if len(segs):
      ax.add_collection(LineCollection(segs, colors=color, linewidths=2.0, zorder=zorder))
      ax.scatter(segs[:, 1, 0], segs[:, 1, 1], s=4, color=color, zorder=zorder)
      handles.append(Line2D([], [], color=color, lw=2, label=name))
  ax.scatter([0.0], [0.0], s=40, color=AGENT_COLOR, edgecolors="k", zorder=8)

  goal_mask_G = np.asarray(scene.goal_mask_G, bool)
  goals_Gx2 = np.asarray(scene.goals_Gx2)[goal_mask_G]
  if len(goals_Gx2):
    if goal_scores_G is None:
      ax.scatter(goals_Gx2[:, 0], goals_Gx2[:, 1], s=3, color="#7f7f7f", alpha=0.6, zorder=2)
    else:
      p_G = goal_probabilities(goal_scores_G, goal_mask_G)[goal_mask_G]
      vmax = max(float(p_G.max()), 1e-12)
      order = np.argsort(p_G)  # most probable drawn last, on top
      sc = ax.scatter(goals_Gx2[order, 0], goals_Gx2[order, 1], c=np.maximum(p_G[order], vmax * 1e-4), s=6,
                      cmap="magma_r", norm=mcolors.LogNorm(vmin=vmax * 1e-4, vmax=vmax), zorder=2)
      ax.figure.colorbar(sc, ax=ax, shrink=0.7, label="goal probability")
    handles.append(Line2D([], [], ls="", marker=".", color="#7f7f7f", label="goal candidates"))

  if bool(scene.has_future):
    fut_Fx2 = np.concatenate([np.zeros((1, 2)), np.asarray(scene.future_Fx2, np.float64)])
    ax.plot(fut_Fx2[:, 0], fut_Fx2[:, 1], ls="--", color=AGENT_COLOR, lw=2, zorder=6)
    ax.scatter(fut_Fx2[-1:, 0], fut_Fx2[-1:, 1], marker="*", s=120, color=AGENT_COLOR, edgecolors="k", zorder=9)
    handles.append(Line2D([], [], ls="--", color=AGENT_COLOR, lw=2, label="GT future"))

  if prediction_trajs_KxFx2 is not None:
    preds_KxFx2 = np.asarray(prediction_trajs_KxFx2, np.float64)
    probs_K = None if prediction_probs_K is None else np.asarray(prediction_probs_K, np.float64).reshape(-1)
    for j, pred_Fx2 in enumerate(preds_KxFx2):
      path_Fx2 = np.concatenate([np.zeros((1, 2)), pred_Fx2])
      ax.plot(path_Fx2[:, 0], path_Fx2[:, 1], color=PRED_COLOR, lw=1.5, alpha=0.9, zorder=7)
      ax.scatter(path_Fx2[-1:, 0], path_Fx2[-1:, 1], s=25, color=PRED_COLOR, edgecolors="k", zorder=9)
      if probs_K is not None:
        ax.annotate(f"{probs_K[j]:.2f}", path_Fx2[-1], xytext=(4, 4), textcoords="offset points", fontsize=8,
                    zorder=10)
    handles.append(Line2D([], [], color=PRED_COLOR, lw=1.5, label=f"predictions (K={len(preds_KxFx2)})"))

  ax.autoscale_view()
  ax.set_aspect("equal", adjustable="datalim")
  ax.set_xlabel("x (m, agent frame)")
  ax.set_ylabel("y (m, heading)")
  if title is None:
    city = decode_city(scene.city_code)
    title = f"seq {int(scene.seq_id)}" + (f" ({city})" if city else "")
  ax.set_title(title)
  ax.legend(handles=handles, loc="upper right", fontsize=8)
  return ax


def save_scene_png(path: str, scene: Scene, *, figsize=(8.0, 8.0), dpi: int = 100, **draw_kwargs) -> None:
  """Renders `draw_scene(scene, **draw_kwargs)` to a PNG file with the Agg canvas (headless-safe); creates
  the file's directory."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  draw_scene(fig.add_subplot(1, 1, 1), scene, **draw_kwargs)
  fig.savefig(path, format="png")
