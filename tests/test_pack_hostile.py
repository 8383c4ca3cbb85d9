"""The packer on a hostile source directory: every odd entry is that file's failure with its reason, the good
files (and the valid oddities: a BOM, quoted fields) pack, an off-map scene packs with a warning, a re-run says
the same, and nothing floods the log."""
import csv
import errno
import io
import os

import numpy as np
import pytest

from densetnt_jax.data.argoverse import seq_id_from_path
from densetnt_jax.data.errors import CsvError, MAX_PROBLEM_CHARS
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.vectorize import vectorize_csv

GOOD = ("10.csv", "100.csv", "101.csv", "102.csv")
BASE = "103.csv"                        # the real scene the crafted files are made from
# name -> words its reason must hold
REFUSED = {
    "1040.csv": "a directory",
    "1041.csv": "symlink loop",
    "1042.csv": "dangling symlink",
    "1043.csv": "Permission denied",
    "1044.csv": "cannot read (Input/output error)",
    "1045.csv": "named pipe (FIFO)",
    "²³.csv": "not an integer sequence id",
    "12\n34.csv": r"file name '12\n34' is not an integer sequence id",
    "123456789012345678901.csv": "does not fit in int64",
    "1.csv": "sequence id 1 is also the id of 0001.csv, 01.csv",
    "01.csv": "sequence id 1 is also the id of 0001.csv, 1.csv",
    "0001.csv": "sequence id 1 is also the id of 01.csv, 1.csv",
    "3001.csv": "X is '1e+38', beyond +-1e+06 m",
    "3002.csv": "Y is '1e+30', beyond +-1e+06 m",
    "3004.csv": "more than the 67108864 bytes a forecasting CSV may have",
    "3005.csv": "first line longer than 1024 bytes",
    "3006.csv": "not UTF-8 text (byte 0xff",
    "3007.csv": "field trajs_TxVxC has non-finite values",
}
PACKED = GOOD + ("2001.csv", "2002.csv", "3003.csv")


def _rows(text):
  return list(csv.reader(io.StringIO(text)))


def _write_rows(path, rows, quoting=csv.QUOTE_MINIMAL, prefix=""):
  out = io.StringIO()
  csv.writer(out, quoting=quoting, lineterminator="\n").writerows(rows)
  path.write_text(prefix + out.getvalue(), encoding="utf-8")


def _with_column(rows, name, change, only_first_other=False):
  """rows with `change(value)` applied to column `name` (of the first OTHERS row only, or of every row)."""
  header, body = rows[0], [list(r) for r in rows[1:]]
  i = header.index(name)
  targets = [next(r for r in body if r[2] == "OTHERS")] if only_first_other else body
  for r in targets:
    r[i] = change(r[i])
  return [header] + body


@pytest.fixture()
def hostile_src(argo_dir, tmp_path, monkeypatch):
  src = tmp_path / "src"
  data = src / "train" / "data"
  data.mkdir(parents=True)
  os.symlink(argo_dir / "map_files", src / "map_files")
  real = argo_dir / "train" / "data"
  for name in GOOD + ("1.csv",):
    os.symlink(real / name, data / name)
  base = _rows((real / BASE).read_text())
  for name in ("01.csv", "0001.csv", "²³.csv", "12\n34.csv", "123456789012345678901.csv", "1043.csv"):
    _write_rows(data / name, base)
  (data / "1040.csv").mkdir()
  os.symlink("1041.csv", data / "1041.csv")
  os.symlink("gone.csv", data / "1042.csv")
  os.chmod(data / "1043.csv", 0)
  if os.geteuid() == 0:                 # root reads through chmod 000: refuse the open as the kernel would
    real_open = os.open
    unreadable = str(data / "1043.csv")

    def refusing_open(path, *args, **kwargs):
      if str(path) == unreadable:
        raise PermissionError(errno.EACCES, "Permission denied", unreadable)
      return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing_open)
  os.symlink("/proc/self/mem", data / "1044.csv")      # a regular file whose read fails (EIO), even for root
  os.mkfifo(data / "1045.csv")
  _write_rows(data / "2001.csv", base, prefix="\ufeff")
  _write_rows(data / "2002.csv", base, quoting=csv.QUOTE_ALL)
  _write_rows(data / "3001.csv", _with_column(base, "X", lambda v: "1e+38", only_first_other=True))
  _write_rows(data / "3002.csv", _with_column(base, "Y", lambda v: "1e+30", only_first_other=True))
  _write_rows(data / "3003.csv", _with_column(base, "X", lambda v: repr(float(v) + 50_000.0)))
  with open(data / "3004.csv", "wb") as f:              # 100 MB, one line, sparse: instant to make
    f.write(b"TIMESTAMP" + b"\x01garbage" * 1000)
    f.truncate(100 * 2**20)
  (data / "3005.csv").write_bytes(b"TIMESTAMP,TRACK_ID" + b"x" * 2 * 2**20)
  (data / "3006.csv").write_bytes((real / BASE).read_bytes().replace(b"OTHERS", b"OTH\xffERS", 1))
  _write_rows(data / "3007.csv", _with_column(base, "TIMESTAMP", lambda v: repr(float(v) * 1e290)))
  return src


