"""Mode selection on the host: HAT's goal NMS or DenseTNT's goal-set optimisation; jittable, static shapes,
batched. It imports jax and numpy only: the model's predict, the integer interpreter and the artifact runner
all end with it.

`selection` (config.postprocess.selection):
  nms  HAT: greedy NMS over the top-k goals by score (2 m), mode probabilities the softmax of the kept scores.
  mr   DenseTNT's goal-set optimisation for miss rate: the `mode_num` goals, among the top-k, that minimise the
       expected miss rate under the predicted goal distribution (the top-k probabilities renormalised),
       E[MR](S) = sum_g p_g [min_{s in S} |g - s| > threshold], plus `mr_fde_weight` x E[FDE] / threshold as
       a tie-break between sets of equal miss rate.
  fde  the same for the expected final displacement, E[FDE](S) = sum_g p_g min_{s in S} |g - s|.
The optimiser (`optimize_goal_set`): a greedy start plus `opt_restarts` seeded random starts (Gumbel top-k
draws from p), each improved by `opt_iterations` rounds of the best single swap over all (slot, candidate)
pairs; the best set wins. The official code runs an unseeded random search per scene on the CPU; this one is
batched, jitted and seeded, and a scene's result does not depend on the batch it is in (every scene uses the
same key). Mode probabilities for mr/fde: the mass each chosen goal covers (every candidate goes to its nearest
chosen goal), so brier-minFDE scores them; modes are ordered by that probability.

`endpoint`: "snap" overwrites each trajectory's last point with its goal (DenseTNT does); "shift" moves the
whole trajectory onto it, linearly in time.

Padding rule: when fewer than `mode_num` goals survive NMS, the missing modes repeat mode 0 (the best goal and
its trajectory) with probability exactly 0 and `mode_mask` False. Every mode is then a real trajectory, the
probabilities of the kept modes sum to 1, and a stable sort by descending probability (as metrics.py
does) keeps the real modes first; a padded copy can never beat mode 0 on displacement, and on a tie the
first (real) mode wins.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SELECTIONS = ("nms", "mr", "fde")
ENDPOINTS = ("model", "snap", "shift")


@dataclasses.dataclass(frozen=True)
class PostprocessSettings:
  """How the host turns the top-k goals and trajectories into modes (`config.postprocess`)."""
  threshold: float = 2.0          # NMS radius; the miss threshold of the "mr" objective (m)
  mode_num: int = 6
  selection: str = "nms"          # "nms" (HAT) | "mr" | "fde" (DenseTNT's goal-set optimisation)
  endpoint: str = "model"         # "model": as completed; "snap": last point := goal (DenseTNT); "shift": the
                                  # trajectory shifted onto its goal, linearly in time (0 at the present)
  opt_iterations: int = 6         # best-swap rounds of the local search (mr / fde)
  opt_restarts: int = 4           # seeded random starting sets beside the greedy one
  opt_seed: int = 0
  mr_fde_weight: float = 0.05     # "mr": tie-break, this x E[FDE] / threshold
  opt_temperature: float = 1.0    # mr / fde: p_g ~ exp(log p_g / T) (T > 1 flattens the predicted distribution)

  def __post_init__(self):
    if self.selection not in SELECTIONS:
      raise ValueError(f"postprocess.selection {self.selection!r}: expected one of {SELECTIONS}")
    if self.endpoint not in ENDPOINTS:
      raise ValueError(f"postprocess.endpoint {self.endpoint!r}: expected one of {ENDPOINTS}")
    if self.mode_num < 1:
      raise ValueError(f"postprocess.mode_num must be >= 1; got {self.mode_num}")

  @classmethod
  def from_config(cls, postprocess) -> "PostprocessSettings":
    """From `config.postprocess` (keys beyond the settings, e.g. pred_steps, are ignored)."""
    d = postprocess.to_dict() if hasattr(postprocess, "to_dict") else dict(postprocess)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  @classmethod
  def from_meta(cls, meta: dict) -> "PostprocessSettings":
    """From a program's meta (programs written before selection existed carry threshold and mode_num only)."""
    d = dict(meta.get("postprocess") or {"threshold": meta["threshold"], "mode_num": meta["mode_num"]})
    return cls(**d)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


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
  """Inference outputs, agent frame. Padded modes (fewer real goals than modes) copy mode 0 with probability 0."""
  trajs_BxKxFx2: jax.Array
  probs_BxK: jax.Array                    # sums to 1 over the K = mode_num modes
  goals_BxKx2: jax.Array                  # the chosen goals (offset-corrected when goal_offset)
  mode_mask_BxK: jax.Array                # False for padded modes
  goal_logprobs_BxG: jax.Array            # every sparse candidate (masked ones are ~ -100 below the real ones)
  topk_goals_BxNx2: jax.Array             # the top_k goals by score, best first (offset-corrected)
  topk_logprobs_BxN: jax.Array            # over the whole goal set (sparse + dense)
  topk_valid_BxN: jax.Array               # False where fewer than top_k candidates exist


