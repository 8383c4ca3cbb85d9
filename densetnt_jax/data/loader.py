"""Packed LMDB split (one or several shards) -> fixed-shape numpy `Scene` batches.

`ArgoverseDataset` is notebook-friendly: `len(ds)`, `ds[i]` (by index), `ds.by_seq_id(seq)`, and
`ds.batches(...)`, a seeded, prefetching batch iterator. Rows with `seq_id == -1` are padding (only in a last
partial batch when `drop_remainder=False`): they have no agent, no future and no candidates.
"""
from __future__ import annotations

import glob
import os
import queue
import threading
from typing import Iterator

import lmdb
import numpy as np

from densetnt_jax.data.errors import RecordError
from densetnt_jax.data.lmdb_env import open_env
from densetnt_jax.data.pack import (META_KEY, UNUSABLE_KEY, is_record_key, read_meta, read_unusable, record_key,
                                    split_lmdb_path)
from densetnt_jax.data.record import decode_arrays, pad_into
from densetnt_jax.data.scene import Scene, shapes_from_config
from densetnt_jax.data.vectorize import vectorize_settings


def shard_paths(path) -> list[str]:
  """The LMDB env dirs of a split: the dir itself, or its `shard-*` subdirs."""
  path = str(path)
  if os.path.exists(os.path.join(path, "data.mdb")):
    return [path]
  shards = sorted(p for p in glob.glob(os.path.join(path, "shard-*")) if os.path.exists(os.path.join(p, "data.mdb")))
  if not shards:
    raise FileNotFoundError(f"no packed LMDB at {path} (run bin/argoverse_packer.py first)")
  return shards


SKIP_POLICIES = ("none", "train", "all")