def test_each_hostile_entry_fails_alone_and_the_rest_packs(hostile_src, tmp_path, argo_dir, config):
  out = tmp_path / "out"
  first = pack_split(hostile_src, "train", out, config.data, num_workers=2, progress=False)
  reasons = {os.path.basename(p): why for p, why in first.failed}
  assert set(reasons) == set(REFUSED)
  for name, words in REFUSED.items():
    assert words in reasons[name], (name, reasons[name])
  assert all("\n" not in why and len(why) <= MAX_PROBLEM_CHARS for why in reasons.values())
  assert first.packed == len(PACKED) and first.already_packed == 0
  assert first.num_files == first.packed + len(first.failed) == len(PACKED) + len(REFUSED)
  assert [(os.path.basename(p), why.split(":")[0]) for p, why in first.warnings] == [
      ("3003.csv", "no lane within max_distance 50 m of the agent (off the map?)")]
  report, log = first.format(), (tmp_path / "out" / "train_pack_errors.log").read_text()
  assert len(report) < 10_000 and len(log) < 10_000 and "3004.csv" in log and "3003.csv\twarning" in log
  assert len(log.splitlines()) == len(first.failed) + len(first.warnings)      # one line per file

  # The valid oddities hold exactly what the plain file gives.
  ds = ArgoverseDataset(split_lmdb_path(out, "train"), config.data)
  plain = vectorize_csv(argo_dir / "train" / "data" / BASE, argo_dir / "map_files", config.data, 50)
  for seq_id in (2001, 2002):
    scene = ds.by_seq_id(seq_id)
    for name, a, b in zip(scene._fields, scene, plain):
      if name != "seq_id":
        np.testing.assert_array_equal(a, b, err_msg=name)

  again = pack_split(hostile_src, "train", out, config.data, num_workers=2, progress=False)
  assert (again.packed, again.already_packed) == (0, len(PACKED))
  assert again.failed == first.failed and again.warnings == first.warnings


def test_training_skips_the_off_map_scene_and_eval_keeps_it(hostile_src, tmp_path, config):
  out = tmp_path / "out"
  pack_split(hostile_src, "train", out, config.data, progress=False)
  train = ArgoverseDataset(split_lmdb_path(out, "train"), config.data)       # data.train_split == "train"
  assert 3003 not in train.seq_ids.tolist() and len(train) == len(PACKED) - 1
  assert list(train.skipped) == [3003] and list(train.unusable) == [3003]
  with pytest.raises(KeyError, match="skipped .*no lane within"):
    train.by_seq_id(3003)
  keep = config.data.copy_and_resolve_references()
  keep.skip_unusable_scenes = "none"
  everything = ArgoverseDataset(split_lmdb_path(out, "train"), keep)
  assert len(everything) == len(PACKED) and not everything.skipped
  scene = everything.by_seq_id(3003)
  assert not scene.lane_mask_L.any() and not scene.goal_mask_G.any() and scene.goal_index == -1
  keep.skip_unusable_scenes = "sometimes"
  with pytest.raises(ValueError, match="skip_unusable_scenes"):
    ArgoverseDataset(split_lmdb_path(out, "train"), keep)


@pytest.mark.parametrize("name", ["²³.csv", "٣.csv", "1e3.csv", "-1.csv", "9223372036854775808.csv", "12 .csv"])
def test_odd_ids_are_refused(name):
  with pytest.raises(CsvError, match="sequence id"):
    seq_id_from_path(name)


def test_largest_int64_id_is_accepted():
  assert seq_id_from_path("/x/9223372036854775807.csv") == 2**63 - 1
  assert seq_id_from_path("0000000000000000000000042.csv") == 42
