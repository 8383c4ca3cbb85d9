"""Packer (real train split, bad files, resume, shards) and loader (records back, batches, corruption)."""
import os
import shutil

import numpy as np
import pytest

from densetnt_jax.data.errors import RecordError
from densetnt_jax.data.lmdb_env import open_env
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.vectorize import vectorize_csv


def _records(path):
  out = {}
  for shard in sorted(os.listdir(path)) if not os.path.exists(os.path.join(path, "data.mdb")) else [""]:
    with open_env(os.path.join(path, shard)).begin() as txn:
      out.update({bytes(k): bytes(v) for k, v in txn.cursor()})
  return out


@pytest.fixture(scope="module")
def packed_train(argo_dir, config, tmp_path_factory):
  """The real train split packed by 2 spawned workers (each parses the maps itself); the other packs of this
  file run in-process and must give the same records."""
  out = tmp_path_factory.mktemp("pack")
  summary = pack_split(argo_dir, "train", out, config.data, num_workers=2, progress=False, min_files_per_worker=1)
  return out, summary


def test_pack_train_and_load_every_record(packed_train, argo_dir, config):
  out, summary = packed_train
  assert summary.packed == 244 and not summary.failed and summary.num_files == 244
  assert summary.num_workers == 2 and not summary.warnings
  ds = ArgoverseDataset(split_lmdb_path(out, "train"), config.data)
  assert len(ds) == 244
  for i in range(len(ds)):
    scene = ds[i]
    assert scene.has_future and scene.traj_mask_T[0]
  # A record equals vectorizing its CSV directly.
  seq = int(ds.seq_ids[17])
  direct = vectorize_csv(argo_dir / "train" / "data" / f"{seq}.csv", argo_dir / "map_files", config.data)
  for a, b in zip(ds.by_seq_id(seq), direct):
    np.testing.assert_array_equal(a, b)


def test_rerun_is_a_no_op(packed_train, argo_dir, config):
  out, _ = packed_train
  before = _records(split_lmdb_path(out, "train"))
  again = pack_split(argo_dir, "train", out, config.data, num_workers=1, progress=False)
  assert again.packed == 0 and again.already_packed == 244
  assert _records(split_lmdb_path(out, "train")) == before


def test_interrupted_then_resumed_equals_uninterrupted(packed_train, argo_dir, config, tmp_path):
  out, _ = packed_train
  with pytest.raises(RuntimeError, match="simulated interruption"):
    pack_split(argo_dir, "train", tmp_path, config.data, num_workers=2, progress=False, commit_every=50,
                _stop_after=120)
  partial = _records(split_lmdb_path(tmp_path, "train"))
  assert len(partial) == 1 + 100          # meta + the committed 100; the uncommitted 20 are gone
  resumed = pack_split(argo_dir, "train", tmp_path, config.data, num_workers=2, progress=False)
  assert resumed.already_packed == len(partial) - 1 and resumed.packed == 245 - len(partial)
  assert _records(split_lmdb_path(tmp_path, "train")) == _records(split_lmdb_path(out, "train"))


def test_shards_read_as_one_dataset(packed_train, argo_dir, config, tmp_path):
  out, _ = packed_train
  for i in range(3):
    s = pack_split(argo_dir, "val", tmp_path, config.data, num_workers=1, shard_index=i, num_shards=3,
                   progress=False)
    assert s.packed in (33, 33, 33)
  ds = ArgoverseDataset(split_lmdb_path(tmp_path, "val"), config.data)
  assert len(ds) == 99 and np.all(np.diff(ds.seq_ids) > 0)


