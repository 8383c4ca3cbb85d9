"""The vectorized scene: fixed-shape arrays with validity masks (one scene; a batch adds a leading B).

Frame: origin at the AGENT's last observed point (step obs_steps-1), rotated so the agent heads along +y.
  agent_xy = (city_xy - origin_2) @ rotation_2x2.T        city_xy = agent_xy @ rotation_2x2 + origin_2

Trajectory vectors `trajs_TxVxC` (T = max_traj_num polylines, V = obs_steps-1 = 19 vectors, C = 9):
  0-1 start x, y (m)   2-3 end x, y (m)   4 time of the end point (s, 0 at the last observed step, so <= 0)
  5 is AGENT   6 is AV   7 is OTHERS   8 speed over the vector (m/s)
  Row 0 is the AGENT, row 1 the AV, then OTHERS by distance. A vector exists only where both of its steps
  were observed (OTHERS tracks have gaps); `traj_vector_mask_TxV` says which.

Lane vectors `lanes_LxVxC` (L = max_lane_num polylines, V = lane_points-1 = 9 vectors, C = 11):
  0-1 start x, y (m)   2-3 end x, y (m)   4 has_traffic_control   5 turn LEFT   6 turn RIGHT
  7 is_intersection   8 has a left neighbour   9 has a right neighbour   10 vector index / V (position along the lane)
  Lanes (or pieces of long lanes, resampled to lane_points points) nearest the agent first.

Goal candidates `goals_Gx2`: points every <= goal_spacing m along the kept lanes' centerlines, de-duplicated,
nearest first, `goal_mask_G` marks the real ones. Labels: `future_Fx2` (agent frame), `goal_index` (the
candidate nearest the GT endpoint; -1 without a future). Padded slots hold zeros and are masked.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

TRAJ_CHANNELS = 9
LANE_CHANNELS = 11
CITY_CODE_LEN = 4

# Fields the model reads (float32 / bool only, so they can go straight into jit).
MODEL_INPUT_FIELDS = (
    "trajs_TxVxC", "traj_vector_mask_TxV", "traj_mask_T",
    "lanes_LxVxC", "lane_vector_mask_LxV", "lane_mask_L",
    "goals_Gx2", "goal_mask_G",
)


class Scene(NamedTuple):
  """One vectorized scene (or a batch of them with a leading axis). A NamedTuple, so also a JAX pytree."""
  trajs_TxVxC: np.ndarray           # float32 (max_traj_num, obs_steps-1, 9)
  traj_vector_mask_TxV: np.ndarray  # bool
  traj_mask_T: np.ndarray           # bool
  lanes_LxVxC: np.ndarray           # float32 (max_lane_num, lane_points-1, 11)
  lane_vector_mask_LxV: np.ndarray  # bool
  lane_mask_L: np.ndarray           # bool
  goals_Gx2: np.ndarray             # float32 (max_goals_num, 2)
  goal_mask_G: np.ndarray           # bool
  future_Fx2: np.ndarray            # float32 (pred_steps, 2), zeros when has_future is False
  goal_index: np.ndarray            # int32 (), -1 when has_future is False
  has_future: np.ndarray            # bool ()
  origin_2: np.ndarray              # float64 (2,) city frame
  rotation_2x2: np.ndarray          # float64 (2, 2) city -> agent frame
  seq_id: np.ndarray                # int64 ()
  city_code: np.ndarray             # uint8 (4,) ASCII city name, zero padded (e.g. b"PIT\0")


def scene_shapes(max_traj_num: int, max_lane_num: int, max_goals_num: int, obs_steps: int = 20,
                 pred_steps: int = 30, lane_points: int = 10) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """Shape and dtype of every Scene field for the given maxima (one scene, no batch axis)."""
  tv, lv = obs_steps - 1, lane_points - 1
  return {
      "trajs_TxVxC": ((max_traj_num, tv, TRAJ_CHANNELS), np.dtype(np.float32)),
      "traj_vector_mask_TxV": ((max_traj_num, tv), np.dtype(bool)),
      "traj_mask_T": ((max_traj_num,), np.dtype(bool)),
      "lanes_LxVxC": ((max_lane_num, lv, LANE_CHANNELS), np.dtype(np.float32)),
      "lane_vector_mask_LxV": ((max_lane_num, lv), np.dtype(bool)),
      "lane_mask_L": ((max_lane_num,), np.dtype(bool)),
      "goals_Gx2": ((max_goals_num, 2), np.dtype(np.float32)),
      "goal_mask_G": ((max_goals_num,), np.dtype(bool)),
      "future_Fx2": ((pred_steps, 2), np.dtype(np.float32)),
      "goal_index": ((), np.dtype(np.int32)),
      "has_future": ((), np.dtype(bool)),
      "origin_2": ((2,), np.dtype(np.float64)),
      "rotation_2x2": ((2, 2), np.dtype(np.float64)),
      "seq_id": ((), np.dtype(np.int64)),
      "city_code": ((CITY_CODE_LEN,), np.dtype(np.uint8)),
  }


def shapes_from_config(data_config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  d = data_config
  return scene_shapes(d.max_traj_num, d.max_lane_num, d.max_goals_num, d.obs_steps, d.pred_steps,
                      d.lane_points)


def empty_scene(shapes: dict) -> Scene:
  return Scene(**{k: np.zeros(s, dt) for k, (s, dt) in shapes.items()})


def encode_city(city: str) -> np.ndarray:
  raw = city.encode("ascii")
  if len(raw) > CITY_CODE_LEN:
    raise ValueError(f"city name {city!r} is longer than {CITY_CODE_LEN} characters")
  return np.frombuffer(raw.ljust(CITY_CODE_LEN, b"\0"), np.uint8).copy()


def decode_city(code: np.ndarray) -> str:
  return bytes(np.asarray(code, np.uint8)).rstrip(b"\0").decode("ascii")


def model_inputs(scene: Scene) -> dict[str, np.ndarray]:
  """The float32/bool arrays the model consumes (a dict, so jit never sees float64 fields)."""
  return {k: getattr(scene, k) for k in MODEL_INPUT_FIELDS}


def to_agent_frame(xy_Nx2: np.ndarray, origin_2: np.ndarray, rotation_2x2: np.ndarray) -> np.ndarray:
  """City -> agent frame, in float64."""
  return (np.asarray(xy_Nx2, np.float64) - origin_2) @ np.asarray(rotation_2x2, np.float64).T


def to_city_frame(xy_Nx2: np.ndarray, origin_2: np.ndarray, rotation_2x2: np.ndarray) -> np.ndarray:
  """Agent -> city frame, in float64: the exact inverse of `to_agent_frame`."""
  return np.asarray(xy_Nx2, np.float64) @ np.asarray(rotation_2x2, np.float64) + np.asarray(origin_2, np.float64)


def to_city_frame_batch(xy_Bx___x2: np.ndarray, origin_Bx2: np.ndarray, rotation_Bx2x2: np.ndarray) -> np.ndarray:
  """`to_city_frame` for a batch: any middle axes (modes, steps) between the batch axis and xy."""
  xy = np.asarray(xy_Bx___x2, np.float64)
  out = np.einsum("b...i,bij->b...j", xy, np.asarray(rotation_Bx2x2, np.float64))
  origin = np.asarray(origin_Bx2, np.float64).reshape((xy.shape[0],) + (1,) * (xy.ndim - 2) + (2,))
  return out + origin
