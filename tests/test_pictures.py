"""The pictures a person reads: fitted view, heatmap floor, best mode and miss, stage comparison, contact
sheet, scene selection, training curves and stage bars. Synthetic scenes and predictions; no training."""
import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Circle

from conftest import ROOT
from densetnt_jax.data.scene import Scene
from densetnt_jax.eval import curves, infer, visualize
from densetnt_jax.metrics import per_sequence_errors
from test_visualize import _scene


def _far_lane_scene():
  """The test scene with a third lane reaching 200 m ahead: far outside what the agent does in 5 s."""
  s = _scene()
  ys = np.linspace(-200.0, 200.0, 10)
  s.lanes_LxVxC[2, :, 0], s.lanes_LxVxC[2, :, 1] = 6.0, ys[:-1]
  s.lanes_LxVxC[2, :, 2], s.lanes_LxVxC[2, :, 3] = 6.0, ys[1:]
  s.lane_vector_mask_LxV[2] = True
  s.lane_mask_L[2] = True
  return s


def _preds_KxFx2(ends_Kx2):
  """Straight modes from the origin to each end."""
  t_F = np.arange(1, 31)[:, None] / 30.0
  return np.stack([t_F * np.asarray(e, np.float64) for e in ends_Kx2])


PROBS_K = np.array([0.35, 0.25, 0.15, 0.1, 0.1, 0.05])
# GT ends at (0, 24): mode 5 (p=0.05, the least probable) ends 0.5 m from it; one mode turns 40 m right.
ENDS_Kx2 = [(0, 18), (-8, 20), (40, 10), (3, 28), (4, 15), (0.5, 24)]


def _inside(ax, pts_Px2):
  (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
  pts = np.asarray(pts_Px2).reshape(-1, 2)
  return bool(np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)))


def test_fitted_view_contains_agent_gt_and_predictions_and_zooms_in():
  scene, preds = _far_lane_scene(), _preds_KxFx2(ENDS_Kx2)
  fig = visualize.scene_figure(scene, prediction_trajs_KxFx2=preds, prediction_probs_K=PROBS_K)
  fig.canvas.draw()   # applies the aspect: the limits below are the drawn ones
  ax = fig.axes[0]
  assert _inside(ax, visualize.agent_history_Hx2(scene))
  assert _inside(ax, scene.future_Fx2) and _inside(ax, preds)
  for line in ax.lines:   # every plotted line (GT, modes) is inside the view
    assert _inside(ax, np.asarray(line.get_xydata())), line
  assert _inside(ax, [[40, 10]]) and _inside(ax, [[0, -19]])   # the far mode and the start of the history
  assert ax.get_ylim()[1] < 100 and ax.get_ylim()[0] > -100     # zoomed: the 200 m lane is cut
  full = visualize.scene_figure(scene, prediction_trajs_KxFx2=preds, prediction_probs_K=PROBS_K, view="full")
  assert full.axes[0].get_ylim()[1] >= 200 and full.axes[0].get_ylim()[0] <= -200


def test_fit_view_is_square_with_a_margin():
  (x0, x1), (y0, y1) = visualize.fit_view(np.array([[0.0, 0.0], [4.0, 40.0]]), margin=5.0)
  assert x1 - x0 == pytest.approx(y1 - y0)
  assert y0 <= -5.0 + 1e-9 and y1 >= 45.0 - 1e-9 and x0 < 0 < 4 < x1
  (x0, x1), _ = visualize.fit_view(np.zeros((1, 2)))
  assert x1 - x0 == pytest.approx(visualize.VIEW_MIN_SIZE_M)