def test_bad_csvs_are_skipped_and_reported(argo_dir, config, tmp_path):
  src = tmp_path / "src"
  (src / "train" / "data").mkdir(parents=True)
  os.symlink(argo_dir / "map_files", src / "map_files")
  good = sorted((argo_dir / "train" / "data").glob("*.csv"))[:4]
  for f in good:
    shutil.copy(f, src / "train" / "data")
  text = good[0].read_text().splitlines()
  (src / "train" / "data" / "900001.csv").write_text("")
  (src / "train" / "data" / "900002.csv").write_text("\n".join(text[:1] + [text[1].replace(",PIT", ",MIA")
                                                                         .replace(",MIA", ",XXX")] + text[2:]))
  (src / "train" / "data" / "900003.csv").write_text(text[0] + "\n" + "\n".join(
      l for l in text[1:] if "AGENT" not in l))
  (src / "train" / "data" / "bad_name.csv").write_text("\n".join(text))
  summary = pack_split(src, "train", tmp_path / "out", config.data, num_workers=2, progress=False)
  assert summary.packed == 4
  reasons = dict((os.path.basename(p), why) for p, why in summary.failed)
  assert set(reasons) == {"900001.csv", "900002.csv", "900003.csv", "bad_name.csv"}
  assert "empty file" in reasons["900001.csv"]
  assert "several cities" in reasons["900002.csv"]
  assert "exactly one AGENT" in reasons["900003.csv"]
  assert "not an integer sequence id" in reasons["bad_name.csv"]
  log = (tmp_path / "out" / "train_pack_errors.log").read_text()
  assert all(name in log for name in reasons)
  assert "900002.csv" in summary.format()


def test_batches_shuffle_remainder_and_prefetch(packed_train, config):
  out, _ = packed_train
  ds = ArgoverseDataset(split_lmdb_path(out, "train"), config.data)
  a = [b.seq_id.copy() for b in ds.batches(32, shuffle=True, seed=3, epoch=1, drop_remainder=True)]
  b = [b.seq_id.copy() for b in ds.batches(32, shuffle=True, seed=3, epoch=1, drop_remainder=True, prefetch=0)]
  c = [b.seq_id.copy() for b in ds.batches(32, shuffle=True, seed=3, epoch=2, drop_remainder=True)]
  assert len(a) == 244 // 32 and all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not np.array_equal(np.concatenate(a), np.concatenate(c))
  assert len(set(np.concatenate(a).tolist())) == 7 * 32
  tail = list(ds.batches(100))
  assert [t.seq_id.shape[0] for t in tail] == [100, 100, 100]
  assert np.sum(tail[-1].seq_id == -1) == 56 and not tail[-1].traj_mask_T[-56:].any()
  # Resume inside an epoch and split over two processes.
  resumed = list(ds.batches(32, shuffle=True, seed=3, epoch=1, drop_remainder=True, start_batch=5))
  assert np.array_equal(resumed[0].seq_id, a[5])
  halves = [next(ds.batches(32, shuffle=True, seed=3, epoch=1, drop_remainder=True, process_index=p,
                            process_count=2)).seq_id for p in range(2)]
  assert np.array_equal(np.concatenate(halves), a[0])
  with pytest.raises(ValueError, match="does not divide"):
    next(ds.batches(33, process_count=2))


def test_corrupt_record_names_its_key(packed_train, config, tmp_path):
  out, _ = packed_train
  copy = tmp_path / "train_lmdb"
  shutil.copytree(split_lmdb_path(out, "train"), copy)
  with open_env(str(copy), write=True).begin(write=True) as txn:
    key = b"%012d" % 5
    txn.put(key, txn.get(key)[:100])
  ds = ArgoverseDataset(copy, config.data)
  with pytest.raises(RecordError, match="000000000005"):
    ds.by_seq_id(5)
  with pytest.raises(RecordError, match="000000000005"):
    list(ds.batches(8))


def test_settings_mismatch_is_refused(packed_train, config):
  out, _ = packed_train
  other = config.data.copy_and_resolve_references()
  other.max_distance = 30.0
  with pytest.raises(ValueError, match="max_distance"):
    ArgoverseDataset(split_lmdb_path(out, "train"), other)
