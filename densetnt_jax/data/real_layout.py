"""The real-traffic data set (`make real`, `configs/argo.py:real`) in the official layout, built from what is at
hand: the Argoverse 1.1 sample (244 train, 99 val sequences, both cities' maps) and the 2,924 more real train
sequences of `train_2924.tar.xz`.

  OUT/train/data       the sample's 244 + the archive's sequences not held out (symlinks)
  OUT/val/data         the sample's 99 val sequences: the yardstick of the issue's bars
  OUT/val_large/data   those 99 + `heldout` archive sequences (a seeded, sorted choice): a less noisy
                       yardstick (one scene moves MR by 0.01 on 99 scenes, by 0.002 on 499)
  OUT/map_files        -> the sample's map_files

Nothing is copied (the data are CC BY-NC-SA and stay outside the repository): the archive is extracted once
into `archive_dir` (ignored `data/`), every CSV is a symlink. Re-running is a no-op.
"""
from __future__ import annotations

import glob
import os
import tarfile

import numpy as np

from densetnt_jax.data.argoverse import seq_id_from_path

SPLITS = ("train", "val", "val_large")


def extract_archive(archive: str, archive_dir: str) -> list[str]:
  """CSV paths of the archive's `train/data/`, extracted into `archive_dir` unless already there."""
  csv_dir = os.path.join(archive_dir, "train", "data")
  stamp = os.path.join(archive_dir, ".extracted")
  if not os.path.exists(stamp):
    os.makedirs(archive_dir, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
      tar.extractall(archive_dir, filter="data")      # no absolute paths, links or devices out of the tree
    open(stamp, "w").close()
  files = sorted(glob.glob(os.path.join(csv_dir, "*.csv")))
  if not files:
    raise FileNotFoundError(f"no CSV files in {csv_dir} after extracting {archive}")
  return files


def heldout_ids(archive_files: list[str], heldout: int, seed: int) -> set[int]:
  """`heldout` archive sequence ids, a seeded choice independent of file-system order."""
  ids = sorted(seq_id_from_path(p) for p in archive_files)
  if heldout > len(ids):
    raise ValueError(f"cannot hold out {heldout} of {len(ids)} archive sequences")
  pick = np.random.default_rng(seed).permutation(len(ids))[:heldout]
  return {ids[i] for i in pick}


def _link_all(paths: list[str], out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  for p in paths:
    dst = os.path.join(out_dir, os.path.basename(p))
    if os.path.islink(dst) and os.readlink(dst) == os.path.abspath(p):
      continue
    if os.path.lexists(dst):
      os.remove(dst)
    os.symlink(os.path.abspath(p), dst)


def make_real_layout(sample_dir: str, archive: str, out_dir: str, *, archive_dir: str | None = None,
                     heldout: int = 400, seed: int = 0) -> dict[str, int]:
  """Builds OUT (see the module docstring); returns {split: number of sequences}."""
  archive_dir = archive_dir or out_dir + "_archive"
  archive_files = extract_archive(archive, archive_dir)
  sample = {s: sorted(glob.glob(os.path.join(sample_dir, s, "data", "*.csv"))) for s in ("train", "val")}
  for s, files in sample.items():
    if not files:
      raise FileNotFoundError(f"no CSV files in {os.path.join(sample_dir, s, 'data')}")
  held = heldout_ids(archive_files, heldout, seed)
  splits = {
      "train": sample["train"] + [p for p in archive_files if seq_id_from_path(p) not in held],
      "val": sample["val"],
      "val_large": sample["val"] + [p for p in archive_files if seq_id_from_path(p) in held],
  }
  seen: dict[int, str] = {}
  for s in ("train", "val_large"):
    for p in splits[s]:
      i = seq_id_from_path(p)
      if i in seen and seen[i] != p:
        raise ValueError(f"sequence id {i} appears twice: {seen[i]} and {p}")
      seen[i] = p
  for s, files in splits.items():
    _link_all(files, os.path.join(out_dir, s, "data"))
  maps = os.path.join(out_dir, "map_files")
  if not os.path.lexists(maps):
    os.symlink(os.path.abspath(os.path.join(sample_dir, "map_files")), maps)
  return {s: len(f) for s, f in splits.items()}
