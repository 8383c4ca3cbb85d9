"""DenseTNT decoder (dense goal scoring + trajectory completion) and the full model (encoder + decoder)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import numpy as np

from densetnt_jax.model import primitives as P
from densetnt_jax.model.vectornet import Attention, Encoding, Vectornet
from densetnt_jax.postprocess import PostprocessSettings, Prediction, finish_prediction
from densetnt_jax.quant.qtensor import call_tag

# Variance scale of the (x, y) -> hidden layers' init: std = 0.07 per weight, so a point 10-15 m away gives
# unit-scale pre-activations (inputs are metres in the agent frame, up to ~50-100 m).
GOAL_INIT_SCALE = 0.01


class TrainOutputs(NamedTuple):
  """Teacher-forced outputs (`model.apply(v, inputs, train=True)`)."""
  goal_logprobs_BxG: jax.Array            # masked log-softmax over the sparse candidates
  traj_BxFx2: jax.Array                   # completion for the ground-truth endpoint future_Fx2[:, -1]
  offsets_BxGx2: Optional[jax.Array]      # goal offset regression (model.goal_offset), else None
  # the dense stage (model.dense_seeds > 0), else None: log-softmax over the whole goal set U = G sparse + P
  # dense goals, those goals (agent frame, as the model saw them) and their mask
  set_logprobs_BxU: Optional[jax.Array] = None
  set_goals_BxUx2: Optional[jax.Array] = None
  set_mask_BxU: Optional[jax.Array] = None
  lane_logprobs_BxL: Optional[jax.Array] = None   # lane scoring (model.lane_scoring), else None


class TopLanes(NamedTuple):
  """The best-scored lanes (lane scoring with `lane_top_k`): features and mask, K = lane_top_k."""
  features_BxKxH: jax.Array
  mask_BxK: jax.Array


class GoalSet(NamedTuple):
  """The scored goal set: the sparse candidates, then (dense stage) the dense grid points."""
  goals_BxUx2: jax.Array                  # codes-grid goals (quantized modes: QTensor)
  mask_BxU: jax.Array
  logits_BxU: jax.Array                   # masked logits (the ranking)
  logprobs_BxU: jax.Array                 # log-softmax over U


class Densetnt(nn.Module):
  """Decoder head (HAT's Densetnt).

  Goal scoring: an MLP embedding of each candidate's (x, y), fused (added) with a projection of the agent
  context, attention of the goals over all polylines with a residual add, an MLP and a score; masked
  log-softmax over the candidates. Adding Dense(ctx) equals a Dense over concat(goal, ctx) without repeating
  ctx per goal. The goal path has no LayerNorm (as HAT's goal subgraph): it runs on B x 2048 rows, where each
  norm cost ~8% of the train step; the (x, y) layer starts small instead (`GOAL_INIT_SCALE`).

  Completion (HAT's target graph): `target_graph_depth` MLP layers on a goal, attention over the trajectory
  polylines (the first `num_traj` rows) with a residual add, concat with the agent context, an MLP and a
  linear layer to pred_steps x 2 (agent frame, metres). As in HAT it reads the encoder through
  stop_gradient: only the goal loss shapes the encoder.

  Dense goals (DenseTNT's second stage, `dense_seeds` M > 0): around each of the top M sparse goals a lattice
  grid (`dense_spacing` metres, half-width `dense_radius` steps: 5 x 5 at DenseTNT's 1 m / 2 m), de-duplicated
  on the lattice; the first `dense_points` P unique points (those of the best seeds first) are scored by the
  same goal scorer (shared weights and quantization points; its ops named `...@dense` in the program), and
  the goal set is the sparse candidates and the dense points under one log-softmax, as DenseTNT's
  cat(dense, sparse). The trajectories are completed for the top_k goals of that set."""
  in_channels: int = 128
  hidden_size: int = 128
  num_traj: int = 32
  target_graph_depth: int = 2
  pred_steps: int = 30
  top_k: int = 150
  num_heads: int = 1
  goal_offset: bool = False
  dense_seeds: int = 0
  dense_points: int = 512
  dense_radius: int = 2
  dense_spacing: float = 1.0
  lane_scoring: bool = False
  lane_top_k: int = 0

  def setup(self):
    h = self.hidden_size
    self.goal_embed = P.MLP(h, use_layernorm=False, kernel_init=nn.initializers.variance_scaling(
        GOAL_INIT_SCALE, "fan_in", "truncated_normal"))
    self.goal_fuse = P.Dense(h, use_bias=False)   # the bias sits on the per-scene context side: same sum,
    self.goal_context = P.Dense(h)                # and its gradient is a B x H sum, not a B*G x H one
    self.goal_fuse_add = P.Add()
    self.goal_fuse_relu = P.ReLU()
    self.goal_attention = Attention(h, self.num_heads, project_queries=False)
    self.goal_residual = P.Add()
    self.goal_head = P.MLP(h, use_layernorm=False)
    self.goal_score = P.Dense(1)
    self.goal_mask_add = P.MaskAdd()
    self.goal_log_softmax = P.LogSoftmax()
    self.goal_input_mask = P.MaskedFill()
    if self.goal_offset:
      self.offset_head = P.Dense(2)
      self.offset_add = P.Add()
    self.target_graph = [P.MLP(h) for _ in range(self.target_graph_depth)]  # few rows: LayerNorm is cheap
    self.target_attention = Attention(h, self.num_heads, project_queries=False)
    self.target_residual = P.Add()
    self.traj_concat = P.Concat()
    self.traj_hidden = P.MLP(h)
    self.traj_out = P.Dense(self.pred_steps * 2)
    if self.dense_seeds:
      if self.goal_offset:
        raise ValueError("model.goal_offset and the dense goal stage (model.dense_seeds > 0) do not combine: "
                         "the dense grid replaces the offset head")
      self.dense_grid = P.DenseGrid(self.dense_spacing, self.dense_radius)
      self.dense_grid_mask = P.DenseGridMask(self.dense_spacing, self.dense_radius)
      self.set_log_softmax = P.LogSoftmax()
    if self.lane_top_k and not self.lane_scoring:
      raise ValueError("model.lane_top_k > 0 attends to the top lanes by score: it needs model.lane_scoring")
    if self.lane_scoring:
      self.lane_hidden = P.Dense(h)
      self.lane_context = P.Dense(h, use_bias=False)
      self.lane_add = P.Add()
      self.lane_relu = P.ReLU()
      self.lane_out = P.Dense(1)
      self.lane_mask_add = P.MaskAdd()
    if self.lane_top_k:
      self.goal_lane_attention = Attention(h, self.num_heads, project_queries=False)
      self.goal_lane_residual = P.Add()

  def mask_goals(self, goals_BxGx2: jax.Array, goal_mask_BxG: jax.Array):
    """Padded candidates zeroed (garbage and NaN never leave); in the quantized modes, the goals' input
    quantization point (the top-k goals are gathered from its codes)."""
    return self.goal_input_mask(goals_BxGx2, P.index(goal_mask_BxG, np.s_[..., None]))

  def goal_logits(self, enc: Encoding, goals_BxGx2, goal_mask_BxG: jax.Array, lanes: "TopLanes | None" = None):
    """(masked logits BxG, offsets BxGx2 or None) of goals from `mask_goals` (or dense goals on its grid).
    The logits rank the candidates; in the quantized modes they are the last integer scores. `lanes`: the top
    lanes by lane score, a second attention of every goal (DenseTNT's lane scoring)."""
    if enc.agent_BxH.shape[-1] != self.in_channels:
      raise ValueError(f"Densetnt: encoder features have {enc.agent_BxH.shape[-1]} channels, "
                       f"in_channels is {self.in_channels}")
    e = self.goal_embed(goals_BxGx2)
    ctx_Bx1xH = P.index(self.goal_context(enc.agent_BxH), np.s_[..., None, :])
    f = self.goal_fuse_relu(self.goal_fuse_add(self.goal_fuse(e), ctx_Bx1xH))
    att = self.goal_attention(f, enc.polylines_BxNxH, enc.polyline_mask_BxN)
    fused = self.goal_residual(f, att)
    if lanes is not None:
      fused = self.goal_lane_residual(fused, self.goal_lane_attention(f, lanes.features_BxKxH, lanes.mask_BxK))
    hid = self.goal_head(fused)
    logits_BxG = self.goal_mask_add(P.index(self.goal_score(hid), np.s_[..., 0]), goal_mask_BxG)
    offsets = self.offset_head(hid) if self.goal_offset else None
    return logits_BxG, offsets

  def score_goals(self, enc: Encoding, goals_BxGx2, goal_mask_BxG: jax.Array, lanes: "TopLanes | None" = None):
    """(masked logits BxG, log-probs BxG, offsets BxGx2 or None) of the sparse candidates."""
    logits_BxG, offsets = self.goal_logits(enc, goals_BxGx2, goal_mask_BxG, lanes)
    return logits_BxG, self.goal_log_softmax(logits_BxG), offsets

  def dense_goals(self, goals_BxGx2, logits_BxG, goal_mask_BxG):
    """(dense goals BxPx2 on the sparse goals' grid, their mask BxP): the lattice grid around the top M sparse
    goals, de-duplicated, the first P unique points kept in seed order (best seed first)."""
    m = min(self.dense_seeds, logits_BxG.shape[-1])
    seed_idx_BxM = P.masked_top_k(logits_BxG, goal_mask_BxG, m)
    seeds_BxMx2 = P.take_along_axis(goals_BxGx2, P.index(seed_idx_BxM, np.s_[..., None]), axis=-2)
    seed_valid_BxM = P.take_along_axis(goal_mask_BxG, seed_idx_BxM, axis=-1)
    seed_logits_BxM = P.take_along_axis(logits_BxG, seed_idx_BxM, axis=-1)
    grid_BxQx2 = self.dense_grid(seeds_BxMx2)                    # Q = M * D
    grid_mask_BxQ = self.dense_grid_mask(seeds_BxMx2, seed_valid_BxM)
    d = (2 * self.dense_radius + 1)**2
    b = logits_BxG.shape[0]
    rank_BxQ = P.reshape(P.broadcast_to(P.index(seed_logits_BxM, np.s_[..., None]), (b, m, d)), (b, m * d))
    keep_BxP = P.masked_top_k(rank_BxQ, grid_mask_BxQ, min(self.dense_points, m * d))
    dense_BxPx2 = P.take_along_axis(grid_BxQx2, P.index(keep_BxP, np.s_[..., None]), axis=-2)
    return dense_BxPx2, P.take_along_axis(grid_mask_BxQ, keep_BxP, axis=-1)

  def goal_set(self, enc: Encoding, goals_BxGx2, goal_mask_BxG, logits_BxG, logp_BxG,
               lanes: "TopLanes | None" = None) -> GoalSet:
    """The scored goal set: the sparse candidates alone, or with the dense stage their union with the dense
    points under one log-softmax."""
    if not self.dense_seeds:
      return GoalSet(goals_BxGx2, goal_mask_BxG, logits_BxG, logp_BxG)
    dense_BxPx2, dense_mask_BxP = self.dense_goals(goals_BxGx2, logits_BxG, goal_mask_BxG)
    with call_tag("dense"):
      dense_logits_BxP, _ = self.goal_logits(enc, dense_BxPx2, dense_mask_BxP, lanes)
    logits_BxU = P.join([logits_BxG, dense_logits_BxP], axis=-1)
    return GoalSet(P.join([goals_BxGx2, dense_BxPx2], axis=-2),
                   P.concatenate([goal_mask_BxG, dense_mask_BxP], axis=-1), logits_BxU,
                   self.set_log_softmax(logits_BxU))

  def lane_logits(self, enc: Encoding):
    """(masked lane logits BxL, lane mask BxL): DenseTNT's lane scoring, one score per lane polyline from the
    lane's and the agent's features. With `lane_top_k` it is part of the deployed model (quantized like the
    rest); without, a training-only auxiliary head in float on the encoder's values."""
    poly = P.index(enc.polylines_BxNxH, np.s_[..., self.num_traj:, :])
    mask = P.index(enc.polyline_mask_BxN, np.s_[..., self.num_traj:])
    agent = enc.agent_BxH
    if not self.lane_top_k:
      poly, mask, agent = P.value(poly), P.value(mask), P.value(agent)
    ctx = P.index(self.lane_context(agent), np.s_[..., None, :])
    hid = self.lane_relu(self.lane_add(self.lane_hidden(poly), ctx))
    return self.lane_mask_add(P.index(self.lane_out(hid), np.s_[..., 0]), mask), mask

  def top_lanes(self, enc: Encoding, lane_logits_BxL, lane_mask_BxL) -> "TopLanes":
    """The `lane_top_k` best-scored lanes' features and mask (what every goal attends to a second time)."""
    k = min(self.lane_top_k, lane_logits_BxL.shape[-1])
    idx_BxK = P.masked_top_k(lane_logits_BxL, lane_mask_BxL, k)
    poly = P.index(enc.polylines_BxNxH, np.s_[..., self.num_traj:, :])
    return TopLanes(P.take_along_axis(poly, P.index(idx_BxK, np.s_[..., None]), axis=-2),
                    P.take_along_axis(lane_mask_BxL, idx_BxK, axis=-1))

  def lanes(self, enc: Encoding):
    """(top lanes or None, lane logits BxL or None) of the configured lane scoring."""
    if not self.lane_scoring:
      return None, None
    logits_BxL, mask_BxL = self.lane_logits(enc)
    return (self.top_lanes(enc, logits_BxL, mask_BxL) if self.lane_top_k else None), logits_BxL

  def add_offsets(self, goals_BxNx2, offsets_BxNx2):
    return self.offset_add(goals_BxNx2, offsets_BxNx2)

  def complete(self, enc: Encoding, goals_BxNx2: jax.Array) -> jax.Array:
    """Trajectories (BxNxFx2) ending near each of N goals per scene."""
    poly = jax.lax.stop_gradient(enc.polylines_BxNxH)
    agent = jax.lax.stop_gradient(enc.agent_BxH)
    t = goals_BxNx2
    for layer in self.target_graph:
      t = layer(t)
    att = self.target_attention(t, P.index(poly, np.s_[..., :self.num_traj, :]),
                                P.index(enc.polyline_mask_BxN, np.s_[..., :self.num_traj]))
    t = self.target_residual(t, att)
    ctx = P.broadcast_to(P.index(agent, np.s_[..., None, :]), t.shape)
    out = self.traj_out(self.traj_hidden(self.traj_concat([t, ctx])))
    return P.reshape(out, out.shape[:-1] + (self.pred_steps, 2))


class DenseTNT(nn.Module):
  """The full model. `apply(v, inputs, train=True)` -> TrainOutputs; `apply(v, inputs, method="predict")`
  (or train=False) -> Prediction. `inputs` is a dict keyed by Scene field names (batched). With v["quant"]
  (densetnt_jax.quant) the same calls run the fake-quant model; predict is what `quant.convert` records."""
  encoder: Vectornet
  decoder: Densetnt
  postprocess: PostprocessSettings = PostprocessSettings()

  def _encode(self, inputs: dict) -> Encoding:
    t = inputs["trajs_TxVxC"].shape[-3]
    if t != self.decoder.num_traj:
      raise ValueError(f"DenseTNT: trajs_TxVxC holds {t} trajectories but model.num_traj is "
                       f"{self.decoder.num_traj}; set model.num_traj = data.max_traj_num")
    return self.encoder(inputs)

  def __call__(self, inputs: dict, train: bool = True):
    if not train:
      return self.predict(inputs)
    if "future_Fx2" not in inputs:
      raise KeyError("DenseTNT(train=True) teacher-forces the completion with inputs['future_Fx2'][:, -1]; "
                     "pass the labels, or use method='predict'")
    enc = self._encode(inputs)
    goals_BxGx2, logp_BxG, offsets, gs, lane_logits_BxL = self._score(inputs, enc)
    gt_goal_Bx1x2 = P.quantize_as(inputs["future_Fx2"][..., -1:, :], goals_BxGx2)   # on the goals' grid
    traj_BxFx2 = P.index(self.decoder.complete(enc, gt_goal_Bx1x2), np.s_[..., 0, :, :])
    out = TrainOutputs(P.value(logp_BxG), P.value(traj_BxFx2), None if offsets is None else P.value(offsets))
    if lane_logits_BxL is not None:
      out = out._replace(lane_logprobs_BxL=P.log_softmax(P.value(lane_logits_BxL)))
    if self.decoder.dense_seeds:
      out = out._replace(set_logprobs_BxU=P.value(gs.logprobs_BxU), set_goals_BxUx2=P.value(gs.goals_BxUx2),
                         set_mask_BxU=P.value(gs.mask_BxU))
    return out

  def _score(self, inputs: dict, enc: Encoding):
    """What training and predict share: (sparse goals BxGx2 on the goals' grid, their log-probs, offsets or
    None, the scored goal set, lane logits BxL or None)."""
    mask_BxG = inputs["goal_mask_G"]
    goals_BxGx2 = self.decoder.mask_goals(inputs["goals_Gx2"], mask_BxG)
    lanes, lane_logits_BxL = self.decoder.lanes(enc)
    logits_BxG, logp_BxG, offsets = self.decoder.score_goals(enc, goals_BxGx2, mask_BxG, lanes)
    gs = self.decoder.goal_set(enc, goals_BxGx2, mask_BxG, logits_BxG, logp_BxG, lanes)
    return goals_BxGx2, logp_BxG, offsets, gs, lane_logits_BxL

  def predict(self, inputs: dict) -> Prediction:
    enc = self._encode(inputs)
    _, logp_BxG, offsets, gs, _ = self._score(inputs, enc)
    k = min(self.decoder.top_k, gs.logits_BxU.shape[-1])
    idx_BxN = P.masked_top_k(gs.logits_BxU, gs.mask_BxU, k)
    idx_BxNx1 = P.index(idx_BxN, np.s_[..., None])
    top_logp = P.take_along_axis(gs.logprobs_BxU, idx_BxN, axis=-1)
    top_valid = P.take_along_axis(gs.mask_BxU, idx_BxN, axis=-1)
    top_goals = P.take_along_axis(gs.goals_BxUx2, idx_BxNx1, axis=-2)
    if offsets is not None:
      top_goals = self.decoder.add_offsets(top_goals, P.take_along_axis(offsets, idx_BxNx1, axis=-2))
    top_trajs = self.decoder.complete(enc, top_goals)
    out = P.outputs(goal_logprobs_BxG=logp_BxG, topk_goals_BxNx2=top_goals, topk_logprobs_BxN=top_logp,
                    topk_valid_BxN=top_valid, topk_trajs_BxNxFx2=top_trajs)
    return finish_prediction(**out, settings=self.postprocess)


def build_model(config) -> DenseTNT:
  """The model from a full config (`configs/argo.py`): config.model, config.postprocess, config.data."""
  m, p = config.model, config.postprocess
  if p.pred_steps != m.pred_steps:
    raise ValueError(f"postprocess.pred_steps={p.pred_steps} != model.pred_steps={m.pred_steps}")
  if "data" in config and config.data.max_traj_num != m.num_traj:
    raise ValueError(f"model.num_traj={m.num_traj} must equal data.max_traj_num={config.data.max_traj_num}")
  num_heads = m.get("num_heads", 1)
  encoder = Vectornet(depth=m.depth, traj_in_channels=m.traj_in_channels, lane_in_channels=m.lane_in_channels,
                      hidden_size=m.hidden_size, num_heads=num_heads)
  decoder = Densetnt(in_channels=m.hidden_size, hidden_size=m.hidden_size, num_traj=m.num_traj,
                     target_graph_depth=m.target_graph_depth, pred_steps=m.pred_steps, top_k=m.top_k,
                     num_heads=num_heads, goal_offset=m.get("goal_offset", False),
                     dense_seeds=m.get("dense_seeds", 0), dense_points=m.get("dense_points", 512),
                     dense_radius=m.get("dense_radius", 2), dense_spacing=m.get("dense_spacing", 1.0),
                     lane_scoring=m.get("lane_scoring", False), lane_top_k=m.get("lane_top_k", 0))
  return DenseTNT(encoder=encoder, decoder=decoder, postprocess=PostprocessSettings.from_config(p))
