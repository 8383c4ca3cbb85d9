"""Leaderboard HDF5: the official layout, exact round trip, refusal of incomplete submissions (each missing
sequence named with why), no partial file after a failed write; the sequences of a source directory."""
import os

import h5py
import numpy as np
import pytest

from densetnt_jax.eval import leaderboard
from densetnt_jax.eval.leaderboard import read_leaderboard_h5, refuse_incomplete, write_leaderboard_h5


def _submission(seq_ids, seed=0):
  rng = np.random.default_rng(seed)
  trajs = {s: rng.uniform(-3000.0, 3000.0, size=(6, 30, 2)) for s in seq_ids}
  probs = {s: rng.dirichlet(np.ones(6)) for s in seq_ids}
  return trajs, probs


def test_round_trip_and_layout(tmp_path):
  ids = [41234, 7, 210000]
  trajs, probs = _submission(ids)
  path = str(tmp_path / "sub" / "argoverse_forecasting.h5")
  write_leaderboard_h5(path, trajs, probs, expected_seq_ids=ids)
  with h5py.File(path, "r") as f:
    d = f["argoverse_forecasting"]
    assert d.shape == (3 * 6 * 30, 4) and d.dtype == np.float64 and d.compression == "gzip"
    rows = d[()]
  assert rows[0, 0] == 7 and (rows[:, 3] > 0).all()
  got_trajs, got_probs = read_leaderboard_h5(path)
  assert sorted(got_trajs) == sorted(ids)
  for s in ids:
    # x, y are stored as float32 values (as the official writer does); probabilities as given.
    np.testing.assert_array_equal(got_trajs[s], trajs[s].astype(np.float32))
    np.testing.assert_allclose(got_trajs[s], trajs[s], rtol=1e-6)
    np.testing.assert_array_equal(got_probs[s], probs[s])


def test_refuses_missing_sequence(tmp_path):
  trajs, probs = _submission([1, 2])
  path = tmp_path / "x.h5"
  with pytest.raises(ValueError, match=r"\[3\]"):
    write_leaderboard_h5(str(path), trajs, probs, expected_seq_ids=[1, 2, 3])
  assert not path.exists()


def test_refuses_wrong_shapes_and_mismatch(tmp_path):
  trajs, probs = _submission([1, 2])
  path = str(tmp_path / "x.h5")
  with pytest.raises(ValueError, match="sequence 2"):
    write_leaderboard_h5(path, {**trajs, 2: trajs[2][:5]}, {**probs, 2: probs[2][:5]})
  with pytest.raises(ValueError, match="sequence 1"):
    write_leaderboard_h5(path, {**trajs, 1: trajs[1][:, :29]}, probs)
  with pytest.raises(ValueError, match="different sequences"):
    write_leaderboard_h5(path, trajs, {1: probs[1]})
  with pytest.raises(ValueError, match="not in the expected"):
    write_leaderboard_h5(path, trajs, probs, expected_seq_ids=[1])


def test_refusal_names_the_missing_sequences_by_reason_in_capped_lists(tmp_path):
  path = str(tmp_path / "x.h5")
  reasons = {"failed to pack": [3], "cut off by max_batches=1": range(10, 30)}
  with pytest.raises(ValueError) as e:
    refuse_incomplete(path, range(1, 30), [1, 2], reasons, expected_from="/src/val/data")
  assert str(e.value) == (
      f"{path} not written: 27 of the 29 sequences of /src/val/data are missing (1 failed to pack: [3]; "
      "20 cut off by max_batches=1: [10, 11, 12, 13, 14 and 15 more]; 6 with no prediction: [4, 5, 6, 7, 8 and 1 "
      "more]); the leaderboard needs every one")
  refuse_incomplete(path, [1, 2], [2, 1])                  # complete: no error


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
  trajs, probs = _submission([1, 2])
  path = tmp_path / "x.h5"

  def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
  with pytest.raises(OSError, match="No space left"):
    write_leaderboard_h5(str(path), trajs, probs)
  assert os.listdir(tmp_path) == []


def test_source_sequence_ids_are_the_csv_names_that_are_ids(tmp_path):
  for name in ("1.csv", "0002.csv", "notes.txt", "abc.csv", "7.csv.bak", "\u00b2\u00b3.csv"):
    (tmp_path / name).write_text("x")
  (tmp_path / "40.csv").mkdir()                            # not a readable file, still a sequence the split names
  os.symlink(tmp_path / "nowhere", tmp_path / "41.csv")    # a dangling link too
  assert leaderboard.source_sequence_ids(tmp_path) == {1, 2, 40, 41}
