"""Evaluation driver, leaderboard file and the Predictor API on a tiny trained model (real scenes); the
leaderboard file's refusals (a split cut short, a sequence that failed to pack or was skipped) and the test
split (no futures: the file, no metrics); a resume from a damaged latest checkpoint."""
import csv
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import densetnt_jax
from conftest import ROOT, load_config, pack_real_subset
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.scene import to_city_frame
from densetnt_jax.eval.evaluate import evaluate, format_table
from densetnt_jax.eval.leaderboard import read_leaderboard_h5
from densetnt_jax.train.checkpoint import restore_params
from densetnt_jax.train.loop import train_and_evaluate
from densetnt_jax.workdir import checkpoint_dir


@pytest.fixture(scope="module")
def run(argo_dir, tmp_path_factory):
  """8 train + 6 val real scenes packed; a tiny model trained for 2 steps, a checkpoint after each.
  -> (config, workdir, src)."""
  root = tmp_path_factory.mktemp("eval_api")
  src = root / "src"
  config = load_config("tiny")
  config.data.lmdb_dir = str(pack_real_subset(argo_dir, root, 8, 6, config.data))
  config.data.src_dir = str(src)
  config.train.eval_batch_size = 4
  config.train.epochs = 1
  config.train.checkpoint_every_steps = 1
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


def _copy_config(config, **data):
  c = config.copy_and_resolve_references()
  for k, v in data.items():
    c.data[k] = str(v)
  return c


def _observed_part(csv_in, csv_out, steps: int = 20):
  """A 50-step forecasting CSV cut to its first `steps` timestamps: a test-split (test_obs) file."""
  with open(csv_in, newline="") as f:
    rows = list(csv.reader(f))
  last = sorted({float(r[0]) for r in rows[1:]})[steps - 1]
  with open(csv_out, "w", newline="") as f:
    csv.writer(f).writerows(rows[:1] + [r for r in rows[1:] if float(r[0]) <= last])


@pytest.fixture(scope="module")
def more_splits(run, argo_dir, tmp_path_factory):
  """Two more splits beside the run's (in its source root, whose parsed maps this process keeps), packed to
  their own LMDB dir: val_extra/ with the 6 val CSVs, one far off the map (777.csv: packed with a warning),
  one that fails to pack (123.csv) and one added after the pack; test_obs/ with 3 of the val CSVs cut to their
  20 observed steps. -> (config reading that LMDB dir, the CSV added after the pack)."""
  config, _, src = run
  lmdb = tmp_path_factory.mktemp("more_splits") / "lmdb"
  val_csvs = sorted((src / "val" / "data").iterdir())
  for split in ("val_extra", "test_obs"):
    (src / split / "data").mkdir(parents=True)
  for f in val_csvs:
    os.symlink(os.path.realpath(f), src / "val_extra" / "data" / f.name)
  (src / "val_extra" / "data" / "123.csv").write_text("not,a,forecasting,csv\n")
  with open(val_csvs[0], newline="") as f:
    rows = list(csv.reader(f))
  with open(src / "val_extra" / "data" / "777.csv", "w", newline="") as f:   # 50 km east: no lane near
    csv.writer(f).writerows(rows[:1] + [r[:3] + [repr(float(r[3]) + 50_000.0)] + r[4:] for r in rows[1:]])
  for f in val_csvs[:3]:
    _observed_part(f, src / "test_obs" / "data" / f.name)
  summary = pack_split(src, "val_extra", lmdb, config.data, progress=False)
  assert summary.packed == 7 and [os.path.basename(p) for p, _ in summary.failed] == ["123.csv"]
  assert [os.path.basename(p) for p, _ in summary.warnings] == ["777.csv"]
  pack_split(src, "test", lmdb, config.data, progress=False)
  unpacked = sorted((argo_dir / "val" / "data").glob("*.csv"))[6]
  os.symlink(unpacked, src / "val_extra" / "data" / unpacked.name)
  return _copy_config(config, lmdb_dir=lmdb), unpacked