def test_heatmap_draws_only_goals_above_the_floor_over_the_lanes():
  scene = _scene()
  scores_G = np.full(16, -50.0)
  scores_G[:3] = [0.0, -1.0, -2.0]   # three real candidates carry the probability
  goals, probs = visualize.heatmap_goals(scene, goal_scores_G=scores_G, floor=1e-3)
  assert len(goals) == 3 and np.all(np.diff(probs) >= 0) and probs.sum() == pytest.approx(1.0, abs=1e-6)
  fig = visualize.scene_figure(scene, goal_scores_G=scores_G)
  ax = fig.axes[0]
  heat = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is not None]
  assert len(heat) == 1 and len(heat[0].get_offsets()) == 3
  lanes = ax.collections[0]
  assert heat[0].get_zorder() > lanes.get_zorder()
  # The model's top goals (sparse + dense) replace the sparse softmax when given.
  top_goals, top_logp = np.array([[1.0, 5.0], [9.0, 9.0]]), np.log([0.9, 1e-5])
  goals, probs = visualize.heatmap_goals(scene, goal_scores_G=scores_G, topk_goals_Nx2=top_goals,
                                         topk_logprobs_N=top_logp)
  np.testing.assert_allclose(goals, [[1.0, 5.0]])


def test_best_mode_miss_circle_and_title():
  scene, preds = _scene(), _preds_KxFx2(ENDS_Kx2)
  scene.future_Fx2[:] = _preds_KxFx2([(0, 24)])[0]
  fig = visualize.scene_figure(scene, prediction_trajs_KxFx2=preds, prediction_probs_K=PROBS_K, stage="int")
  ax = fig.axes[0]
  fde = per_sequence_errors(preds[None], PROBS_K[None], scene.future_Fx2[None])["fde_N"][0]
  assert ax.get_title() == f"seq 1234 (PIT), int: minFDE_k6 {fde:.2f} m, hit"
  rows = [t.get_text() for t in ax.get_legend().get_texts()]
  assert len(rows) == 6 and rows[0].startswith("1  p=0.35")
  assert [r for r in rows if r.endswith("best")] == [rows[5]]   # the least probable mode is the closest
  circles = [p for p in ax.patches if isinstance(p, Circle)]
  assert len(circles) == 1 and circles[0].get_radius() == 2.0
  np.testing.assert_allclose(circles[0].center, scene.future_Fx2[-1])
  far = _preds_KxFx2([(e[0] + 10, e[1]) for e in ENDS_Kx2])
  miss = visualize.scene_figure(scene, prediction_trajs_KxFx2=far, prediction_probs_K=PROBS_K)
  assert miss.axes[0].get_title().endswith("MISS")


def _map_axes(fig):
  return [a for a in fig.axes if a.get_label() not in ("<colorbar>", "<mode table>")]


def test_stage_comparison_writes_one_panel_per_stage_on_shared_axes(tmp_path):
  scene = _scene()
  float_pred = {"trajs_KxFx2": _preds_KxFx2(ENDS_Kx2), "probs_K": PROBS_K, "goal_logprobs_G": np.zeros(16)}
  int_pred = dict(float_pred, trajs_KxFx2=_preds_KxFx2([(e[0] - 30, e[1]) for e in ENDS_Kx2]))
  fig = visualize.stage_comparison_figure(scene, {"float": float_pred, "int": int_pred})
  path = visualize.save_figure(fig, tmp_path / "cmp.png")
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  axes = _map_axes(fig)
  assert len(axes) == 2 and len(fig.axes) == 5   # two maps, their two mode tables, one shared colour bar
  assert axes[0].get_xlim() == axes[1].get_xlim() and axes[0].get_ylim() == axes[1].get_ylim()
  for ax in axes:   # each panel's view holds both stages' predictions
    assert _inside(ax, float_pred["trajs_KxFx2"]) and _inside(ax, int_pred["trajs_KxFx2"])
  assert [a.get_title().split(":")[0] for a in axes] == ["seq 1234 (PIT), float", "seq 1234 (PIT), int"]


def test_contact_sheet_has_one_axes_per_scene(tmp_path):
  scenes = [_scene()._replace(seq_id=np.array(i)) for i in range(5)]
  preds = [{"trajs_KxFx2": _preds_KxFx2(ENDS_Kx2), "probs_K": PROBS_K}] * 5
  fig = visualize.contact_sheet_figure(scenes, preds)
  visualize.save_figure(fig, tmp_path / "grid.png")
  assert (tmp_path / "grid.png").stat().st_size > 5000
  axes = _map_axes(fig)
  assert len(axes) == 6 and sum(a.axison for a in axes) == 5   # a 3 x 2 grid, the sixth cell blank
  assert [a.get_title().split(":")[0] for a in axes[:5]] == [f"seq {i} (PIT)" for i in range(5)]


