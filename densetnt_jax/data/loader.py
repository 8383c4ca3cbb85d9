"""Packed LMDB split (one or several shards) -> fixed-shape numpy `Scene` batches.

`ArgoverseDataset` is notebook-friendly: `len(ds)`, `ds[i]` (by index), `ds.by_seq_id(seq)`, and
`ds.batches(...)`, a seeded, prefetching batch iterator. Rows with `seq_id == -1` are padding (only in a last
partial batch when `drop_remainder=False`): they have no agent, no future and no candidates.
"""
from __future__ import annotations

import glob
import json
import os
import queue
import threading
from typing import Iterator

import numpy as np

from densetnt_jax.data.errors import RecordError
from densetnt_jax.data.lmdb_env import open_env
from densetnt_jax.data.pack import META_KEY, record_key
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


class ArgoverseDataset:
  """A packed split. `data_config` sets the padded shapes; its vectorization settings must match the pack."""

  def __init__(self, path, data_config):
    self.path = str(path)
    self.shapes = shapes_from_config(data_config)
    self._envs, keys, owners = [], [], []
    expected = vectorize_settings(data_config)
    for i, shard in enumerate(shard_paths(self.path)):
      env = open_env(shard)
      self._envs.append(env)
      with env.begin() as txn:
        meta = txn.get(META_KEY)
        if meta is None:
          raise RecordError(shard, "no __meta__ record: not written by bin/argoverse_packer.py")
        packed = json.loads(meta)["vectorize"]
        diff = {k: (packed.get(k), v) for k, v in expected.items() if packed.get(k) != v}
        if diff:
          raise ValueError(f"{shard} was packed with other vectorization settings (packed, config): {diff}; "
                           "re-pack or set the config to match")
        shard_keys = [bytes(k) for k in txn.cursor().iternext(values=False) if k != META_KEY]
      keys += shard_keys
      owners += [i] * len(shard_keys)
    order = np.argsort(np.array(keys, dtype=object), kind="stable") if keys else np.zeros(0, np.int64)
    self._keys = [keys[i] for i in order]
    self._owner = np.asarray(owners, np.int32)[order] if keys else np.zeros(0, np.int32)
    if len(set(self._keys)) != len(self._keys):
      raise RecordError(self.path, "the same sequence id is packed in several shards")
    self.seq_ids = np.array([int(k) for k in self._keys], np.int64)
    self._index_of = {int(s): i for i, s in enumerate(self.seq_ids)}
    self._txns = [env.begin(buffers=False) for env in self._envs]

  def __len__(self) -> int:
    return len(self._keys)

  def _arrays(self, i: int) -> dict[str, np.ndarray]:
    key = self._keys[i]
    raw = self._txns[self._owner[i]].get(key)
    if raw is None:
      raise RecordError(f"{self.path}:{key.decode()}", "record listed but missing")
    try:
      return decode_arrays(raw)
    except Exception as e:  # any malformed payload: msgpack, shapes, dtypes
      raise RecordError(f"{self.path}:{key.decode()}", f"corrupt record ({type(e).__name__}: {e})") from None

  def __getitem__(self, i: int) -> Scene:
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} scenes")
    i = i % len(self)
    out = {k: np.zeros(s, dt) for k, (s, dt) in self.shapes.items()}
    self._fill(i, out, None)
    return Scene(**out)

  def by_seq_id(self, seq_id: int) -> Scene:
    if int(seq_id) not in self._index_of:
      raise KeyError(f"sequence {seq_id} is not in {self.path}")
    return self[self._index_of[int(seq_id)]]

  def _fill(self, i: int, out: dict, row: int | None) -> None:
    try:
      pad_into(self._arrays(i), out, row)
    except ValueError as e:
      if isinstance(e, RecordError):
        raise
      raise RecordError(f"{self.path}:{self._keys[i].decode()}", str(e)) from None

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