# ----------------------------------------------------------------------------------- goal-set optimisation
_BIG = 1e6


def _candidate_costs(goals_Nx2: jax.Array, settings: PostprocessSettings) -> jax.Array:
  """cost[g, c]: the objective's cost of outcome g when c is the closest chosen goal."""
  d = jnp.sqrt(jnp.sum(jnp.square(goals_Nx2[:, None, :] - goals_Nx2[None, :, :]), axis=-1))
  if settings.selection == "fde":
    return d
  thr = jnp.float32(settings.threshold)
  return (d > thr).astype(jnp.float32) + jnp.float32(settings.mr_fde_weight) * d / thr


def _set_cost(cost_NxN, p_N, set_K) -> jax.Array:
  return jnp.sum(p_N * jnp.min(cost_NxN[:, set_K], axis=1))


def _greedy(cost_NxN, p_N, valid_N, k: int) -> jax.Array:
  """K goals added one at a time, each the one that lowers the expected cost most."""
  cur_N = jnp.full(p_N.shape, _BIG, jnp.float32)
  chosen = []
  taken_N = ~valid_N
  for _ in range(k):
    obj_C = jnp.sum(p_N[:, None] * jnp.minimum(cur_N[:, None], cost_NxN), axis=0)
    c = jnp.argmin(jnp.where(taken_N, jnp.inf, obj_C))
    chosen.append(c)
    taken_N = taken_N.at[c].set(True)
    cur_N = jnp.minimum(cur_N, cost_NxN[:, c])
  return jnp.stack(chosen)


def _improve(cost_NxN, p_N, valid_N, set_K, rounds: int) -> jax.Array:
  """`rounds` of the best single swap (slot k -> candidate c not in the set); stops improving at a local optimum."""
  k = set_K.shape[0]
  others_KxK = ~np.eye(k, dtype=bool)

  def body(_, set_K):
    c_KxN = cost_NxN[:, set_K].T                                                   # (slot, outcome)
    without_KxN = jnp.min(jnp.where(others_KxK[:, :, None], c_KxN[None], _BIG), axis=1)
    obj_KxC = jnp.einsum("g,kgc->kc", p_N, jnp.minimum(without_KxN[:, :, None], cost_NxN[None]))
    in_set_C = jnp.zeros(p_N.shape, bool).at[set_K].set(True)
    obj_KxC = jnp.where((~valid_N | in_set_C)[None], jnp.inf, obj_KxC)
    best = jnp.argmin(obj_KxC)
    slot, cand = best // obj_KxC.shape[1], best % obj_KxC.shape[1]
    better = obj_KxC[slot, cand] < _set_cost(cost_NxN, p_N, set_K) - 1e-7
    return jnp.where(better, set_K.at[slot].set(cand), set_K)

  return jax.lax.fori_loop(0, rounds, body, set_K)


def optimize_goal_set(goals_Nx2: jax.Array, p_N: jax.Array, valid_N: jax.Array, key: jax.Array,
                      settings: PostprocessSettings) -> jax.Array:
  """Indices (K,) of the goal set minimising the settings' objective for one scene (see the module doc).
  Needs at least K valid candidates (callers pad otherwise)."""
  k = settings.mode_num
  cost = _candidate_costs(goals_Nx2, settings)
  starts = [_greedy(cost, p_N, valid_N, k)]
  if settings.opt_restarts:
    logp = jnp.where(valid_N, jnp.log(jnp.maximum(p_N, 1e-30)), -jnp.inf)
    g = jax.random.gumbel(key, (settings.opt_restarts,) + p_N.shape)
    starts.append(jax.lax.top_k(logp + g, k)[1])
  starts_RxK = jnp.concatenate([s.reshape(-1, k) for s in starts])
  sets_RxK = jax.vmap(lambda s: _improve(cost, p_N, valid_N, s, settings.opt_iterations))(starts_RxK)
  costs_R = jax.vmap(lambda s: _set_cost(cost, p_N, s))(sets_RxK)
  return sets_RxK[jnp.argmin(costs_R)]


