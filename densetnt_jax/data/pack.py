"""Argoverse 1 -> LMDB packer: parallel, resumable, sharded; bad CSVs are skipped and reported.

Layout: `TARGET/{mode}_lmdb` (one LMDB env) or, with several shards, `TARGET/{mode}_lmdb/shard-IIIII-of-NNNNN`
(each an env; the loader reads them as one dataset). Keys are zero-padded sequence ids; the key `__meta__`
holds the vectorization settings as JSON. Failures go to the summary and to `TARGET/{mode}_pack_errors.log`.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import multiprocessing
import os
import re
import time

from densetnt_jax.progress import progress_bar

from densetnt_jax.data.argoverse import seq_id_from_path
from densetnt_jax.data.errors import DataError
from densetnt_jax.data.lmdb_env import close_env, open_env
from densetnt_jax.data.hdmap import available_cities, load_city_map
from densetnt_jax.data.record import FORMAT_VERSION, encode_scene
from densetnt_jax.data.vectorize import vectorize_csv, vectorize_settings

SPLIT_DIRS = {"train": "train", "val": "val", "test": "test_obs"}
EXPECTED_STEPS = {"train": 50, "val": 50, "test": 20}
# Besides the official three, a split may be any lower-case name (`val_large` of the real layout): its CSVs are
# `{name}/data/*.csv` with futures (50 steps).
SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def split_source(mode: str) -> tuple[str, int]:
  """(directory under the source root, steps per sequence) of a split name."""
  if mode in SPLIT_DIRS:
    return SPLIT_DIRS[mode], EXPECTED_STEPS[mode]
  if not SPLIT_NAME.fullmatch(mode):
    raise ValueError(f"split name {mode!r}: expected train, val, test or a lower-case name like val_large")
  return mode, EXPECTED_STEPS["train"]
META_KEY = b"__meta__"
COMMIT_EVERY = 256


def record_key(seq_id: int) -> bytes:
  return f"{seq_id:012d}".encode()


def split_lmdb_path(target_dir, mode: str) -> str:
  return os.path.join(str(target_dir), f"{mode}_lmdb")


def shard_dir(target_dir, mode: str, shard_index: int, num_shards: int) -> str:
  base = split_lmdb_path(target_dir, mode)
  return base if num_shards == 1 else os.path.join(base, f"shard-{shard_index:05d}-of-{num_shards:05d}")


@dataclasses.dataclass
class PackSummary:
  mode: str
  output: str
  num_files: int = 0
  packed: int = 0
  already_packed: int = 0
  failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  num_workers: int = 1
  error_log: str = ""

  @property
  def scenes_per_second(self) -> float:
    return self.packed / self.seconds if self.seconds > 0 else 0.0

  def format(self) -> str:
    lines = [f"packed {self.mode}: {self.packed} new, {self.already_packed} already there, "
             f"{len(self.failed)} failed, of {self.num_files} files -> {self.output}",
             f"  {self.seconds:.1f} s, {self.scenes_per_second:.1f} scenes/s "
             f"({self.scenes_per_second / max(self.num_workers, 1):.1f} per worker, {self.num_workers} workers)"]
    if self.failed:
      lines.append(f"  failures (also in {self.error_log}):")
      lines += [f"    {path}: {why}" for path, why in self.failed]
    return "\n".join(lines)


def _pack_one(args):
  path, map_dir, data_config, expected = args
  try:
    scene = vectorize_csv(path, map_dir, data_config, expected)
    return path, record_key(int(scene.seq_id)), encode_scene(scene), None
  except DataError as e:
    return path, None, None, e.problem


def pack_split(src_data_dir, mode: str, target_data_dir, data_config, *, num_workers: int = 1,
               shard_index: int = 0, num_shards: int = 1, progress: bool = True,
               commit_every: int = COMMIT_EVERY, _stop_after: int | None = None) -> PackSummary:
  """Packs `src/{train,val,test_obs,<name>}/data/*.csv` into `target/{mode}_lmdb` (resumes a partial run).

  Records are committed every `commit_every` scenes: a killed run loses at most that many, and a re-run
  skips every committed one. `_stop_after` (tests only) raises after that many new records, as a crash would.
  """
  split_dir, expected_steps = split_source(mode)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard index {shard_index} outside [0, {num_shards})")
  csv_dir = os.path.join(str(src_data_dir), split_dir, "data")
  map_dir = os.path.join(str(src_data_dir), "map_files")
  files = sorted(glob.glob(os.path.join(csv_dir, "*.csv")))
  if not files:
    raise FileNotFoundError(f"no CSV files in {csv_dir}")
  files = files[shard_index::num_shards]
  cities = available_cities(map_dir)
  if not cities:
    raise FileNotFoundError(f"no vector maps in {map_dir}")
  for city in cities:                     # parse once in the parent; forked workers share it
    load_city_map(map_dir, city).lane_pieces(data_config.lane_points, data_config.lane_piece_max_length)

  out = shard_dir(target_data_dir, mode, shard_index, num_shards)
  os.makedirs(out, exist_ok=True)
  summary = PackSummary(mode=mode, output=out, num_files=len(files), num_workers=num_workers,
                        error_log=os.path.join(str(target_data_dir), f"{mode}_pack_errors.log"))
  meta = {"format_version": FORMAT_VERSION, "split": mode, "vectorize": vectorize_settings(data_config)}
  env = open_env(out, write=True)
  try:
    with env.begin(write=True) as txn:
      old = txn.get(META_KEY)
      if old is not None and json.loads(old) != meta:
        raise ValueError(f"{out} was packed with other settings {json.loads(old)}; "
                         f"now {meta}. Pack into a new directory.")
      txn.put(META_KEY, json.dumps(meta, sort_keys=True).encode())
      done = {bytes(k) for k in txn.cursor().iternext(values=False)}
    todo = []
    for path in files:
      try:
        key = record_key(seq_id_from_path(path))
      except DataError as e:
        summary.failed.append((path, e.problem))
        continue
      if key in done:
        summary.already_packed += 1
      else:
        todo.append(path)

    start = time.perf_counter()
    jobs = [(p, map_dir, data_config, expected_steps) for p in todo]
    pool = multiprocessing.get_context("fork").Pool(num_workers) if num_workers > 1 else None
    results = pool.imap_unordered(_pack_one, jobs, chunksize=8) if pool else map(_pack_one, jobs)
    txn = env.begin(write=True)
    pending = 0
    try:
      for path, key, value, problem in progress_bar(results, total=len(jobs), desc=f"pack {mode}",
                                            disable=not progress, unit="scene"):
        if problem is not None:
          summary.failed.append((path, problem))
          continue
        txn.put(key, value)
        summary.packed += 1
        pending += 1
        if pending >= commit_every:
          txn.commit()
          txn, pending = env.begin(write=True), 0
        if _stop_after is not None and summary.packed >= _stop_after:
          raise RuntimeError(f"simulated interruption after {summary.packed} records")
      txn.commit()
    except BaseException:
      txn.abort()
      raise
    finally:
      if pool:
        pool.terminate()
    summary.seconds = time.perf_counter() - start
  finally:
    close_env(out)
  summary.failed.sort()
  with open(summary.error_log, "w") as f:
    for path, why in summary.failed:
      f.write(f"{path}\t{why}\n")
  return summary
