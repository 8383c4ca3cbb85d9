"""Constant-velocity baseline on synthetic agent tracks."""
import numpy as np

from densetnt_jax.eval.baselines import constant_velocity


def _track_vectors(points_Sx2, t=3):
  """Vectorized trajectories (1, t, S-1, 9) with the agent in row 0 built from its points."""
  v = len(points_Sx2) - 1
  trajs = np.zeros((1, t, v, 9), np.float32)
  trajs[0, 0, :, 0:2] = points_Sx2[:-1]
  trajs[0, 0, :, 2:4] = points_Sx2[1:]
  trajs[0, 0, :, 5] = 1.0
  trajs[0, 1, :, 0:4] = 99.0  # the AV must not matter
  return trajs, np.ones((1, t, v), bool)


def test_straight_line_is_exact():
  vel = np.array([0.3, 1.2])
  points = (np.arange(20) - 19)[:, None] * vel  # ends at the origin
  trajs, mask = _track_vectors(points)
  pred, prob = constant_velocity(trajs, mask, pred_steps=30, heading_steps=5)
  assert pred.shape == (1, 1, 30, 2) and prob.shape == (1, 1)
  np.testing.assert_allclose(pred[0, 0], np.arange(1, 31)[:, None] * vel, atol=1e-5)
  np.testing.assert_array_equal(prob, 1.0)


def test_masked_vectors_use_last_valid_ones():
  steps = np.arange(20, dtype=np.float64)
  points = np.stack([np.zeros(20), 0.05 * steps ** 2], axis=1)  # accelerating: every vector differs
  points -= points[-1]
  trajs, mask = _track_vectors(points)
  mask[0, 0, [16, 18]] = False
  pred, _ = constant_velocity(trajs, mask, pred_steps=4, heading_steps=3)
  disp = points[1:] - points[:-1]
  vel = disp[[14, 15, 17]].mean(axis=0)
  expected = points[18] + np.arange(1, 5)[:, None] * vel  # from the end of vector 17
  np.testing.assert_allclose(pred[0, 0], expected, atol=1e-5)


def test_batch_and_no_valid_vector():
  points = (np.arange(20) - 19)[:, None] * np.array([1.0, 0.0])
  trajs, mask = _track_vectors(points)
  trajs, mask = np.concatenate([trajs, trajs]), np.concatenate([mask, mask])
  mask[1, 0] = False
  pred, _ = constant_velocity(trajs, mask, pred_steps=3)
  np.testing.assert_allclose(pred[0, 0], [[1, 0], [2, 0], [3, 0]], atol=1e-6)
  np.testing.assert_array_equal(pred[1, 0], 0.0)
