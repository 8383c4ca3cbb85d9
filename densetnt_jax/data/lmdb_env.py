"""One LMDB environment per path per process: py-lmdb refuses to open the same env twice in a process, and
the loader, the packer and the training loop may all touch one split.

LMDB maps `data.mdb` into memory: a page past the end of a truncated file (an interrupted copy, a full disk)
kills the reader with SIGBUS the moment it is touched, so each env's file size is checked on open, before any
page but the two meta pages is read.
"""
from __future__ import annotations

import os

import lmdb

from densetnt_jax.data.errors import RecordError

MAP_SIZE = 1 << 38                      # virtual size; LMDB files are sparse
_ENVS: dict[str, tuple[lmdb.Environment, bool]] = {}


def open_env(path: str, *, write: bool = False) -> lmdb.Environment:
  """The process's env for `path`. A writer replaces (closes) a cached read-only env: datasets opened on it
  before must be re-opened after the write. RecordError if `path` is not an LMDB or its data file is cut."""
  key = os.path.realpath(path)
  cached = _ENVS.get(key)
  if cached is not None and (cached[1] or not write):
    return cached[0]
  if cached is not None:
    cached[0].close()
    del _ENVS[key]
  try:
    env = lmdb.open(path, map_size=MAP_SIZE, subdir=True, readonly=not write, lock=write, readahead=False)
  except lmdb.Error as e:
    raise RecordError(path, f"cannot open as an LMDB ({type(e).__name__}: {e}): re-pack or copy it again") from None
  try:
    check_not_truncated(env, path)
  except BaseException:
    env.close()
    raise
  _ENVS[key] = (env, write)
  return env


def check_not_truncated(env: lmdb.Environment, path: str) -> None:
  """RecordError if `data.mdb` is shorter than the pages its newest meta page claims (reads only meta pages)."""
  data_file = os.path.join(path, "data.mdb")
  page_size = env.stat()["psize"]
  needed = (env.info()["last_pgno"] + 1) * page_size
  size = os.stat(data_file).st_size
  if size < needed:
    raise RecordError(data_file, f"truncated: {size} bytes, but its pages need {needed} "
                                 f"({needed // page_size} pages of {page_size}); copy it again or re-pack")


def close_env(path: str) -> None:
  cached = _ENVS.pop(os.path.realpath(path), None)
  if cached is not None:
    cached[0].close()