def test_write_h5_refuses_a_split_cut_short_or_not_all_packed(run, more_splits, tmp_path):
  """Nothing is written when eval_max_batches stops early, or when a sequence of the source directory failed
  to pack or was never packed; each is named with its ids."""
  config, workdir, src = run
  h5 = tmp_path / "val.h5"
  val_ids = sorted(int(p.stem) for p in (src / "val" / "data").iterdir())
  limited = config.copy_and_resolve_references()
  limited.train.eval_max_batches = 1                       # 1 batch of 4 of the 6 scenes
  with pytest.raises(ValueError, match=rf"2 of the 6 sequences of {src}/val/data are missing \(2 cut off by "
                     rf"max_batches=1 \(config.train.eval_max_batches.*\): \[{val_ids[4]}, {val_ids[5]}\]\)"):
    evaluate(limited, str(workdir), write_h5=str(h5), progress=False)
  other, unpacked = more_splits
  with pytest.raises(ValueError) as e:
    evaluate(other, str(workdir), split="val_extra", write_h5=str(h5), progress=False)
  message, lmdb = str(e.value), other.data.lmdb_dir
  assert f"2 of the 9 sequences of {src}/val_extra/data are missing" in message
  assert f"1 failed to pack (reasons in {lmdb}/val_extra_pack_errors.log): [123]" in message
  assert f"1 not in the packed split {lmdb}/val_extra_lmdb (pack it: " in message
  assert f": [{unpacked.stem}]" in message
  other.data.skip_unusable_scenes = "all"                # the off-map scene is left out when loading too
  with pytest.raises(ValueError, match=r"3 of the 9 .*; 1 skipped as unusable \(config.data.skip_unusable_scenes="
                     r"'all'; 'none' keeps them\): \[777\]"):
    evaluate(other, str(workdir), split="val_extra", write_h5=str(h5), progress=False)
  assert not os.path.exists(h5) and not os.path.exists(f"{h5}.partial")


def test_write_h5_refuses_a_scene_skipped_when_loading(run, tmp_path, monkeypatch):
  config, workdir, _ = run
  batches = ArgoverseDataset.batches
  skipped = int(ArgoverseDataset(split_lmdb_path(config.data.lmdb_dir, "val"), config.data).seq_ids[1])

  def skipping(self, *args, **kwargs):       # a loader that drops one scene (a padding row in its place)
    for batch in batches(self, *args, **kwargs):
      yield batch._replace(seq_id=np.where(batch.seq_id == skipped, -1, batch.seq_id))

  monkeypatch.setattr(ArgoverseDataset, "batches", skipping)
  h5 = tmp_path / "val.h5"
  with pytest.raises(ValueError, match=rf"1 packed but not predicted \(skipped when loading\): \[{skipped}\]"):
    evaluate(config, str(workdir), write_h5=str(h5), progress=False)
  assert not os.path.exists(h5)


def test_test_split_writes_the_h5_and_no_metrics(run, more_splits, tmp_path):
  """The leaderboard case: test_obs scenes have no future; the file holds them all, the result no metrics,
  and the val result (eval_float.json, which the plots read) is left as it was."""
  _, workdir, src = run
  config, _ = more_splits
  val_json = (workdir / "eval_float.json").read_bytes() if (workdir / "eval_float.json").exists() else None
  h5 = tmp_path / "test.h5"
  result = evaluate(config, str(workdir), split="test", write_h5=str(h5), progress=False)
  assert result["model"] == {} and result["num_scored"] == 0 and result["num_sequences"] == 3
  test_dir = f"{src}/test_obs/data"
  assert result["leaderboard_h5"]["checked_against"] == test_dir
  trajs, probs = read_leaderboard_h5(str(h5))
  assert sorted(trajs) == sorted(int(name[:-4]) for name in os.listdir(test_dir))
  assert all(t.shape == (6, 30, 2) and np.isfinite(t).all() for t in trajs.values())
  assert all(np.isclose(p.sum(), 1.0, atol=1e-5) for p in probs.values())
  assert "no metrics, none of the 3 sequences" in format_table([result])
  assert json.loads((workdir / "eval_float_test.json").read_text())["split"] == "test"
  assert ((workdir / "eval_float.json").read_bytes() if val_json is not None else None) == val_json


def test_resume_falls_back_from_a_damaged_latest_checkpoint(run, tmp_path, caplog):
  """Latest step 2 damaged: the run resumes from step 1, redoes step 2 and ends with the same parameters as
  the undamaged run."""
  config, workdir, _ = run
  copy = tmp_path / "work"
  shutil.copytree(workdir, copy)
  latest = checkpoint_dir(copy, "float", "latest")
  assert sorted(os.listdir(latest)) == ["1", "2"]
  open(os.path.join(latest, "2", "params", "_METADATA"), "w").close()
  with caplog.at_level(logging.WARNING):
    metrics = train_and_evaluate(config, str(copy))
  assert metrics["step"] == 2
  warning = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
  assert len(warning) == 1 and f"checkpoint step 2 does not restore in {latest}" in warning[0]
  assert "params/_METADATA is empty" in warning[0] and "resuming from step 1" in warning[0]
  for x, y in zip(jax.tree.leaves(restore_params(copy, which="latest")),
                  jax.tree.leaves(restore_params(workdir, which="latest"))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
