"""Non-learned baselines in the agent frame, to put the model's metrics in context."""
from __future__ import annotations

import numpy as np


def constant_velocity(trajs_BxTxVxC: np.ndarray, traj_vector_mask_BxTxV: np.ndarray, pred_steps: int = 30,
                      heading_steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """Extrapolates the AGENT (row 0) at its mean displacement over its last `heading_steps` valid vectors.

  Each vector spans one 10 Hz step, so the mean vector is the per-step velocity. The extrapolation starts at
  the end of the last valid vector (the agent-frame origin for a complete track). An agent with no valid
  vector stands still at the origin. Returns (pred_Bx1xFx2 float32, prob_Bx1 ones).
  """
  agent_BxVxC = np.asarray(trajs_BxTxVxC, np.float64)[:, 0]
  mask_BxV = np.asarray(traj_vector_mask_BxTxV, bool)[:, 0]
  b, v = mask_BxV.shape
  # Rank of each valid vector counted from the end (1 = last valid); keep the last heading_steps of them.
  rank_BxV = np.cumsum(mask_BxV[:, ::-1], axis=1)[:, ::-1]
  used_BxV = mask_BxV & (rank_BxV <= heading_steps)
  disp_BxVx2 = agent_BxVxC[:, :, 2:4] - agent_BxVxC[:, :, 0:2]
  count_B = used_BxV.sum(axis=1)
  vel_Bx2 = (disp_BxVx2 * used_BxV[:, :, None]).sum(axis=1) / np.maximum(count_B, 1)[:, None]
  last_B = np.where(mask_BxV.any(axis=1), v - 1 - np.argmax(mask_BxV[:, ::-1], axis=1), 0)
  last_Bx2 = np.where(mask_BxV.any(axis=1)[:, None], agent_BxVxC[np.arange(b), last_B, 2:4], 0.0)
  steps_F = np.arange(1, pred_steps + 1, dtype=np.float64)
  pred_BxFx2 = last_Bx2[:, None] + steps_F[None, :, None] * vel_Bx2[:, None]
  return pred_BxFx2[:, None].astype(np.float32), np.ones((b, 1), np.float32)
