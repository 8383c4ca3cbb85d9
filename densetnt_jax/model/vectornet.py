"""VectorNet encoder: polyline subgraphs (trajectories, lanes) and a global interaction graph."""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from densetnt_jax.model import primitives as P


class Encoding(NamedTuple):
  """What the decoder reads. Polylines are the trajectories (first T rows, AGENT at row 0) then the lanes."""
  polylines_BxNxH: jax.Array   # global-graph features
  polyline_mask_BxN: jax.Array
  agent_BxH: jax.Array         # the AGENT's row: the scene context


class SubGraph(nn.Module):
  """VectorNet polyline subgraph: `depth` layers of per-vector MLP, each followed by a masked max-pool over
  the polyline's vectors that is concatenated back to every vector; the polyline feature is the masked max of
  the last layer. Layers before the last are hidden/2 wide (so vector + pool = hidden); the last layer is
  hidden wide and its pool is the output (concatenating it back would only duplicate it)."""
  depth: int
  hidden_size: int

  @nn.compact
  def __call__(self, vectors_BxPxVxC: jax.Array, vector_mask_BxPxV: jax.Array) -> jax.Array:
    x = P.MaskedFill(name="input_mask")(vectors_BxPxVxC, vector_mask_BxPxV[..., None])
    for i in range(self.depth):
      last = i == self.depth - 1
      x = P.MLP(self.hidden_size if last else self.hidden_size // 2, name=f"layer_{i}")(x)
      pooled_BxPxC = P.MaskedMax(name=f"pool_{i}")(x, vector_mask_BxPxV)
      if last:
        return pooled_BxPxC
      x = P.Concat(name=f"cat_{i}")([x, jnp.broadcast_to(pooled_BxPxC[..., None, :], x.shape)])
    raise ValueError(f"SubGraph depth must be >= 1; got {self.depth}")


class Attention(nn.Module):
  """Multi-head attention of queries over masked keys/values (q, k, v and output projections).

  Masked keys get an additive -100 (`MaskAdd`), so a row whose keys are all masked is still finite (uniform
  weights over garbage it never reports, since its own output is masked downstream)."""
  hidden_size: int
  num_heads: int = 1

  @nn.compact
  def __call__(self, x_BxMxH: jax.Array, kv_BxNxH: jax.Array, kv_mask_BxN: jax.Array) -> jax.Array:
    h, d = self.num_heads, self.hidden_size // self.num_heads
    if h * d != self.hidden_size:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {h}")
    q = P.Dense(self.hidden_size, name="query")(x_BxMxH)
    k = P.Dense(self.hidden_size, name="key")(kv_BxNxH)
    v = P.Dense(self.hidden_size, name="value")(kv_BxNxH)
    m, n = q.shape[-2], k.shape[-2]
    lead = q.shape[:-2]
    if h > 1:  # (..., M, H) -> (..., h, M, d)
      q, k, v = (jnp.moveaxis(t.reshape(t.shape[:-1] + (h, d)), -2, -3) for t in (q, k, v))
      mask = kv_mask_BxN.reshape(kv_mask_BxN.shape[:-1] + (1, 1, n))
    else:
      mask = kv_mask_BxN[..., None, :]
    scores = P.MatMul(transpose_b=True, scale=1.0 / math.sqrt(d), name="scores")(q, k)
    scores = P.MaskAdd(name="mask_add")(scores, mask)
    weights = P.Softmax(name="softmax")(scores)
    out = P.MatMul(name="weighted_sum")(weights, v)
    if h > 1:
      out = jnp.moveaxis(out, -3, -2).reshape(lead + (m, self.hidden_size))
    return P.Dense(self.hidden_size, name="out")(out)


class Vectornet(nn.Module):
  """Encoder: subgraphs -> polyline features -> one masked self-attention layer with a residual add."""
  depth: int = 3
  traj_in_channels: int = 9
  lane_in_channels: int = 11
  hidden_size: int = 128
  num_heads: int = 1

  @nn.compact
  def __call__(self, inputs: dict) -> Encoding:
    trajs, lanes = inputs["trajs_TxVxC"], inputs["lanes_LxVxC"]
    for name, arr, c in (("trajs_TxVxC", trajs, self.traj_in_channels),
                         ("lanes_LxVxC", lanes, self.lane_in_channels)):
      if arr.shape[-1] != c:
        raise ValueError(f"Vectornet: inputs[{name!r}] has {arr.shape[-1]} channels, the model expects {c} "
                         "(model.traj_in_channels / model.lane_in_channels)")
    traj_BxTxH = SubGraph(self.depth, self.hidden_size, name="traj_subgraph")(
        trajs, inputs["traj_vector_mask_TxV"])
    lane_BxLxH = SubGraph(self.depth, self.hidden_size, name="lane_subgraph")(
        lanes, inputs["lane_vector_mask_LxV"])
    poly_BxNxH = P.Concat(axis=-2, name="polylines")([traj_BxTxH, lane_BxLxH])
    mask_BxN = jnp.concatenate([inputs["traj_mask_T"], inputs["lane_mask_L"]], axis=-1)
    attended = Attention(self.hidden_size, self.num_heads, name="global_graph")(poly_BxNxH, poly_BxNxH, mask_BxN)
    poly_BxNxH = P.Add(name="global_residual")(poly_BxNxH, attended)
    return Encoding(poly_BxNxH, mask_BxN, poly_BxNxH[..., 0, :])
