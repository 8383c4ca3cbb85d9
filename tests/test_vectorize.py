"""Scene vectorization on real scenes: frame, inverse transform, padding, candidates, ordering."""
import glob

import numpy as np
import pytest
from scipy.spatial import cKDTree

from densetnt_jax.data.argoverse import read_forecasting_csv
from densetnt_jax.data.hdmap import load_city_map
from densetnt_jax.data.scene import to_agent_frame, to_city_frame, to_city_frame_batch
from densetnt_jax.data.vectorize import agent_frame, vectorize_sequence


@pytest.fixture(scope="module")
def scenes(argo_dir, config):
  out = []
  for path in sorted(glob.glob(str(argo_dir / "val" / "data" / "*.csv")))[:25]:
    seq = read_forecasting_csv(path, 50)
    out.append((seq, vectorize_sequence(seq, load_city_map(argo_dir / "map_files", seq.city), config.data)))
  return out


def test_frame_is_a_true_rotation_and_agent_heads_up(scenes, config):
  for seq, scene in scenes:
    r = scene.rotation_2x2
    np.testing.assert_allclose(r @ r.T, np.eye(2), atol=1e-12)
    assert abs(np.linalg.det(r) - 1) < 1e-12
    agent = seq.xy_NxSx2[seq.agent_index]
    h = config.data.heading_steps
    d = to_agent_frame(agent[19] - agent[19 - h], np.zeros(2), r)
    assert abs(d[0]) < 1e-9 and d[1] >= 0
    np.testing.assert_allclose(scene.trajs_TxVxC[0, -1, 2:4], 0.0, atol=1e-6)  # last agent point at origin


def test_inverse_transform_recovers_city_coordinates(scenes):
  for seq, scene in scenes:
    city = seq.xy_NxSx2[seq.agent_index]
    back = to_city_frame(to_agent_frame(city, scene.origin_2, scene.rotation_2x2), scene.origin_2,
                         scene.rotation_2x2)
    assert np.max(np.abs(back - city)) < 1e-6
    # The stored float32 future maps back to within float32 resolution.
    stored = to_city_frame(scene.future_Fx2, scene.origin_2, scene.rotation_2x2)
    assert np.max(np.abs(stored - city[20:])) < 1e-4
  batch_xy = np.stack([s.future_Fx2 for _, s in scenes])[:, None]
  batch = to_city_frame_batch(batch_xy, np.stack([s.origin_2 for _, s in scenes]),
                              np.stack([s.rotation_2x2 for _, s in scenes]))
  np.testing.assert_allclose(batch[3, 0], to_city_frame(scenes[3][1].future_Fx2, scenes[3][1].origin_2,
                                                        scenes[3][1].rotation_2x2))


def test_padding_holds_no_data(scenes):
  for _, s in scenes:
    assert not s.trajs_TxVxC[~s.traj_vector_mask_TxV].any()
    assert not s.traj_vector_mask_TxV[~s.traj_mask_T].any()
    assert not s.lanes_LxVxC[~s.lane_vector_mask_LxV].any()
    assert not s.lane_vector_mask_LxV[~s.lane_mask_L].any()
    assert not s.goals_Gx2[~s.goal_mask_G].any()
    for mask in (s.traj_mask_T, s.lane_mask_L, s.goal_mask_G):   # real slots first, then padding
      n = mask.sum()
      assert mask[:n].all() and not mask[n:].any()


def test_contents_follow_the_spec(scenes, config):
  d = config.data
  for seq, s in scenes:
    assert s.trajs_TxVxC[0, :, 5].all() and s.traj_vector_mask_TxV[0].all()      # AGENT first, complete
    ends = s.trajs_TxVxC[..., 2:4][s.traj_vector_mask_TxV]
    # Every kept track ends (at its last observed point) within max_distance.
    n = s.traj_mask_T.sum()
    last = np.array([s.trajs_TxVxC[t, np.flatnonzero(s.traj_vector_mask_TxV[t])[-1], 2:4] for t in range(n)])
    assert np.all(np.linalg.norm(last, axis=-1) <= d.max_distance + 1e-3) and len(ends)
    others = np.linalg.norm(last[s.trajs_TxVxC[:n, 0, 7] > 0], axis=-1)
    assert np.all(np.diff(others) >= -1e-4)                                     # OTHERS nearest first
    lanes = s.lanes_LxVxC[s.lane_mask_L]
    pts = np.concatenate([lanes[:, :, 0:2], lanes[:, -1:, 2:4]], axis=1)
    lane_dist = np.linalg.norm(pts, axis=-1).min(1)
    assert np.all(lane_dist <= d.max_distance + 1e-3) and np.all(np.diff(lane_dist) >= -1e-3)
    # Candidates cover every kept centerline at <= goal_spacing: any centerline point is within
    # spacing/2 of a candidate.
    tree = cKDTree(s.goals_Gx2[s.goal_mask_G])
    t = np.linspace(0, 1, 7)[:, None, None]
    along = (lanes[None, :, :, 0:2] * (1 - t[..., None]) + lanes[None, :, :, 2:4] * t[..., None]).reshape(-1, 2)
    assert tree.query(along)[0].max() <= d.goal_spacing / 2 + 1e-3
    # Label: the candidate nearest the GT endpoint.
    g = s.goals_Gx2[s.goal_mask_G]
    assert s.goal_index == np.argmin(np.linalg.norm(g - s.future_Fx2[-1], axis=-1))
    assert s.has_future


def test_static_agent_keeps_city_axes():
  xy = np.tile([[10.0, 20.0]], (50, 1))
  origin, rot = agent_frame(xy, 20, 5)
  np.testing.assert_array_equal(origin, [10.0, 20.0])
  np.testing.assert_array_equal(rot, np.eye(2))
