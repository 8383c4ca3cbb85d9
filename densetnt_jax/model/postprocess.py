"""Goal NMS and mode selection: jittable, static shapes, batched.

Padding rule: when fewer than `mode_num` goals survive NMS, the missing modes repeat mode 0 (the best goal and
its trajectory) with probability exactly 0 and `mode_mask` False. Every mode is then a real trajectory, the
probabilities of the kept modes sum to 1, and a stable sort by descending probability (as eval/metrics.py
does) keeps the real modes first; a padded copy can never beat mode 0 on displacement, and on a tie the
first (real) mode wins.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Modes(NamedTuple):
  trajs_BxKxFx2: jax.Array
  probs_BxK: jax.Array
  goals_BxKx2: jax.Array
  mode_mask_BxK: jax.Array


def nms_select(goals_BxNx2: jax.Array, scores_BxN: jax.Array, valid_BxN: jax.Array, *, threshold: float,
               mode_num: int) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS: take goals by descending score; a goal within `threshold` metres (distance < threshold) of an
  already kept goal is suppressed; stop at `mode_num`. Returns (index_BxK into N, kept_BxK).

  Run as `mode_num` rounds of "keep the best live goal, kill its neighbours", which keeps exactly the goals
  the sequential greedy pass keeps, in 6 vectorized steps instead of N. Mode 0 is always the best goal, even
  when no goal is valid (so probabilities always have a mode to sit on). Ties in score go to the lower index.
  """
  alive_BxN = valid_BxN
  thr2 = jnp.asarray(threshold, goals_BxNx2.dtype) ** 2
  index, kept = [], []
  for m in range(mode_num):
    any_alive_B = jnp.any(alive_BxN, axis=-1)
    i_B = jnp.argmax(jnp.where(alive_BxN, scores_BxN, -jnp.inf), axis=-1)
    if m == 0:
      i_B = jnp.where(any_alive_B, i_B, jnp.argmax(scores_BxN, axis=-1))
      ok_B = jnp.ones_like(any_alive_B)
    else:
      i_B = jnp.where(any_alive_B, i_B, index[0])
      ok_B = any_alive_B
    center_Bx1x2 = jnp.take_along_axis(goals_BxNx2, i_B[:, None, None], axis=1)
    d2_BxN = jnp.sum(jnp.square(goals_BxNx2 - center_Bx1x2), axis=-1)
    not_self_BxN = jnp.arange(goals_BxNx2.shape[1])[None, :] != i_B[:, None]
    alive_BxN = alive_BxN & (d2_BxN >= thr2) & not_self_BxN
    index.append(i_B)
    kept.append(ok_B)
  return jnp.stack(index, axis=1), jnp.stack(kept, axis=1)


def select_modes(goals_BxNx2: jax.Array, logprobs_BxN: jax.Array, valid_BxN: jax.Array,
                 trajs_BxNxFx2: jax.Array, *, threshold: float, mode_num: int) -> Modes:
  """NMS over the top-k goals, then probabilities = softmax of the kept goals' log-probs over the kept modes."""
  index_BxK, kept_BxK = nms_select(goals_BxNx2, logprobs_BxN, valid_BxN, threshold=threshold,
                                   mode_num=mode_num)
  lp_BxK = jnp.take_along_axis(logprobs_BxN, index_BxK, axis=1)
  lp_BxK = jnp.where(kept_BxK, lp_BxK, -jnp.inf)
  lp_BxK = lp_BxK - jax.lax.stop_gradient(lp_BxK[:, :1])   # mode 0 is the max and always kept: exp <= 1
  w_BxK = jnp.where(kept_BxK, jnp.exp(jnp.where(kept_BxK, lp_BxK, 0.0)), 0.0)
  probs_BxK = w_BxK / jnp.sum(w_BxK, axis=-1, keepdims=True)
  trajs = jnp.take_along_axis(trajs_BxNxFx2, index_BxK[:, :, None, None], axis=1)
  goals = jnp.take_along_axis(goals_BxNx2, index_BxK[:, :, None], axis=1)
  return Modes(trajs, probs_BxK, goals, kept_BxK)


class Prediction(NamedTuple):
  """Inference outputs, agent frame. Modes follow postprocess.py: padded modes copy mode 0 with probability 0."""
  trajs_BxKxFx2: jax.Array
  probs_BxK: jax.Array                    # sums to 1 over the K = mode_num modes
  goals_BxKx2: jax.Array                  # the kept goals (offset-corrected when goal_offset)
  mode_mask_BxK: jax.Array                # False for padded modes
  goal_logprobs_BxG: jax.Array            # every candidate (masked ones are ~ -100 below the real ones)
  topk_goals_BxNx2: jax.Array             # the top_k goals by score, best first (offset-corrected)
  topk_logprobs_BxN: jax.Array
  topk_valid_BxN: jax.Array               # False where fewer than top_k candidates exist


def finish_prediction(goal_logprobs_BxG, topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN,
                      topk_trajs_BxNxFx2, *, threshold: float, mode_num: int) -> Prediction:
  """NMS and mode probabilities on the top-k goals (float): the epilogue of predict and of the integer program."""
  modes = select_modes(topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN, topk_trajs_BxNxFx2,
                            threshold=threshold, mode_num=mode_num)
  return Prediction(modes.trajs_BxKxFx2, modes.probs_BxK, modes.goals_BxKx2, modes.mode_mask_BxK,
                    goal_logprobs_BxG, topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN)
