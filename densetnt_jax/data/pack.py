"""Argoverse 1 -> LMDB packer: parallel, resumable, sharded; each bad file is skipped and reported, alone.

Layout: `TARGET/{mode}_lmdb` (one LMDB env) or, with several shards, `TARGET/{mode}_lmdb/shard-IIIII-of-NNNNN`
(each an env; the loader reads them as one dataset). Keys are zero-padded sequence ids; the key `__meta__`
holds the vectorization settings as JSON, `__unusable__` (sealed JSON, only when there is one) the packed scenes
that cannot be labelled and why. Failures and warnings go to the summary and to `TARGET/{mode}_pack_errors.log`.

A file is one file's problem, never the run's: whatever it is (a directory, a FIFO, a dangling link, bytes that
are not UTF-8, an id shared with another file), it is listed with its reason and the others pack.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import re
import time

import numpy as np

from densetnt_jax.progress import progress_bar

from densetnt_jax.data.argoverse import INT64_MAX, seq_id_from_path
from densetnt_jax.data.errors import DataError, RecordError, one_line
from densetnt_jax.data.lmdb_env import close_env, open_env
from densetnt_jax.data.hdmap import available_cities, load_city_map
from densetnt_jax.data.record import FORMAT_VERSION, encode_scene, seal, unseal
from densetnt_jax.data.vectorize import unusable_reason, vectorize_csv, vectorize_settings

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
UNUSABLE_KEY = b"__unusable__"
COMMIT_EVERY = 256
# Worker processes each parse both city maps (2.6 s) before their first file (3.5 ms each): fewer files than
# this per worker pack faster in the calling process.
MIN_FILES_PER_WORKER = 1000
MAX_LISTED = 100                        # failures / warnings printed by PackSummary.format (the log has all)
_RECORD_KEY = re.compile(rb"[0-9]{12,19}")


def record_key(seq_id: int) -> bytes:
  return f"{seq_id:012d}".encode()


def is_record_key(key: bytes) -> bool:
  """Whether `key` is a record key exactly as `record_key` writes it (zero-padded decimal, int64)."""
  return bool(_RECORD_KEY.fullmatch(key)) and int(key) <= INT64_MAX and record_key(int(key)) == key


def read_meta(txn, where: str) -> dict | None:
  """The `__meta__` settings of an LMDB (None if there is none); RecordError naming `where` if it is garbage or of
  another record format (the packer and the loader read and write FORMAT_VERSION only)."""
  raw = txn.get(META_KEY)
  if raw is None:
    return None
  try:
    meta = json.loads(bytes(raw))
  except ValueError as e:               # JSONDecodeError and UnicodeDecodeError
    raise RecordError(where, f"__meta__ is not JSON ({e}): not written by bin/argoverse_packer.py; re-pack") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("vectorize"), dict):
    raise RecordError(where, "__meta__ is not the packer's settings object: not written by "
                             "bin/argoverse_packer.py; re-pack")
  if meta.get("format_version") != FORMAT_VERSION:
    raise RecordError(where, f"holds records of format {meta.get('format_version')!r}, this code reads and writes "
                             f"format {FORMAT_VERSION} (records now carry a checksum): re-pack it with "
                             "bin/argoverse_packer.py into a new directory")
  return meta


def read_unusable(txn, where: str) -> dict[str, str]:
  """{record key: why} of the packed scenes that cannot be labelled (`__unusable__`, checksummed JSON)."""
  raw = txn.get(UNUSABLE_KEY)
  if raw is None:
    return {}
  try:
    table = json.loads(bytes(unseal(bytes(raw))))
  except ValueError as e:
    raise RecordError(f"{where}:{UNUSABLE_KEY.decode()}", f"corrupt ({e})") from None
  if not (isinstance(table, dict) and all(isinstance(k, str) and is_record_key(k.encode()) and isinstance(v, str)
                                          for k, v in table.items())):
    raise RecordError(f"{where}:{UNUSABLE_KEY.decode()}", "not a {record key: reason} object; re-pack")
  return table


def split_lmdb_path(target_dir, mode: str) -> str:
  return os.path.join(str(target_dir), f"{mode}_lmdb")


def shard_dir(target_dir, mode: str, shard_index: int, num_shards: int) -> str:
  base = split_lmdb_path(target_dir, mode)
  return base if num_shards == 1 else os.path.join(base, f"shard-{shard_index:05d}-of-{num_shards:05d}")


WARNING = "warning: "          # a log line's reason for a scene that was packed but cannot be labelled


def error_log_path(target_dir, mode: str, shard_index: int = 0, num_shards: int = 1) -> str:
  """The failures-and-warnings log of a pack (one per shard, so shards packed side by side keep theirs)."""
  suffix = "" if num_shards == 1 else f"-shard-{shard_index:05d}-of-{num_shards:05d}"
  return os.path.join(str(target_dir), f"{mode}_pack_errors{suffix}.log")


def error_logs(target_dir, mode: str) -> list[str]:
  """Every shard's failures-and-warnings log of a split's pack (`error_log_path`)."""
  return sorted(glob.glob(os.path.join(glob.escape(str(target_dir)), f"{glob.escape(mode)}_pack_errors*.log")))


def failed_sequence_ids(logs: list[str]) -> set[int]:
  """The sequence ids these logs list as failures (the `path<TAB>reason` lines `pack_split` writes; not its
  `warning:` ones: those scenes were packed)."""
  ids = set()
  for log in logs:
    with open(log, encoding="utf-8", errors="replace") as f:
      for line in f:
        path, _, why = line.rstrip("\n").partition("\t")
        if why.startswith(WARNING):
          continue
        try:
          ids.add(seq_id_from_path(path))
        except ValueError:        # a line that names no sequence
          pass
  return ids


@dataclasses.dataclass
class PackSummary:
  """What a pack did with each file of its shard: packed + already_packed + len(failed) == num_files;
  `warnings` are packed scenes (new or from before) that cannot be labelled."""
  mode: str
  output: str
  num_files: int = 0
  packed: int = 0
  already_packed: int = 0
  failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  warnings: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  num_workers: int = 1
  error_log: str = ""

  @property
  def scenes_per_second(self) -> float:
    return self.packed / self.seconds if self.seconds > 0 else 0.0

  def format(self) -> str:
    lines = [f"packed {self.mode}: {self.packed} new, {self.already_packed} already there, "
             f"{len(self.failed)} failed, of {self.num_files} files -> {self.output}"
             + (f"; {len(self.warnings)} packed with a warning" if self.warnings else ""),
             f"  {self.seconds:.1f} s, {self.scenes_per_second:.1f} scenes/s "
             f"({self.scenes_per_second / max(self.num_workers, 1):.1f} per worker, {self.num_workers} workers)"]
    for title, items in (("failures", self.failed), ("warnings, packed but skipped by training", self.warnings)):
      if items:
        lines.append(f"  {title} (all in {self.error_log}):")
        lines += [f"    {one_line(path, 500)}: {why}" for path, why in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
          lines.append(f"    ... {len(items) - MAX_LISTED} more in the log")
    return "\n".join(lines)


def _pack_one(path: str, map_dir: str, data_config, expected_steps: int):
  """(path, key, sealed record, failure, warning) of one CSV; any error of this file is its failure."""
  try:
    with np.errstate(over="ignore", invalid="ignore"):    # an overflow to inf is refused by encode_scene below
      scene = vectorize_csv(path, map_dir, data_config, expected_steps)
  except DataError as e:
    return path, None, None, e.problem, None
  except Exception as e:  # an unforeseen error of one file must not stop the other 200,000
    return path, None, None, one_line(f"{type(e).__name__}: {e}"), None
  try:
    value = encode_scene(scene)
  except ValueError as e:
    return path, None, None, one_line(e), None
  return path, record_key(int(scene.seq_id)), value, None, unusable_reason(scene, data_config)


_worker_job = None


def _start_worker(map_dir: str, data_config, expected_steps: int) -> None:
  """Pool initializer: parses every city map once per worker (spawned workers share nothing with the parent)."""
  global _worker_job
  _worker_job = (map_dir, data_config, expected_steps)
  _parse_maps(map_dir, available_cities(map_dir), data_config)


def _parse_maps(map_dir: str, cities, data_config) -> None:
  """Parses each city's map and cuts its lanes into pieces (cached per process)."""
  for city in cities:
    load_city_map(map_dir, city).lane_pieces(data_config.lane_points, data_config.lane_piece_max_length)