def optimize_select(goals_BxNx2, logprobs_BxN, valid_BxN, *, settings: PostprocessSettings
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(index_BxK into N, kept_BxK, probs_BxK): the optimised goal sets, mode 0 the most probable.

  Probabilities: the renormalised top-k mass nearest to each chosen goal. Scenes with fewer valid goals than
  modes keep every valid goal; the missing modes copy mode 0 with probability 0 (`kept` False)."""
  k = settings.mode_num
  n = goals_BxNx2.shape[1]
  if n < k:                              # fewer top-k goals than modes: pad with invalid ones (dropped below)
    pad = ((0, 0), (0, k - n))
    goals_BxNx2 = jnp.pad(goals_BxNx2, pad + ((0, 0),))
    logprobs_BxN, valid_BxN = jnp.pad(logprobs_BxN, pad), jnp.pad(valid_BxN, pad)
  z_BxN = (logprobs_BxN - jnp.max(logprobs_BxN, axis=-1, keepdims=True)) / jnp.float32(settings.opt_temperature)
  p_BxN = jnp.where(valid_BxN, jnp.exp(z_BxN), 0.0)
  p_BxN = p_BxN / jnp.maximum(jnp.sum(p_BxN, axis=-1, keepdims=True), 1e-30)
  key = jax.random.key(settings.opt_seed)
  index_BxK = jax.vmap(lambda g, p, v: optimize_goal_set(g, p, v, key, settings))(goals_BxNx2, p_BxN, valid_BxN)
  n_valid_B = jnp.sum(valid_BxN, axis=-1)
  # fewer valid goals than modes: all of them, best first (the top-k order), then padding
  few_B = n_valid_B < k
  index_BxK = jnp.where(few_B[:, None], jnp.arange(k)[None, :], index_BxK)
  kept_BxK = jnp.take_along_axis(valid_BxN, index_BxK, axis=1)
  kept_BxK = kept_BxK.at[:, 0].set(True)
  chosen_BxKx2 = jnp.take_along_axis(goals_BxNx2, index_BxK[:, :, None], axis=1)
  d_BxNxK = jnp.sum(jnp.square(goals_BxNx2[:, :, None, :] - chosen_BxKx2[:, None, :, :]), axis=-1)
  nearest_BxN = jnp.argmin(jnp.where(kept_BxK[:, None, :], d_BxNxK, jnp.inf), axis=-1)
  probs_BxK = jnp.sum(jax.nn.one_hot(nearest_BxN, k) * p_BxN[..., None], axis=1)
  probs_BxK = jnp.where(kept_BxK, probs_BxK, 0.0)
  total_Bx1 = jnp.sum(probs_BxK, axis=-1, keepdims=True)
  mode0_K = jnp.arange(k) == 0                       # no valid goal at all: mode 0 carries the probability
  probs_BxK = jnp.where(total_Bx1 > 0, probs_BxK / jnp.where(total_Bx1 > 0, total_Bx1, 1.0), mode0_K)
  # most probable first (stable: ties keep the optimiser's order); padded modes last, copying mode 0
  order_BxK = jnp.argsort(-jnp.where(kept_BxK, probs_BxK, -1.0), axis=-1, stable=True)
  index_BxK, kept_BxK, probs_BxK = (jnp.take_along_axis(a, order_BxK, axis=1)
                                    for a in (index_BxK, kept_BxK, probs_BxK))
  index_BxK = jnp.where(kept_BxK, index_BxK, index_BxK[:, :1])
  return index_BxK, kept_BxK, probs_BxK


def end_on_goal(trajs_BxKxFx2: jax.Array, goals_BxKx2: jax.Array, endpoint: str) -> jax.Array:
  """Trajectories made to end at their goals ("snap": the last point replaced, as DenseTNT; "shift": the
  endpoint error removed linearly in time, t / F of it at step t, so the path stays smooth)."""
  trajs_BxKxFx2 = jnp.asarray(trajs_BxKxFx2)
  if endpoint == "snap":
    return trajs_BxKxFx2.at[..., -1, :].set(goals_BxKx2)
  if endpoint == "shift":
    f = trajs_BxKxFx2.shape[-2]
    ramp_F = jnp.arange(1, f + 1, dtype=trajs_BxKxFx2.dtype) / f
    return trajs_BxKxFx2 + ramp_F[:, None] * (goals_BxKx2 - trajs_BxKxFx2[..., -1, :])[..., None, :]
  return trajs_BxKxFx2


def finish_prediction(goal_logprobs_BxG, topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN,
                      topk_trajs_BxNxFx2, *, settings: PostprocessSettings) -> Prediction:
  """Modes from the top-k goals (float, on the host): the epilogue of predict and of the integer program."""
  if settings.selection == "nms":
    modes = select_modes(topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN, topk_trajs_BxNxFx2,
                         threshold=settings.threshold, mode_num=settings.mode_num)
  else:
    index_BxK, kept_BxK, probs_BxK = optimize_select(topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN,
                                                     settings=settings)
    modes = Modes(jnp.take_along_axis(topk_trajs_BxNxFx2, index_BxK[:, :, None, None], axis=1), probs_BxK,
                  jnp.take_along_axis(topk_goals_BxNx2, index_BxK[:, :, None], axis=1), kept_BxK)
  trajs = end_on_goal(modes.trajs_BxKxFx2, modes.goals_BxKx2, settings.endpoint)
  return Prediction(trajs, modes.probs_BxK, modes.goals_BxKx2, modes.mode_mask_BxK,
                    goal_logprobs_BxG, topk_goals_BxNx2, topk_logprobs_BxN, topk_valid_BxN)
