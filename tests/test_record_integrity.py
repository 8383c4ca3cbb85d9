"""Packed LMDB integrity: flipped bits in records, a truncated data.mdb, garbage __meta__, foreign keys, old
formats and crafted records each end in a RecordError that names the LMDB (and the key), never a wrong scene or
a signal."""
import json
import os
import shutil
import subprocess
import sys

import msgpack
import numpy as np
import pytest

from densetnt_jax.data.errors import RecordError
from densetnt_jax.data.lmdb_env import close_env, open_env
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import META_KEY, pack_split, split_lmdb_path
from densetnt_jax.data.record import FORMAT_VERSION, seal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_HEADER_BYTES = 16                  # LMDB's page header: an overflow page's value starts after it


@pytest.fixture(scope="module")
def packed(argo_dir, config, tmp_path_factory):
  """4 real val scenes packed: (lmdb dir, {seq_id: scene}, source root)."""
  root = tmp_path_factory.mktemp("integrity")
  (root / "src" / "val" / "data").mkdir(parents=True)
  for f in sorted((argo_dir / "val" / "data").glob("*.csv"))[:4]:
    os.symlink(f, root / "src" / "val" / "data" / f.name)
  os.symlink(argo_dir / "map_files", root / "src" / "map_files")
  summary = pack_split(root / "src", "val", root / "lmdb", config.data, progress=False)
  assert summary.packed == 4 and not summary.failed
  path = split_lmdb_path(root / "lmdb", "val")
  ds = ArgoverseDataset(path, config.data)
  return path, {int(s): ds.by_seq_id(int(s)) for s in ds.seq_ids}, root / "src"


def _copy(path, tmp_path):
  copy = str(tmp_path / "val_lmdb")
  shutil.copytree(path, copy)
  return copy