class _Dataset:
  """Scenes in memory with the packed dataset's `make_batch` (-1: an empty row)."""

  def __init__(self, scenes):
    self.scenes, self.path = scenes, "memory"

  def __len__(self):
    return len(self.scenes)

  def make_batch(self, indices):
    empty = self.scenes[0]._replace(has_future=np.array(False), seq_id=np.array(-1))
    rows = [self.scenes[i] if i >= 0 else empty for i in indices]
    return Scene(*(np.stack(f) for f in zip(*rows)))


class _Predictor:
  """Predicts every mode straight ahead to y = 24 (+ `shift` m in x)."""

  def __init__(self, stage, shift=0.0):
    self.stage, self.shift, self.batch_sizes = stage, shift, []

  def predict(self, batch):
    b = len(batch.seq_id)
    self.batch_sizes.append(b)
    trajs = np.broadcast_to(_preds_KxFx2([(self.shift, 24.0)] * 6), (b, 6, 30, 2)).copy()
    return {"trajs_BxKxFx2": trajs, "probs_BxK": np.full((b, 6), 1 / 6), "goal_logprobs_BxG": np.zeros((b, 16))}


def _lateral_dataset(n=7):
  """Scene i's GT ends (offset_i, 24) m: scene i's minFDE under _Predictor is |offset_i|."""
  offsets = np.array([0.0, 5.0, 1.0, 9.0, 3.0, 7.0, 2.0])[:n]
  scenes = []
  for i, dx in enumerate(offsets):
    s = _scene()
    s.future_Fx2[:] = _preds_KxFx2([(dx, 24.0)])[0]
    scenes.append(s._replace(seq_id=np.array(100 + i)))
  return _Dataset(scenes), offsets


def test_select_scenes_worst_first_random_by_seed():
  ds, offsets = _lateral_dataset()
  p = _Predictor("float")
  worst = infer.select_scenes(p, ds, 3, how="worst", batch_size=4, progress=False)
  np.testing.assert_array_equal(worst, np.argsort(-offsets)[:3])   # 9, 7, 5 m
  assert set(p.batch_sizes) == {4}   # padded batches: one compiled shape
  np.testing.assert_array_equal(infer.select_scenes(p, ds, 3, how="first"), [0, 1, 2])
  r1, r2 = (infer.select_scenes(p, ds, 4, how="random", seed=s) for s in (1, 1))
  np.testing.assert_array_equal(r1, r2)
  assert len(set(r1.tolist())) == 4
  with pytest.raises(ValueError, match="unknown selection"):
    infer.select_scenes(p, ds, 3, how="best")


def test_render_contact_sheet_and_comparison_write_pngs(tmp_path):
  ds, offsets = _lateral_dataset()
  path = infer.render_contact_sheet(_Predictor("float"), ds, str(tmp_path / "grid.png"), num=4, batch_size=4,
                                    progress=False)
  assert (tmp_path / "grid.png").stat().st_size > 5000 and path.endswith("grid.png")
  paths = infer.render_stage_comparison([_Predictor("float"), _Predictor("int", shift=1.0)], ds,
                                        str(tmp_path / "cmp"), num=2, select="worst", batch_size=4,
                                        progress=False)
  assert [p.split("/")[-1] for p in paths] == ["103_float-int.png", "105_float-int.png"]
  scenes = infer.render_predictions(_Predictor("qat"), ds, str(tmp_path / "one"), num=2, batch_size=4,
                                    progress=False)
  assert [p.split("/")[-1] for p in scenes] == ["100.png", "101.png"]


