"""The real-traffic layout (data/real_layout.py): a stand-in archive of real sample CSVs, extracted once, split
into train / val / val_large by a seeded held-out choice, symlinked (never copied), packed under any split name."""
import os
import tarfile

import pytest

from densetnt_jax.data.pack import pack_split, split_source
from densetnt_jax.data.real_layout import make_real_layout


@pytest.fixture(scope="module")
def archive(argo_dir, tmp_path_factory):
  """20 real sample CSVs (forecasting_sample + val, disjoint from train/) in train/data/ of a .tar.xz."""
  path = tmp_path_factory.mktemp("archive") / "more.tar.xz"
  files = sorted((argo_dir / "val" / "data").glob("*.csv"))[:20]
  with tarfile.open(path, "w:xz") as tar:
    for f in files:
      tar.add(f, arcname=f"train/data/{f.name}")
  return path, [f.name for f in files]


def _sample(argo_dir, root, n_train=6, n_val=3):
  """A sample dir with n_train train and the last n_val val CSVs (disjoint from the archive's)."""
  for split, files in (("train", sorted((argo_dir / "train" / "data").glob("*.csv"))[:n_train]),
                       ("val", sorted((argo_dir / "val" / "data").glob("*.csv"))[-n_val:])):
    (root / split / "data").mkdir(parents=True)
    for f in files:
      os.symlink(f, root / split / "data" / f.name)
  os.symlink(argo_dir / "map_files", root / "map_files")
  return root


def test_layout_splits_links_and_reruns(argo_dir, archive, tmp_path, config):
  path, names = archive
  sample = _sample(argo_dir, tmp_path / "sample")
  out = tmp_path / "real"
  counts = make_real_layout(str(sample), str(path), str(out), heldout=5, seed=0)
  assert counts == {"train": 6 + 15, "val": 3, "val_large": 3 + 5}
  listing = {s: sorted(os.listdir(out / s / "data")) for s in ("train", "val", "val_large")}
  archive_names = set(names)
  held = set(listing["val_large"]) & archive_names
  assert len(held) == 5 and not held & set(listing["train"])              # held out of train
  assert set(listing["val"]) <= set(listing["val_large"])
  assert all(os.path.islink(out / "train" / "data" / n) for n in listing["train"])   # nothing copied
  assert os.path.isdir(out / "map_files")
  # the same choice again, and a re-run is a no-op (the archive is not extracted twice)
  stamp = tmp_path / "real_archive" / ".extracted"
  mtime = stamp.stat().st_mtime_ns
  assert make_real_layout(str(sample), str(path), str(out), heldout=5, seed=0) == counts
  assert stamp.stat().st_mtime_ns == mtime
  assert sorted(os.listdir(out / "val_large" / "data")) == listing["val_large"]
  other = make_real_layout(str(sample), str(path), str(tmp_path / "real2"), archive_dir=str(tmp_path / "real_archive"),
                           heldout=5, seed=1)
  assert other == counts and sorted(os.listdir(tmp_path / "real2" / "val_large" / "data")) != listing["val_large"]
  # val_large packs under its own name
  summary = pack_split(out, "val_large", tmp_path / "lmdb", config.data, num_workers=1, progress=False)
  assert summary.packed == 8 and not summary.failed
  assert os.path.isdir(tmp_path / "lmdb" / "val_large_lmdb")


def test_layout_refuses_a_sequence_id_in_two_places(argo_dir, archive, tmp_path):
  path, names = archive
  sample = _sample(argo_dir, tmp_path / "sample")
  os.symlink(argo_dir / "val" / "data" / names[0], sample / "train" / "data" / names[0])
  with pytest.raises(ValueError, match="appears twice"):
    make_real_layout(str(sample), str(path), str(tmp_path / "real"), heldout=5)


def test_split_names():
  assert split_source("test") == ("test_obs", 20)
  assert split_source("val_large") == ("val_large", 50)
  with pytest.raises(ValueError, match="split name"):
    split_source("../etc")
