"""One LMDB environment per path per process: py-lmdb refuses to open the same env twice in a process, and
the loader, the packer and the training loop may all touch one split."""
from __future__ import annotations

import os

import lmdb

MAP_SIZE = 1 << 38                      # virtual size; LMDB files are sparse
_ENVS: dict[str, tuple[lmdb.Environment, bool]] = {}


def open_env(path: str, *, write: bool = False) -> lmdb.Environment:
  """The process's env for `path`. A writer replaces (closes) a cached read-only env: datasets opened on it
  before must be re-opened after the write."""
  key = os.path.realpath(path)
  cached = _ENVS.get(key)
  if cached is not None and (cached[1] or not write):
    return cached[0]
  if cached is not None:
    cached[0].close()
  env = lmdb.open(path, map_size=MAP_SIZE, subdir=True, readonly=not write, lock=write, readahead=False)
  _ENVS[key] = (env, write)
  return env


def close_env(path: str) -> None:
  cached = _ENVS.pop(os.path.realpath(path), None)
  if cached is not None:
    cached[0].close()
