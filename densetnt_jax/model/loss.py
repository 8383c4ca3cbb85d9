"""DenseTNT training loss: goal cross-entropy + SmoothL1 trajectory (+ optional goal offset SmoothL1), and with
the dense goal stage a second cross-entropy over the whole goal set (sparse + dense), labelled with the goal
nearest the ground-truth endpoint (DenseTNT's `goals_2D_labels`); with lane scoring a cross-entropy over the
lanes, labelled with the lane nearest that endpoint (DenseTNT's `stage_one_label`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from densetnt_jax.model.densetnt import TrainOutputs


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
  """Elementwise SmoothL1 (PyTorch's, beta=1): 0.5 x^2 / beta below beta, |x| - 0.5 beta above."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def valid_scenes(batch: dict) -> jax.Array:
  """Scenes that carry a label: a future and a ground-truth candidate that is a real candidate."""
  idx_B = batch["goal_index"]
  in_mask = jnp.take_along_axis(batch["goal_mask_G"], jnp.maximum(idx_B, 0)[:, None], axis=1)[:, 0]
  return batch["has_future"].astype(bool) & (idx_B >= 0) & in_mask


def nearest_lane(batch: dict, point_Bx2: jax.Array) -> jax.Array:
  """(B,) index of the lane polyline whose centerline passes nearest the point (segment distance)."""
  lanes = batch["lanes_LxVxC"]
  a, b = lanes[..., 0:2], lanes[..., 2:4]                                  # (B, L, V, 2) vector start, end
  p = point_Bx2[:, None, None, :]
  ab = b - a
  t = jnp.clip(jnp.sum((p - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-9), 0.0, 1.0)
  d2 = jnp.sum(jnp.square(a + t[..., None] * ab - p), axis=-1)             # (B, L, V)
  d2 = jnp.min(jnp.where(batch["lane_vector_mask_LxV"], d2, jnp.inf), axis=-1)
  return jnp.argmin(jnp.where(batch["lane_mask_L"], d2, jnp.inf), axis=-1)


def densetnt_loss(outputs: TrainOutputs, batch: dict, loss_config, normalizer: jax.Array | float | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(weighted total, {term: value}); every term is a sum over labelled scenes divided by `normalizer`
  (default: their count, at least 1). Pass the whole batch's count when summing over micro-batches."""
  valid_B = valid_scenes(batch)
  if normalizer is None:
    normalizer = jnp.maximum(jnp.sum(valid_B.astype(jnp.float32)), 1.0)
  idx_Bx1 = jnp.maximum(batch["goal_index"], 0)[:, None]

  goal_ce_B = -jnp.take_along_axis(outputs.goal_logprobs_BxG, idx_Bx1, axis=1)[:, 0]
  future_BxFx2 = batch["future_Fx2"]
  traj_B = jnp.mean(smooth_l1(outputs.traj_BxFx2 - future_BxFx2), axis=(-2, -1))
  per_scene = {"goal_ce": goal_ce_B, "traj_smooth_l1": traj_B}
  weights = {"goal_ce": loss_config.goal_weight, "traj_smooth_l1": loss_config.traj_weight}
  if outputs.offsets_BxGx2 is not None:
    offset_Bx2 = jnp.take_along_axis(outputs.offsets_BxGx2, idx_Bx1[..., None], axis=1)[:, 0]
    goal_Bx2 = jnp.take_along_axis(batch["goals_Gx2"], idx_Bx1[..., None], axis=1)[:, 0]
    target_Bx2 = future_BxFx2[:, -1] - goal_Bx2
    per_scene["offset_smooth_l1"] = jnp.mean(smooth_l1(offset_Bx2 - target_Bx2), axis=-1)
    weights["offset_smooth_l1"] = loss_config.offset_weight

  if outputs.set_logprobs_BxU is not None:
    end_Bx1x2 = future_BxFx2[:, -1:, :]
    d2_BxU = jnp.sum(jnp.square(outputs.set_goals_BxUx2 - end_Bx1x2), axis=-1)
    label_Bx1 = jnp.argmin(jnp.where(outputs.set_mask_BxU, d2_BxU, jnp.inf), axis=-1)[:, None]
    per_scene["set_ce"] = -jnp.take_along_axis(outputs.set_logprobs_BxU, label_Bx1, axis=1)[:, 0]
    weights["set_ce"] = loss_config.get("set_weight", 1.0)

  if outputs.lane_logprobs_BxL is not None:
    label_Bx1 = nearest_lane(batch, future_BxFx2[:, -1])[:, None]
    per_scene["lane_ce"] = -jnp.take_along_axis(outputs.lane_logprobs_BxL, label_Bx1, axis=1)[:, 0]
    weights["lane_ce"] = loss_config.get("lane_weight", 1.0)

  terms = {k: jnp.sum(jnp.where(valid_B, v, 0.0)) / normalizer for k, v in per_scene.items()}
  loss = sum(weights[k] * terms[k] for k in terms)
  return loss, terms
