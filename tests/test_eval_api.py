"""Evaluation driver, leaderboard file and the Predictor API on a tiny trained model (real scenes)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import densetnt_jax
from conftest import ROOT, load_config, pack_real_subset
from densetnt_jax.data.pack import split_lmdb_path
from densetnt_jax.data.scene import to_city_frame
from densetnt_jax.eval.evaluate import evaluate, format_table
from densetnt_jax.eval.leaderboard import read_leaderboard_h5
from densetnt_jax.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def run(argo_dir, tmp_path_factory):
  """8 train + 6 val real scenes packed; a tiny model trained for 2 steps. -> (config, workdir, src)."""
  root = tmp_path_factory.mktemp("eval_api")
  src = root / "src"
  config = load_config("tiny")
  config.data.lmdb_dir = str(pack_real_subset(argo_dir, root, 8, 6, config.data))
  config.train.eval_batch_size = 4
  config.train.epochs = 1
  workdir = root / "work"
  train_and_evaluate(config, str(workdir))
  return config, workdir, src


def test_evaluate_writes_metrics_and_leaderboard(run, tmp_path):
  config, workdir, _ = run
  h5 = tmp_path / "val.h5"
  result = evaluate(config, str(workdir), write_h5=str(h5), progress=False)
  assert result["num_sequences"] == 6
  for name in ("model", "constant_velocity"):
    for key in ("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minFDE_k1"):
      assert np.isfinite(result[name][key])
  # The baseline predicts one trajectory: its K=6 and K=1 numbers agree.
  assert result["constant_velocity"]["minFDE_k6"] == result["constant_velocity"]["minFDE_k1"]
  saved = json.loads((workdir / "eval_float.json").read_text())
  assert saved["model"] == result["model"]
  # Which data the numbers are on: the split, the LMDB dir and the split's LMDB.
  assert saved["split"] == "val"
  assert saved["lmdb_dir"] == os.path.abspath(config.data.lmdb_dir)
  assert saved["lmdb_path"] == os.path.abspath(split_lmdb_path(config.data.lmdb_dir, "val"))
  assert "const. velocity" in format_table([result])
  trajs, probs = read_leaderboard_h5(str(h5))
  predictor = densetnt_jax.load(workdir, "float", config=config)
  ds = predictor.dataset("val")
  assert sorted(trajs) == sorted(ds.seq_ids.tolist())
  scene = ds[2]
  out = predictor.predict_scene(scene)
  seq = int(scene.seq_id)
  assert trajs[seq].shape == (6, 30, 2) and probs[seq].shape == (6,)
  np.testing.assert_allclose(trajs[seq], out["trajs_city_KxFx2"], atol=1e-3)   # float32 x, y in the file
  np.testing.assert_allclose(probs[seq], out["probs_K"], atol=1e-6)


def test_predict_csv_matches_the_packed_scene(run):
  config, workdir, src = run
  predictor = densetnt_jax.load(workdir, "float", config=config)
  ds = predictor.dataset("val")
  seq = int(ds.seq_ids[0])
  out = predictor.predict_csv(src / "val" / "data" / f"{seq}.csv")
  packed = predictor.predict_scene(ds.by_seq_id(seq))
  assert out["trajs_KxFx2"].shape == (6, 30, 2)
  np.testing.assert_allclose(out["probs_K"].sum(), 1.0, atol=1e-5)
  np.testing.assert_array_equal(out["trajs_KxFx2"], packed["trajs_KxFx2"])
  scene = out["scene"]
  np.testing.assert_allclose(out["trajs_city_KxFx2"][0],
                             to_city_frame(out["trajs_KxFx2"][0], scene.origin_2, scene.rotation_2x2))


def test_eval_cli_prints_the_table(run):
  config, workdir, _ = run
  proc = subprocess.run(
      [sys.executable, str(ROOT / "bin" / "eval.py"), "--stage=float", f"--config={ROOT / 'configs' / 'argo.py'}:tiny",
       f"--config.data.lmdb_dir={config.data.lmdb_dir}", "--config.train.eval_batch_size=4", f"--workdir={workdir}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "minFDE_k6" in proc.stdout and "const. velocity" in proc.stdout


def test_infer_cli_contact_sheet_and_a_missing_stage(run, tmp_path):
  config, workdir, _ = run
  base = [sys.executable, str(ROOT / "bin" / "infer.py"), f"--config={ROOT / 'configs' / 'argo.py'}:tiny",
          f"--config.data.lmdb_dir={config.data.lmdb_dir}", f"--workdir={workdir}", f"--save-path={tmp_path}",
          "--batch-size=4"]
  proc = subprocess.run(base + ["--grid=4", "--select=worst"], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_worst_float.png"]   # --grid alone: the sheet only
  proc = subprocess.run(base + ["--stages=float,int", "--num=1"], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "error: no integer program" in proc.stderr and "--stage=int" in proc.stderr   # and how to make it


def test_write_pictures_without_an_int_stage(run, tmp_path):
  from densetnt_jax.eval.infer import write_pictures
  config, workdir, _ = run
  paths = write_pictures(config, str(workdir), str(tmp_path), num=1, grid=2, batch_size=4)
  names = sorted(os.path.relpath(p, tmp_path) for p in paths)
  assert "curves.png" in names and "grid_worst_float.png" in names
  assert len([n for n in names if n.startswith("scenes/")]) == 1
  assert not [n for n in names if n.startswith("compare/")]   # no int program: no float-vs-int picture
  assert all(os.path.getsize(p) > 5000 for p in paths)