class ArgoverseDataset:
  """A packed split. `data_config` sets the padded shapes; its vectorization settings must match the pack.

  Scenes the packer flagged as unusable (no lane, so no goal candidate, near the agent) are left out when
  `data_config.skip_unusable_scenes` says so: "train" (the default) in the split named `data_config.train_split`
  only, where they could only fill batch rows the loss masks out; "all" everywhere; "none" nowhere. `unusable`
  holds every flagged scene {seq_id: why}, `skipped` those left out here.
  """

  def __init__(self, path, data_config):
    self.path = str(path)
    self.shapes = shapes_from_config(data_config)
    policy = data_config.get("skip_unusable_scenes", "train")
    if policy not in SKIP_POLICIES:
      raise ValueError(f"config data.skip_unusable_scenes={policy!r}: expected one of {SKIP_POLICIES}")
    self._envs, self._shards, ids, owners = [], shard_paths(self.path), [], []
    self.unusable, self.skipped = {}, {}
    expected = vectorize_settings(data_config)
    for i, shard in enumerate(self._shards):
      env = open_env(shard)
      self._envs.append(env)
      try:
        with env.begin() as txn:
          shard_ids, shard_unusable, skip = self._read_shard(txn, shard, expected, policy, data_config)
      except lmdb.Error as e:
        raise RecordError(shard, f"LMDB read failed ({type(e).__name__}: {e}); re-pack") from None
      for seq_id in shard_ids:
        if seq_id in shard_unusable:
          self.unusable[seq_id] = shard_unusable[seq_id]
          if skip:
            self.skipped[seq_id] = shard_unusable[seq_id]
            continue
        ids.append(seq_id)
        owners.append(i)
    ids_N = np.asarray(ids, np.int64)
    order = np.argsort(ids_N, kind="stable")
    self.seq_ids = ids_N[order]
    self._owner = np.asarray(owners, np.int32)[order] if ids else np.zeros(0, np.int32)
    if len(np.unique(self.seq_ids)) != len(self.seq_ids):
      raise RecordError(self.path, "the same sequence id is packed in several shards")
    self._keys = [record_key(int(s)) for s in self.seq_ids]
    self._index_of = {int(s): i for i, s in enumerate(self.seq_ids)}
    self._policy = policy
    self._txns = [env.begin(buffers=False) for env in self._envs]

  @staticmethod
  def _read_shard(txn, shard: str, expected: dict, policy: str, data_config) -> tuple[list[int], dict, bool]:
    """(sequence ids, {seq_id: why unusable}, whether to skip those) of one shard, its meta and keys checked."""
    meta = read_meta(txn, shard)
    if meta is None:
      raise RecordError(shard, "no __meta__ record: not written by bin/argoverse_packer.py")
    packed = meta["vectorize"]
    diff = {k: (packed.get(k), v) for k, v in expected.items() if packed.get(k) != v}
    if diff:
      raise ValueError(f"{shard} was packed with other vectorization settings (packed, config): {diff}; "
                       "re-pack or set the config to match")
    ids = []
    for key in txn.cursor().iternext(values=False):
      key = bytes(key)
      if key in (META_KEY, UNUSABLE_KEY):
        continue
      if not is_record_key(key):
        raise RecordError(shard, f"key {key[:40]!r} is not a zero-padded sequence id: not written by "
                                 "bin/argoverse_packer.py; re-pack")
      ids.append(int(key))
    unusable = {int(k): why for k, why in read_unusable(txn, shard).items()}
    skip = policy == "all" or (policy == "train" and meta.get("split") == data_config.get("train_split", "train"))
    return ids, unusable, skip

  def __len__(self) -> int:
    return len(self._keys)

  def _where(self, i: int) -> str:
    return f"{self._shards[self._owner[i]]}:{self._keys[i].decode()}"

  def _arrays(self, i: int) -> dict[str, np.ndarray]:
    try:
      raw = self._txns[self._owner[i]].get(self._keys[i])
    except lmdb.Error as e:
      raise RecordError(self._where(i), f"LMDB read failed ({type(e).__name__}: {e}); re-pack") from None
    if raw is None:
      raise RecordError(self._where(i), "record listed but missing")
    try:
      return decode_arrays(raw)
    except Exception as e:  # any malformed payload: checksum, msgpack, shapes, dtypes
      raise RecordError(self._where(i), f"corrupt record ({type(e).__name__}: {e})") from None

  def __getitem__(self, i: int) -> Scene:
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} scenes")
    i = i % len(self)
    out = {k: np.zeros(s, dt) for k, (s, dt) in self.shapes.items()}
    self._fill(i, out, None)
    return Scene(**out)

  def by_seq_id(self, seq_id: int) -> Scene:
    if int(seq_id) in self.skipped:
      raise KeyError(f"sequence {seq_id} of {self.path} is skipped ({self.skipped[int(seq_id)]}; config "
                     f"data.skip_unusable_scenes={self._policy!r})")
    if int(seq_id) not in self._index_of:
      raise KeyError(f"sequence {seq_id} is not in {self.path}")
    return self[self._index_of[int(seq_id)]]

  def _fill(self, i: int, out: dict, row: int | None) -> None:
    try:
      pad_into(self._arrays(i), out, row)
    except ValueError as e:
      if isinstance(e, RecordError):
        raise
      raise RecordError(self._where(i), str(e)) from None

  def num_batches(self, batch_size: int, drop_remainder: bool) -> int:
    return len(self) // batch_size if drop_remainder else -(-len(self) // batch_size)

  def batch_order(self, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The scene order of one epoch: a permutation seeded by (seed, epoch), or the key order."""
    if not shuffle:
      return np.arange(len(self))
    return np.random.default_rng([seed, epoch]).permutation(len(self))

  def make_batch(self, indices) -> Scene:
    """A batch of len(indices) rows; index -1 gives a padding row."""
    out = {k: np.zeros((len(indices),) + s, dt) for k, (s, dt) in self.shapes.items()}
    for row, i in enumerate(indices):
      if i < 0:
        out["seq_id"][row] = -1
        out["goal_index"][row] = -1
        out["rotation_2x2"][row] = np.eye(2)
      else:
        self._fill(int(i), out, row)
    return Scene(**out)

  def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
              drop_remainder: bool = False, prefetch: int = 4, start_batch: int = 0,
              process_index: int = 0, process_count: int = 1) -> Iterator[Scene]:
    """Yields batches; `batch_size` is global: each of `process_count` processes gets its own rows.

    `start_batch` skips the first batches of the epoch (exact resume). A background thread keeps up to
    `prefetch` batches ready so a training step never waits on decoding.
    """
    if batch_size % process_count:
      raise ValueError(f"global batch size {batch_size} does not divide over {process_count} processes")
    if drop_remainder and len(self) < batch_size:
      raise ValueError(f"{self.path}: {len(self)} scenes, fewer than one batch of {batch_size}")
    local = batch_size // process_count
    order = self.batch_order(shuffle=shuffle, seed=seed, epoch=epoch)
    n = self.num_batches(batch_size, drop_remainder)
    order = np.concatenate([order, -np.ones(max(0, n * batch_size - len(order)), np.int64)])[:n * batch_size]
    plan = order.reshape(n, batch_size)[start_batch:, process_index * local:(process_index + 1) * local]
    if prefetch <= 0:
      yield from (self.make_batch(rows) for rows in plan)
      return
    yield from _prefetch((self.make_batch(rows) for rows in plan), prefetch)


def open_split(data_config, split: str) -> ArgoverseDataset:
  """The packed LMDB of a split, or an error that says how to pack it."""
  path = split_lmdb_path(data_config.lmdb_dir, split)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no packed {split!r} split at {path}: pack it first, e.g.\n  python bin/argoverse_packer.py "
        f"--src-data-dir {data_config.src_dir} --mode {split} --pack-type lmdb "
        f"--target-data-dir {data_config.lmdb_dir}")
  return ArgoverseDataset(path, data_config)


def _prefetch(iterator, size: int):
  """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its errors here."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def work():
    try:
      for item in iterator:
        if stop.is_set():
          return
        q.put(item)
      q.put(done)
    except BaseException as e:  # forwarded to the consumer
      q.put(e)

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    while thread.is_alive():        # unblock a producer waiting on a full queue
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(0.01)