def test_every_flipped_bit_in_a_record_is_caught(packed, config, tmp_path):
  """Seeded single-bit flips over each record's overflow pages in data.mdb: a flip inside the stored value is a
  RecordError naming the LMDB and the key, a flip in the page header or the unused tail reads the same scene."""
  path, scenes, _ = packed
  copy = _copy(path, tmp_path)
  data_file = os.path.join(copy, "data.mdb")
  blob = open(data_file, "rb").read()
  env = open_env(copy)
  page = env.stat()["psize"]
  regions = {}                          # seq_id: (first page start, value start, value end, last page end)
  with env.begin() as txn:
    for key, value in txn.cursor():
      if key != META_KEY:
        start = blob.find(bytes(value))
        assert start % page == PAGE_HEADER_BYTES and blob.find(bytes(value), start + 1) == -1
        end = start + len(value)
        regions[int(key)] = (start - PAGE_HEADER_BYTES, start, end, -(-end // page) * page)
  close_env(copy)
  assert sorted(regions) == sorted(scenes)

  rng = np.random.default_rng(0)
  caught = same = 0
  with open(data_file, "r+b") as f:
    for _ in range(300):
      seq_id = int(rng.choice(sorted(regions)))
      first, start, end, last = regions[seq_id]
      offset, bit = int(rng.integers(first, last)), int(rng.integers(8))
      f.seek(offset)
      f.write(bytes([blob[offset] ^ (1 << bit)]))
      f.flush()
      ds = ArgoverseDataset(copy, config.data)
      try:
        got = ds.by_seq_id(seq_id)
        assert not start <= offset < end, f"flip at byte {offset - start} of record {seq_id} was not caught"
        for a, b in zip(got, scenes[seq_id]):
          np.testing.assert_array_equal(a, b)
        same += 1
      except RecordError as e:
        assert start <= offset < end
        assert f"{copy}:{seq_id:012d}" in str(e) and "checksum mismatch" in str(e)
        caught += 1
      finally:
        close_env(copy)
        f.seek(offset)
        f.write(blob[offset:offset + 1])
        f.flush()
  assert caught > 250 and same > 0


_OPEN_ALL = """
import sys
sys.path.insert(0, "tests")
from conftest import load_config
from densetnt_jax.data.errors import RecordError
from densetnt_jax.data.loader import ArgoverseDataset
refused = 0
for path in sys.argv[1:]:
  try:
    ds = ArgoverseDataset(path, load_config().data)
    [ds[i] for i in range(len(ds))]
  except RecordError as e:
    print(e, file=sys.stderr)
    refused += 1
sys.exit(2 if refused == len(sys.argv) - 1 else 0)
"""


def test_truncated_data_mdb_is_a_clear_error_not_sigbus(packed, tmp_path):
  """Cut to half, and by one page: each a one-line RecordError in a fresh process (which SIGBUS would kill)."""
  path, _, _ = packed
  env = open_env(path)
  page = env.stat()["psize"]
  needed = (env.info()["last_pgno"] + 1) * page
  copies = []
  for name, size in (("half", needed // 2), ("one_page_short", needed - page)):
    copy = str(tmp_path / name)
    shutil.copytree(path, copy)
    os.truncate(os.path.join(copy, "data.mdb"), size)
    copies.append(copy)
  run = subprocess.run([sys.executable, "-c", _OPEN_ALL, *copies], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
  assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 2
  for copy, line in zip(copies, lines):
    assert line.startswith(os.path.join(copy, "data.mdb") + ": truncated:") and "re-pack" in line


def _put(path, key, value):
  env = open_env(path, write=True)
  with env.begin(write=True) as txn:
    txn.put(key, value)
  close_env(path)


def test_meta_garbage_foreign_keys_and_old_format_name_the_lmdb(packed, config, tmp_path):
  path, _, src = packed
  meta = json.loads(open_env(path).begin().get(META_KEY))
  cases = [
      (META_KEY, b"\xff\x00 not json", "__meta__ is not JSON"),
      (META_KEY, b"[1, 2]", "not the packer's settings object"),
      (META_KEY, json.dumps({**meta, "format_version": 1}).encode(),
       "holds records of format 1, this code reads and writes format 2.*re-pack"),
      (b"abc", b"x", r"key b'abc' is not a zero-padded sequence id"),
      (b"0042", b"x", r"key b'0042' is not a zero-padded sequence id"),
      (b"99999999999999999999", b"x", "is not a zero-padded sequence id"),
  ]
  for i, (key, value, message) in enumerate(cases):
    copy = str(tmp_path / f"case{i}")
    shutil.copytree(path, copy)
    _put(copy, key, value)
    with pytest.raises(RecordError, match=message) as e:
      ArgoverseDataset(copy, config.data)
    assert e.value.path == copy
    close_env(copy)
  # The packer refuses to add format-2 records to a format-1 pack.
  old = tmp_path / "old"
  shutil.copytree(path, old / "val_lmdb")
  _put(str(old / "val_lmdb"), META_KEY, json.dumps({**meta, "format_version": 1}).encode())
  with pytest.raises(RecordError, match="format 1, this code reads and writes format 2 .*: re-pack it with "
                                        "bin/argoverse_packer.py into a new"):
    pack_split(src, "val", old, config.data, progress=False)


def test_crafted_record_with_a_valid_checksum_is_refused(packed, config, tmp_path):
  """The checksum proves integrity, not origin: a forged record still passes the schema checks or is refused."""
  path, scenes, _ = packed
  seq_id = sorted(scenes)[0]
  arrays = {name: [np.asarray(a).dtype.name, list(np.asarray(a).shape), np.asarray(a).tobytes()]
            for name, a in scenes[seq_id]._asdict().items()}
  forged = [
      ({**arrays, "goals_Gx2": ["float32", [-1, 2], arrays["goals_Gx2"][2]]}, "not a list of sizes"),
      ({**arrays, "goals_Gx2": ["float32", [3, 2], b"\0" * 8]}, "do not hold shape"),
      ({**arrays, "seq_id": ["object", [], b""]}, "dtype 'object' not allowed"),
      ({k: v for k, v in arrays.items() if k != "origin_2"}, "origin_2: missing"),
  ]
  for i, (fields, message) in enumerate(forged):
    copy = str(tmp_path / f"forged{i}")
    shutil.copytree(path, copy)
    _put(copy, b"%012d" % seq_id, seal(msgpack.packb({"version": FORMAT_VERSION, "arrays": fields})))
    with pytest.raises(RecordError, match=message):
      ArgoverseDataset(copy, config.data).by_seq_id(seq_id)
    close_env(copy)