def _write_run(workdir, splits=("val", "val")):
  """A workdir with float (train + val records), calibration (one), qat (train + val) logs and two evals."""
  lines = {"float": [{"step": s, "train/loss": 10.0 / s} for s in range(10, 101, 10)]
           + [{"step": s, "epoch": s // 50, "val/minFDE_k6": 5.0 - s / 50, "val/MR_k6": 0.5 - s / 1000}
              for s in (50, 100)],
           "calibration": [{"step": 0, "calibration/seconds": 3.0, "val/minFDE_k6": 3.2, "val/MR_k6": 0.41}],
           "qat": [{"step": s, "train/loss": 0.2} for s in (10, 20, 30)]
           + [{"step": 30, "epoch": 0, "val/minFDE_k6": 3.1, "val/MR_k6": 0.4}]}
  for stage, records in lines.items():
    (workdir / stage).mkdir(parents=True)
    (workdir / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  metrics = lambda f: {"minADE_k6": f, "minFDE_k6": 2 * f, "MR_k6": f / 4, "brier_minFDE_k6": 2 * f + 0.6}
  for stage, split, f in (("float", splits[0], 1.0), ("int", splits[1], 1.1)):
    (workdir / f"eval_{stage}.json").write_text(json.dumps(
        {"stage": stage, "model": metrics(f), "constant_velocity": metrics(3.0), "num_sequences": 99,
         "split": split, "lmdb_path": f"/data/{split}_lmdb"}))


def test_metrics_figure_lays_the_stages_end_to_end(tmp_path):
  _write_run(tmp_path)
  metrics = curves.read_metrics(tmp_path)
  assert list(metrics) == ["float", "calibration", "qat"]
  assert curves.stage_offsets(metrics) == {"float": 0, "calibration": 100, "qat": 100}
  fig = curves.metrics_figure(tmp_path)
  loss_ax, fde_ax, mr_ax = fig.axes
  qat_fde = [l for l in fde_ax.lines if l.get_label() == "qat"]
  assert len(qat_fde) == 1 and list(qat_fde[0].get_xdata()) == [130]   # qat step 30 after float's 100
  float_loss = [l for l in loss_ax.lines if l.get_label() == "float"][0]
  assert len(float_loss.get_xdata()) == 10
  np.testing.assert_allclose([l.get_ydata()[0] for l in mr_ax.lines if l.get_label() == "calibration"], [0.41])
  paths = curves.plot_metrics(tmp_path, str(tmp_path / "plots"))
  assert [p.split("/")[-1] for p in paths] == ["curves.png", "eval_bars.png"]


def test_eval_bars_name_the_split_and_each_bar():
  results = [{"stage": "float", "model": {"minFDE_k6": 2.0, "MR_k6": 0.3}, "split": "val", "num_sequences": 9,
              "constant_velocity": {"minFDE_k6": 6.0, "MR_k6": 0.8}}]
  fig = curves.eval_bars_figure(results=results + [dict(results[0], stage="int")], metric_keys=("minFDE_k6",))
  assert "on val (9 sequences" in fig._suptitle.get_text()
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["float", "int", "const.\nvelocity"]
  np.testing.assert_allclose([r.get_height() for r in ax.patches], [2.0, 2.0, 6.0])
  mixed = curves.eval_bars_figure(results=results + [dict(results[0], stage="int", split="val_large")],
                                  metric_keys=("minFDE_k6",))
  labels = [t.get_text() for t in mixed.axes[0].get_xticklabels()]
  assert labels == ["float\n(val)", "int\n(val_large)", "const. vel.\n(val)", "const. vel.\n(val_large)"]


def test_plot_metrics_cli(tmp_path):
  _write_run(tmp_path / "run")
  proc = subprocess.run([sys.executable, str(ROOT / "bin" / "plot_metrics.py"), str(tmp_path / "run"),
                         f"--out={tmp_path / 'plots'}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "plots" / "curves.png").exists() and (tmp_path / "plots" / "eval_bars.png").exists()
  proc = subprocess.run([sys.executable, str(ROOT / "bin" / "plot_metrics.py"), str(tmp_path / "empty")],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "Traceback" not in proc.stderr
