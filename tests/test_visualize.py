"""Scene drawing renders to a real PNG, with and without predictions and goal scores."""
import numpy as np
from matplotlib import image as mimage

from densetnt_jax.data.scene import empty_scene, encode_city, scene_shapes
from densetnt_jax.eval.visualize import save_scene_png


def _scene():
  s = empty_scene(scene_shapes(max_traj_num=4, max_lane_num=3, max_goals_num=16))
  pts = np.stack([np.zeros(20), np.arange(-19, 1) * 1.0], axis=1)
  s.trajs_TxVxC[0, :, 0:2], s.trajs_TxVxC[0, :, 2:4], s.trajs_TxVxC[0, :, 5] = pts[:-1], pts[1:], 1.0
  s.trajs_TxVxC[1, :, 0:2], s.trajs_TxVxC[1, :, 2:4], s.trajs_TxVxC[1, :, 6] = pts[:-1] + [4, 0], pts[1:] + [4, 0], 1
  s.trajs_TxVxC[2, :, 0:2], s.trajs_TxVxC[2, :, 2:4], s.trajs_TxVxC[2, :, 7] = pts[:-1] - [4, 5], pts[1:] - [4, 5], 1
  s.traj_vector_mask_TxV[:3] = True
  s.traj_vector_mask_TxV[2, 5:9] = False  # a gap in the OTHERS track
  s.traj_mask_T[:3] = True
  for l, x in enumerate([-2.0, 2.0]):
    ys = np.linspace(-20.0, 30.0, 10)
    s.lanes_LxVxC[l, :, 0], s.lanes_LxVxC[l, :, 1] = x, ys[:-1]
    s.lanes_LxVxC[l, :, 2], s.lanes_LxVxC[l, :, 3] = x, ys[1:]
  s.lane_vector_mask_LxV[:2] = True
  s.lane_mask_L[:2] = True
  s.goals_Gx2[:12] = np.stack([np.repeat([-2.0, 2.0], 6), np.tile(np.arange(6) * 5.0, 2)], axis=1)
  s.goal_mask_G[:12] = True
  s.future_Fx2[:] = np.stack([np.zeros(30), np.arange(1, 31) * 0.8], axis=1)
  return s._replace(has_future=np.array(True), seq_id=np.array(1234), city_code=encode_city("PIT"))


def _check_png(path):
  raw = path.read_bytes()
  assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
  img = mimage.imread(str(path))[..., :3]
  red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
  assert red.sum() > 50  # the agent track is drawn
  return img


def test_renders_scene_png(tmp_path):
  scene = _scene()
  plain = _check_png(_save(tmp_path / "plain.png", scene))
  preds = np.stack([np.stack([np.full(30, dx), np.arange(1, 31) * 0.7], axis=1) for dx in (-2, 0, 2)])
  full = _check_png(_save(tmp_path / "pred.png", scene, prediction_trajs_KxFx2=preds,
                          prediction_probs_K=[0.5, 0.3, 0.2], goal_scores_G=np.linspace(-3, 3, 16), title="t"))
  orange = lambda im: ((im[..., 0] > 0.9) & (np.abs(im[..., 1] - 0.5) < 0.1) & (im[..., 2] < 0.2)).sum()
  assert orange(full) > 50 and orange(plain) == 0


def _save(path, scene, **kw):
  save_scene_png(str(path), scene, **kw)
  return path