def _pack_in_worker(path: str):
  return _pack_one(path, *_worker_job)


def sequence_files(csv_dir: str) -> tuple[list[str], dict[str, int], dict[str, str]]:
  """(every `*.csv` path, sorted; {path: sequence id}; {path: why} of the names that are no id or share an id).

  `1.csv`, `01.csv` and `0001.csv` are one id: all of them are refused, none silently wins.
  """
  files = sorted(glob.glob(os.path.join(csv_dir, "*.csv")))
  ids, bad, by_id = {}, {}, collections.defaultdict(list)
  for path in files:
    try:
      ids[path] = seq_id_from_path(path)
      by_id[ids[path]].append(path)
    except DataError as e:
      bad[path] = e.problem
  for seq_id, paths in by_id.items():
    if len(paths) > 1:
      for path in paths:
        others = ", ".join(os.path.basename(p) for p in paths if p != path)
        bad[path] = one_line(f"sequence id {seq_id} is also the id of {others}: none of them is packed; keep one "
                             "file per id")
  return files, ids, bad


def pack_split(src_data_dir, mode: str, target_data_dir, data_config, *, num_workers: int = 1,
               shard_index: int = 0, num_shards: int = 1, progress: bool = True,
               commit_every: int = COMMIT_EVERY, min_files_per_worker: int = MIN_FILES_PER_WORKER,
               _stop_after: int | None = None) -> PackSummary:
  """Packs `src/{train,val,test_obs,<name>}/data/*.csv` into `target/{mode}_lmdb` (resumes a partial run).

  Records are committed every `commit_every` scenes: a killed run loses at most that many, and a re-run
  skips every committed one. Workers are spawned (never forked: the caller may have imported JAX), at most one
  per `min_files_per_worker` files to do. `_stop_after` (tests only) raises after that many new records, as a
  crash would.
  """
  split_dir, expected_steps = split_source(mode)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard index {shard_index} outside [0, {num_shards})")
  csv_dir = os.path.join(str(src_data_dir), split_dir, "data")
  map_dir = os.path.join(str(src_data_dir), "map_files")
  all_files, seq_ids, bad_names = sequence_files(csv_dir)
  if not all_files:
    raise FileNotFoundError(f"no CSV files in {csv_dir}")
  files = all_files[shard_index::num_shards]
  cities = available_cities(map_dir)
  if not cities:
    raise FileNotFoundError(f"no vector maps in {map_dir}")
  _parse_maps(map_dir, cities, data_config)   # a broken map stops the run here, not in every file of its city

  out = shard_dir(target_data_dir, mode, shard_index, num_shards)
  os.makedirs(out, exist_ok=True)
  summary = PackSummary(mode=mode, output=out, num_files=len(files),
                        error_log=error_log_path(target_data_dir, mode, shard_index, num_shards))
  meta = {"format_version": FORMAT_VERSION, "split": mode, "vectorize": vectorize_settings(data_config)}
  env = open_env(out, write=True)
  try:
    with env.begin(write=True) as txn:
      old = read_meta(txn, out)
      if old is not None and old != meta:
        raise ValueError(f"{out} was packed with other settings {old}; now {meta}. Pack into a new directory.")
      txn.put(META_KEY, json.dumps(meta, sort_keys=True).encode())
      done = {bytes(k) for k in txn.cursor().iternext(values=False)}
      unusable = read_unusable(txn, out)
    todo = []
    for path in files:
      if path in bad_names:
        stale = path in seq_ids and record_key(seq_ids[path]) in done
        summary.failed.append((path, one_line(bad_names[path] + (" (its record from an earlier run stays)" if stale
                                                                 else ""))))
      elif record_key(seq_ids[path]) in done:
        summary.already_packed += 1
      else:
        todo.append(path)

    start = time.perf_counter()
    summary.num_workers = max(1, min(num_workers, len(todo) // max(min_files_per_worker, 1)))
    txn, pool = env.begin(write=True), None
    pending, unusable_changed = 0, False
    try:
      if summary.num_workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            summary.num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(map_dir, data_config, expected_steps))
        results = pool.map(_pack_in_worker, todo, chunksize=8)
      else:
        results = (_pack_one(path, map_dir, data_config, expected_steps) for path in todo)
      for path, key, value, problem, warning in progress_bar(results, total=len(todo), desc=f"pack {mode}",
                                                             disable=not progress, unit="scene"):
        if problem is not None:
          summary.failed.append((path, problem))
          continue
        txn.put(key, value)
        if warning is not None:
          unusable[key.decode()] = warning
          unusable_changed = True
        summary.packed += 1
        pending += 1
        if pending >= commit_every:
          _commit(txn, unusable if unusable_changed else None)
          txn, pending, unusable_changed = env.begin(write=True), 0, False
        if _stop_after is not None and summary.packed >= _stop_after:
          raise RuntimeError(f"simulated interruption after {summary.packed} records")
      _commit(txn, unusable if unusable_changed else None)
    except concurrent.futures.BrokenExecutor:
      txn.abort()
      raise RuntimeError(f"a packer worker process died (killed, out of memory, or its map parse failed) while "
                         f"packing {mode}; what was committed is kept: run the packer again to resume") from None
    except BaseException:
      txn.abort()
      raise
    finally:
      if pool:
        pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.perf_counter() - start
  finally:
    close_env(out)
  summary.failed.sort()
  summary.warnings = sorted((path, unusable[key]) for path in files if path not in bad_names
                            and (key := record_key(seq_ids[path]).decode()) in unusable)
  with open(summary.error_log, "w", encoding="utf-8", errors="backslashreplace") as f:
    for path, why in summary.failed:
      f.write(f"{one_line(path, 1000)}\t{why}\n")
    for path, why in summary.warnings:
      f.write(f"{one_line(path, 1000)}\t{WARNING}{why}\n")
  return summary


def _commit(txn, unusable: dict[str, str] | None) -> None:
  """Commits a write transaction, with the updated `__unusable__` table in it (so it never lags the records)."""
  if unusable is not None:
    txn.put(UNUSABLE_KEY, seal(json.dumps(unusable, sort_keys=True).encode()))
  txn.commit()
