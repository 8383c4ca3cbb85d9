"""Scene vectorization (pure numpy): a raw sequence + its city map -> a fixed-shape `Scene`.

See `densetnt_jax.data.scene` for the frame and channel layout. All geometry is computed in float64 and
stored as float32; the transform (origin, rotation) stays float64 so city coordinates are recoverable.
"""
from __future__ import annotations

import numpy as np

from densetnt_jax.data.argoverse import DEFAULT_MAX_ABS_COORDINATE, ForecastingSequence, read_forecasting_csv
from densetnt_jax.data.errors import CsvError
from densetnt_jax.data.hdmap import CityMap, load_city_map
from densetnt_jax.data.scene import Scene, empty_scene, encode_city, shapes_from_config, to_agent_frame

# Settings that change what a packed record holds: stored in each LMDB and checked against the config on load.
VECTORIZE_KEYS = ("obs_steps", "pred_steps", "max_distance", "max_traj_num", "max_lane_num", "max_goals_num",
                  "lane_points", "lane_piece_max_length", "goal_spacing", "heading_steps")


def vectorize_settings(data_config) -> dict:
  return {k: data_config[k] for k in VECTORIZE_KEYS}


def agent_frame(agent_xy_Sx2: np.ndarray, obs_steps: int, heading_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """(origin_2, rotation_2x2): origin at the last observed point, the mean recent displacement along +y.

  A true rotation R with R @ heading = (0, |heading|); a (nearly) static agent keeps the city axes.
  """
  origin = agent_xy_Sx2[obs_steps - 1].astype(np.float64)
  h = min(heading_steps, obs_steps - 1)
  d = (agent_xy_Sx2[obs_steps - 1] - agent_xy_Sx2[obs_steps - 1 - h]) / h
  norm = float(np.hypot(d[0], d[1]))
  if norm < 1e-6:
    return origin, np.eye(2)
  c, s = d / norm                       # heading = (cos phi, sin phi)
  return origin, np.array([[s, -c], [c, s]], np.float64)


def vectorize_sequence(seq: ForecastingSequence, city_map: CityMap, data_config) -> Scene:
  """The `Scene` of one sequence; fixed shapes from the config maxima, padded slots zero and masked."""
  d = data_config
  obs, pred = d.obs_steps, d.pred_steps
  if seq.num_steps < obs:
    raise CsvError(seq.path, f"{seq.num_steps} steps, fewer than the {obs} observed steps needed")
  has_future = seq.num_steps >= obs + pred
  scene = empty_scene(shapes_from_config(d))
  agent_xy = seq.xy_NxSx2[seq.agent_index]
  origin, rot = agent_frame(agent_xy, obs, d.heading_steps)
  scene.origin_2[:] = origin
  scene.rotation_2x2[:] = rot
  scene.seq_id[...] = seq.seq_id
  scene.city_code[:] = encode_city(seq.city)

  _fill_trajectories(scene, seq, origin, rot, d)
  lane_pts_LxPx2 = _fill_lanes(scene, city_map, origin, rot, d)
  goals = _goal_candidates(lane_pts_LxPx2, d.goal_spacing, d.max_goals_num)
  scene.goals_Gx2[:len(goals)] = goals
  scene.goal_mask_G[:len(goals)] = True

  if has_future:
    future = to_agent_frame(agent_xy[obs:obs + pred], origin, rot)
    scene.future_Fx2[:] = future
    scene.has_future[...] = True
    if len(goals):
      scene.goal_index[...] = int(np.argmin(np.sum((goals - future[-1]) ** 2, axis=-1)))
    else:
      scene.goal_index[...] = -1
  else:
    scene.goal_index[...] = -1
  return scene


def _fill_trajectories(scene: Scene, seq: ForecastingSequence, origin, rot, d) -> None:
  obs = d.obs_steps
  xy = seq.xy_NxSx2[:, :obs]
  seen = seq.observed_NxS[:, :obs]
  last_seen = np.where(seen.any(1), obs - 1 - np.argmax(seen[:, ::-1], axis=1), 0)
  last_xy = xy[np.arange(len(xy)), last_seen]
  dist = np.linalg.norm(last_xy - origin, axis=-1)
  has_vector = (seen[:, 1:] & seen[:, :-1]).any(1)
  others = [t for t in range(len(xy)) if t not in (seq.agent_index, seq.av_index)
            and has_vector[t] and dist[t] <= d.max_distance]
  others.sort(key=lambda t: dist[t])
  rows = [seq.agent_index]
  if seq.av_index >= 0 and has_vector[seq.av_index] and dist[seq.av_index] <= d.max_distance:
    rows.append(seq.av_index)
  rows = (rows + others)[:d.max_traj_num]

  t = np.asarray(rows)
  pts_TxSx2 = to_agent_frame(np.nan_to_num(xy[t]).reshape(-1, 2), origin, rot).reshape(len(t), obs, 2)
  valid_TxV = seen[t, 1:] & seen[t, :-1]
  dt_V = np.diff(seq.timestamps_S[:obs])
  feats = np.zeros((len(t), obs - 1, 9))
  feats[..., 0:2] = pts_TxSx2[:, :-1]
  feats[..., 2:4] = pts_TxSx2[:, 1:]
  feats[..., 4] = seq.timestamps_S[1:obs] - seq.timestamps_S[obs - 1]
  types = np.array([seq.object_types[i] for i in rows])
  feats[..., 5] = (types == "AGENT")[:, None]
  feats[..., 6] = (types == "AV")[:, None]
  feats[..., 7] = (types == "OTHERS")[:, None]
  feats[..., 8] = np.linalg.norm(pts_TxSx2[:, 1:] - pts_TxSx2[:, :-1], axis=-1) / np.maximum(dt_V, 1e-3)
  feats *= valid_TxV[..., None]
  n = len(t)
  scene.trajs_TxVxC[:n] = feats
  scene.traj_vector_mask_TxV[:n] = valid_TxV
  scene.traj_mask_T[:n] = True


def _fill_lanes(scene: Scene, city_map: CityMap, origin, rot, d) -> np.ndarray:
  """Lane pieces within max_distance, nearest first; returns their points (agent frame, float64)."""
  pieces = city_map.lane_pieces(d.lane_points, d.lane_piece_max_length)
  p = d.lane_points
  idx = np.asarray(pieces.tree.query_ball_point(origin, d.max_distance), np.int64)
  if idx.size == 0:
    return np.zeros((0, p, 2))
  piece = idx // p
  dist = np.linalg.norm(pieces.points_QxPx2.reshape(-1, 2)[idx] - origin, axis=-1)
  best = {}
  for q, r in zip(piece.tolist(), dist.tolist()):
    if r < best.get(q, np.inf):
      best[q] = r
  chosen = sorted(best, key=lambda q: (best[q], q))[:d.max_lane_num]
  q = np.asarray(chosen)
  pts = to_agent_frame(pieces.points_QxPx2[q].reshape(-1, 2), origin, rot).reshape(len(q), p, 2)
  feats = np.zeros((len(q), p - 1, 11))
  feats[..., 0:2] = pts[:, :-1]
  feats[..., 2:4] = pts[:, 1:]
  feats[..., 4:10] = pieces.attributes_Qx6[q][:, None, :]
  feats[..., 10] = np.arange(p - 1) / (p - 1)
  scene.lanes_LxVxC[:len(q)] = feats
  scene.lane_vector_mask_LxV[:len(q)] = True
  scene.lane_mask_L[:len(q)] = True
  return pts


def _goal_candidates(lane_pts_LxPx2: np.ndarray, spacing: float, max_goals: int) -> np.ndarray:
  """Points every <= spacing metres along the centerlines, de-duplicated (1 cm), nearest the agent first."""
  if len(lane_pts_LxPx2) == 0:
    return np.zeros((0, 2))
  start = lane_pts_LxPx2[:, :-1].reshape(-1, 2)
  end = lane_pts_LxPx2[:, 1:].reshape(-1, 2)
  n = np.maximum(1, np.ceil(np.linalg.norm(end - start, axis=-1) / spacing - 1e-9)).astype(np.int64)
  seg = np.repeat(np.arange(len(n)), n)
  frac = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
  pts = start[seg] + frac[:, None] * (end[seg] - start[seg])
  pts = np.concatenate([pts, end.reshape(-1, 2)[np.cumsum(np.full(len(lane_pts_LxPx2),
                                                                   lane_pts_LxPx2.shape[1] - 1)) - 1]])
  _, keep = np.unique(np.round(pts * 100).astype(np.int64), axis=0, return_index=True)
  pts = pts[np.sort(keep)]
  order = np.argsort(np.einsum("ij,ij->i", pts, pts), kind="stable")
  return pts[order[:max_goals]]


def unusable_reason(scene: Scene, data_config) -> str | None:
  """Why a vectorized scene cannot be labelled (no lane, hence no goal candidate, near the agent), or None.

  Such a scene is still packed (eval and the leaderboard need every sequence); training skips it
  (config data.skip_unusable_scenes).
  """
  if not np.any(scene.lane_mask_L):
    return (f"no lane within max_distance {data_config.max_distance:g} m of the agent (off the map?): "
            "no goal candidate")
  if not np.any(scene.goal_mask_G):
    return "no goal candidate on the lanes near the agent"
  return None


def vectorize_csv(csv_path, map_dir, data_config, expected_steps: int | None = None) -> Scene:
  """Reads one raw forecasting CSV and vectorizes it (the path `predict_csv` and the packer share)."""
  seq = read_forecasting_csv(csv_path, expected_steps,
                             data_config.get("max_abs_coordinate", DEFAULT_MAX_ABS_COORDINATE))
  return vectorize_sequence(seq, load_city_map(map_dir, seq.city), data_config)
