"""Argoverse 1 forecasting CSV reader (no argoverse-api): one sequence -> dense (track, step) arrays.

Steps are the ranks of the distinct timestamps (real ticks are nominally 10 Hz but not uniform).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from densetnt_jax.data.errors import CsvError

CSV_COLUMNS = ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME")
OBJECT_TYPES = ("AGENT", "AV", "OTHERS")


@dataclasses.dataclass(frozen=True)
class ForecastingSequence:
  """One sequence. Tracks are in order of first appearance; xy is NaN where a track is unobserved."""
  seq_id: int
  city: str
  timestamps_S: np.ndarray          # float64, distinct, increasing
  track_ids: tuple[str, ...]
  object_types: tuple[str, ...]
  xy_NxSx2: np.ndarray              # float64, NaN where unobserved
  observed_NxS: np.ndarray          # bool
  agent_index: int
  av_index: int                     # -1 if the file has no AV track
  path: str = ""

  @property
  def num_steps(self) -> int:
    return len(self.timestamps_S)


def seq_id_from_path(path) -> int:
  stem = os.path.splitext(os.path.basename(str(path)))[0]
  if not stem.isdigit():
    raise CsvError(path, f"file name {stem!r} is not an integer sequence id (expected <seq_id>.csv)")
  return int(stem)


def read_forecasting_csv(path, expected_steps: int | None = None) -> ForecastingSequence:
  """Parses and validates one forecasting CSV.

  expected_steps: 50 for train/val, 20 for test_obs; None accepts either (the AGENT must then be present
  at every timestamp of the file).
  """
  path = str(path)
  seq_id = seq_id_from_path(path)
  try:
    with open(path, "r", encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise CsvError(path, f"not UTF-8 text ({e})") from None
  lines = text.splitlines()
  if not lines or not lines[0].strip():
    raise CsvError(path, "empty file (no header)")
  header = [h.strip() for h in lines[0].split(",")]
  missing = [c for c in CSV_COLUMNS if c not in header]
  if missing:
    raise CsvError(path, f"missing column(s) {missing}; header is {header}")
  rows = [l.split(",") for l in lines[1:] if l.strip()]
  if not rows:
    raise CsvError(path, "no data rows")
  ncol = len(header)
  for i, r in enumerate(rows):
    if len(r) != ncol:
      raise CsvError(path, f"line {i + 2}: {len(r)} fields, expected {ncol}")
  cols = list(zip(*rows))
  col = {name: cols[header.index(name)] for name in CSV_COLUMNS}

  numeric = {}
  for name in ("TIMESTAMP", "X", "Y"):
    try:
      values = np.array(col[name], dtype=np.float64)
    except ValueError:
      bad = next(i for i, v in enumerate(col[name]) if not _is_float(v))
      raise CsvError(path, f"line {bad + 2}: non-numeric {name} {col[name][bad]!r}") from None
    finite = np.isfinite(values)
    if not finite.all():
      bad = int(np.argmin(finite))
      raise CsvError(path, f"line {bad + 2}: {name} is {col[name][bad].strip()!r} (NaN/inf)")
    numeric[name] = values

  cities = sorted(set(c.strip() for c in col["CITY_NAME"]))
  if len(cities) != 1:
    raise CsvError(path, f"several cities in one file: {cities}")
  types_col = np.array([t.strip() for t in col["OBJECT_TYPE"]])
  unknown = sorted(set(types_col) - set(OBJECT_TYPES))
  if unknown:
    raise CsvError(path, f"unknown OBJECT_TYPE(s) {unknown}")

  track_col = np.array([t.strip() for t in col["TRACK_ID"]])
  timestamps_S, step_R = np.unique(numeric["TIMESTAMP"], return_inverse=True)
  track_ids, first_row, track_R = np.unique(track_col, return_index=True, return_inverse=True)
  order = np.argsort(first_row, kind="stable")        # tracks in order of first appearance
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  track_R = rank[track_R]
  track_ids = track_ids[order]
  num_tracks, num_steps = len(track_ids), len(timestamps_S)

  flat = track_R * num_steps + step_R
  if len(np.unique(flat)) != len(flat):
    _, first, counts = np.unique(flat, return_index=True, return_counts=True)
    dup = int(flat[first[np.argmax(counts > 1)]])
    raise CsvError(path, f"duplicate (track, timestamp): track {track_ids[dup // num_steps]} at "
                         f"{timestamps_S[dup % num_steps]!r}")

  object_types = []
  for t in range(num_tracks):
    kinds = set(types_col[track_R == t])
    if len(kinds) != 1:
      raise CsvError(path, f"track {track_ids[t]} has several OBJECT_TYPEs {sorted(kinds)}")
    object_types.append(str(kinds.pop()))
  agents = [t for t, k in enumerate(object_types) if k == "AGENT"]
  if len(agents) != 1:
    raise CsvError(path, f"expected exactly one AGENT track, found {len(agents)}")
  avs = [t for t, k in enumerate(object_types) if k == "AV"]
  if len(avs) > 1:
    raise CsvError(path, f"expected at most one AV track, found {len(avs)}")
  agent = agents[0]
  agent_steps = int(np.sum(track_R == agent))
  if expected_steps is not None and agent_steps != expected_steps:
    raise CsvError(path, f"AGENT has {agent_steps} steps, expected {expected_steps}")
  if agent_steps != num_steps:
    raise CsvError(path, f"AGENT has {agent_steps} steps but the file has {num_steps} distinct timestamps")

  xy = np.full((num_tracks, num_steps, 2), np.nan)
  xy[track_R, step_R, 0] = numeric["X"]
  xy[track_R, step_R, 1] = numeric["Y"]
  observed = np.zeros((num_tracks, num_steps), bool)
  observed[track_R, step_R] = True
  return ForecastingSequence(
      seq_id=seq_id, city=cities[0], timestamps_S=timestamps_S, track_ids=tuple(track_ids.tolist()),
      object_types=tuple(object_types), xy_NxSx2=xy, observed_NxS=observed, agent_index=agent,
      av_index=avs[0] if avs else -1, path=path)


def _is_float(v: str) -> bool:
  try:
    float(v)
    return True
  except ValueError:
    return False
