"""Argoverse 1 forecasting leaderboard file, as argoverse-api's `generate_forecasting_h5` writes it.

One HDF5 dataset `argoverse_forecasting` of float64 rows `[seq_id, x, y, prob]` (x, y rounded to float32 first,
as the reference does), 30 rows per trajectory, 6 trajectories per sequence, city coordinates, gzip level 9
(h5py picks the chunks, as in the reference). Rows are sorted by seq_id; within a sequence the trajectories
keep the given order. The writer refuses incomplete submissions rather than write a file the server rejects
(`refuse_incomplete`, naming the missing sequences and why each is missing), and writes through a temporary
file, so a refused or interrupted write leaves no partial file at the path.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

from densetnt_jax.data.pack import sequence_files

DATASET = "argoverse_forecasting"
NUM_MODES = 6
FUTURE_STEPS = 30


def _ids_text(ids, limit: int = 5) -> str:
  ids = sorted(int(i) for i in ids)
  more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
  return ", ".join(str(i) for i in ids[:limit]) + more


def source_sequence_ids(csv_dir) -> set[int]:
  """The sequence ids of a split's source directory: every `<seq_id>.csv` name in it, whatever the file (one
  that failed to pack, or shares its id with another, is still a sequence the leaderboard expects); other names
  are no sequence. The packer's own listing (`pack.sequence_files`)."""
  return set(sequence_files(str(csv_dir))[1].values())


def refuse_incomplete(path: str, expected_seq_ids, seq_ids, missing_reasons: dict | None = None,
                      expected_from: str = "the expected split") -> None:
  """Raises ValueError unless `seq_ids` are exactly `expected_seq_ids`. The message groups the missing ones
  by `missing_reasons` ({reason: ids}, the first reason that holds an id names it) and says what to do."""
  expected, got = {int(s) for s in expected_seq_ids}, {int(s) for s in seq_ids}
  missing, extra = expected - got, got - expected
  if missing:
    groups, left = [], set(missing)
    for reason, ids in (missing_reasons or {}).items():
      named = left & {int(i) for i in ids}
      if named:
        groups.append(f"{len(named)} {reason}: [{_ids_text(named)}]")
        left -= named
    if left:
      groups.append(f"{len(left)} with no prediction: [{_ids_text(left)}]")
    raise ValueError(f"{path} not written: {len(missing)} of the {len(expected)} sequences of {expected_from} "
                     f"are missing ({'; '.join(groups)}); the leaderboard needs every one")
  if extra:
    raise ValueError(f"{path} not written: {len(extra)} sequences are not in {expected_from}: [{_ids_text(extra)}]")


def write_leaderboard_h5(path: str, trajs_by_seq: dict[int, np.ndarray], probs_by_seq: dict[int, np.ndarray],
                         expected_seq_ids=None, *, missing_reasons: dict | None = None,
                         expected_from: str = "the expected split") -> None:
  """Writes `{seq_id: (6,30,2) city xy}` and `{seq_id: (6,)}` probabilities to `path`.

  Raises ValueError (and writes nothing) if a sequence of `expected_seq_ids` is missing (`refuse_incomplete`:
  `missing_reasons` and `expected_from` word the message) or one not expected is present, if trajectories and
  probabilities cover different sequences, or if a sequence does not hold exactly 6 trajectories of 30 finite
  steps with 6 finite probabilities.
  """
  traj_ids, prob_ids = {int(s) for s in trajs_by_seq}, {int(s) for s in probs_by_seq}
  if traj_ids != prob_ids:
    raise ValueError(f"{path}: trajectories and probabilities cover different sequences: only trajectories for "
                     f"[{_ids_text(traj_ids - prob_ids)}], only probabilities for [{_ids_text(prob_ids - traj_ids)}]")
  if expected_seq_ids is not None:
    refuse_incomplete(path, expected_seq_ids, traj_ids, missing_reasons, expected_from)
  if not traj_ids:
    raise ValueError(f"{path}: no sequences to write")
  rows = []
  for seq_id in sorted(trajs_by_seq, key=int):
    trajs_KxFx2 = np.asarray(trajs_by_seq[seq_id], np.float64)
    probs_K = np.asarray(probs_by_seq[seq_id], np.float64).reshape(-1)
    if trajs_KxFx2.shape != (NUM_MODES, FUTURE_STEPS, 2) or probs_K.shape != (NUM_MODES,):
      raise ValueError(f"{path}: sequence {seq_id} has trajectories {trajs_KxFx2.shape} and probabilities "
                       f"{probs_K.shape}; the leaderboard needs ({NUM_MODES}, {FUTURE_STEPS}, 2) and ({NUM_MODES},)")
    if not (np.isfinite(trajs_KxFx2).all() and np.isfinite(probs_K).all()):
      raise ValueError(f"{path}: sequence {seq_id} has non-finite trajectories or probabilities")
    xy_Rx2 = trajs_KxFx2.astype(np.float32).astype(np.float64).reshape(-1, 2)
    rows.append(np.concatenate([np.full((len(xy_Rx2), 1), float(int(seq_id))), xy_Rx2,
                                np.repeat(probs_K, FUTURE_STEPS)[:, None]], axis=1))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  partial = f"{path}.partial"
  try:
    with h5py.File(partial, "w") as f:
      f.create_dataset(DATASET, data=np.concatenate(rows, axis=0), compression="gzip", compression_opts=9)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def read_leaderboard_h5(path: str) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
  """Reads a leaderboard file back: `{seq_id: (K,30,2)}` and `{seq_id: (K,)}` (uniform if it has no prob column)."""
  with h5py.File(path, "r") as f:
    if DATASET not in f:
      raise ValueError(f"{path}: no dataset {DATASET!r} (found {list(f.keys())})")
    data_Rx4 = np.asarray(f[DATASET][()], np.float64)
  if data_Rx4.ndim != 2 or data_Rx4.shape[1] not in (3, 4):
    raise ValueError(f"{path}: {DATASET} has shape {data_Rx4.shape}; expected rows [seq_id, x, y(, prob)]")
  seq_R = data_Rx4[:, 0].astype(np.int64)
  order_R = np.argsort(seq_R, kind="stable")
  ids, starts = np.unique(seq_R[order_R], return_index=True)
  trajs_by_seq, probs_by_seq = {}, {}
  for seq_id, rows_Rx4 in zip(ids, np.split(data_Rx4[order_R], starts[1:])):
    if len(rows_Rx4) % FUTURE_STEPS:
      raise ValueError(f"{path}: sequence {seq_id} has {len(rows_Rx4)} rows, not a multiple of {FUTURE_STEPS}")
    k = len(rows_Rx4) // FUTURE_STEPS
    trajs_by_seq[int(seq_id)] = rows_Rx4[:, 1:3].reshape(k, FUTURE_STEPS, 2)
    if rows_Rx4.shape[1] == 4:
      probs_by_seq[int(seq_id)] = rows_Rx4[::FUTURE_STEPS, 3].copy()
    else:
      probs_by_seq[int(seq_id)] = np.full(k, 1.0 / k)
  return trajs_by_seq, probs_by_seq
