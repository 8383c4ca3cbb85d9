"""Argoverse 1 forecasting CSV reader (no argoverse-api): one sequence -> dense (track, step) arrays.

Steps are the ranks of the distinct timestamps (real ticks are nominally 10 Hz but not uniform).
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import io
import os
import re
import stat

import numpy as np

from densetnt_jax.data.errors import CsvError

CSV_COLUMNS = ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME")
OBJECT_TYPES = ("AGENT", "AV", "OTHERS")
INT64_MAX = int(np.iinfo(np.int64).max)
DEFAULT_MAX_ABS_COORDINATE = 1e6        # metres (config data.max_abs_coordinate); Argoverse cities span < 10 km
MAX_HEADER_BYTES = 1024                 # the real header is 45 bytes
MAX_CSV_BYTES = 64 * 2**20              # the largest real sequence is 0.23 MiB
_ASCII_DIGITS = re.compile(r"[0-9]+")


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
  """The sequence id of `<seq_id>.csv`: ASCII decimal digits within int64 (`str.isdigit` would accept '²³')."""
  stem = os.path.splitext(os.path.basename(str(path)))[0]
  if not _ASCII_DIGITS.fullmatch(stem):
    raise CsvError(path, f"file name {stem!r} is not an integer sequence id (expected <seq_id>.csv, ASCII digits)")
  if len(stem.lstrip("0")) > len(str(INT64_MAX)) or int(stem) > INT64_MAX:
    raise CsvError(path, f"sequence id {stem} does not fit in int64 (at most {INT64_MAX}): rename the file")
  return int(stem)


def open_regular_file(path):
  """`path` opened for binary reading if it is a regular file after symlinks, else CsvError saying what it is.

  The type is checked before the open (opening a FIFO blocks until a writer comes) and again on the open file,
  which is opened non-blocking, so a path swapped for a FIFO in between cannot hang the reader either.
  """
  try:
    st = os.stat(path)
  except OSError as e:
    raise CsvError(path, _stat_problem(path, e)) from None
  if not stat.S_ISREG(st.st_mode):
    raise CsvError(path, f"{_file_kind(st.st_mode)}, not a regular file: not opened")
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise CsvError(path, f"cannot open ({e.strerror or e})") from None
  f = os.fdopen(fd, "rb")
  mode = os.fstat(fd).st_mode
  if not stat.S_ISREG(mode):
    f.close()
    raise CsvError(path, f"{_file_kind(mode)}, not a regular file: not read")
  return f


def _stat_problem(path, e: OSError) -> str:
  if e.errno == errno.ELOOP:
    return "symlink loop (too many levels of symbolic links): fix or remove the link"
  if e.errno == errno.ENOENT and os.path.islink(path):
    return f"dangling symlink: its target {os.readlink(path)!r} does not exist"
  return f"cannot stat ({e.strerror or e})"


def _file_kind(mode: int) -> str:
  if stat.S_ISDIR(mode):
    return "a directory"
  if stat.S_ISFIFO(mode):
    return "a named pipe (FIFO)"
  if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
    return "a device"
  if stat.S_ISSOCK(mode):
    return "a socket"
  return "a special file"


def _read_text(path: str) -> tuple[str, str]:
  """(header line, rest) of a CSV as text: the header read with a cap (a one-line garbage file is not read
  whole), a UTF-8 BOM before it dropped, the file's size bounded before the rest is read."""
  with open_regular_file(path) as f:
    size = os.fstat(f.fileno()).st_size
    if size > MAX_CSV_BYTES:
      raise CsvError(path, f"{size} bytes, more than the {MAX_CSV_BYTES} bytes a forecasting CSV may have "
                           "(real ones are < 1 MiB): not read")
    try:
      head = f.readline(MAX_HEADER_BYTES + 1)
      if len(head) > MAX_HEADER_BYTES and not head.endswith(b"\n"):
        raise CsvError(path, f"first line longer than {MAX_HEADER_BYTES} bytes: not a forecasting CSV header")
      rest = f.read(MAX_CSV_BYTES + 1)            # a /proc-like file may report size 0
    except OSError as e:
      raise CsvError(path, f"cannot read ({e.strerror or e})") from None
  if len(rest) > MAX_CSV_BYTES:
    raise CsvError(path, f"more than {MAX_CSV_BYTES} bytes: not read")
  try:
    header = head.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise CsvError(path, f"not UTF-8 text (byte 0x{head[e.start]:02x} at offset {e.start})") from None
  try:
    body = rest.decode("utf-8")
  except UnicodeDecodeError as e:
    raise CsvError(path, f"not UTF-8 text (byte 0x{rest[e.start]:02x} at offset {len(head) + e.start})") from None
  return header, body


def _csv_rows(path: str, text: str) -> list[list[str]]:
  """RFC 4180 rows (quoted fields unquoted by the csv module); blank lines dropped."""
  reader = csv.reader(io.StringIO(text, newline=""))
  try:
    return [r for r in reader if r and not (len(r) == 1 and not r[0].strip())]
  except csv.Error as e:
    raise CsvError(path, f"line {reader.line_num}: {e}") from None


def read_forecasting_csv(path, expected_steps: int | None = None,
                         max_abs_coordinate: float = DEFAULT_MAX_ABS_COORDINATE) -> ForecastingSequence:
  """Parses and validates one forecasting CSV.

  expected_steps: 50 for train/val, 20 for test_obs; None accepts either (the AGENT must then be present
  at every timestamp of the file). X and Y must be finite and within +-max_abs_coordinate metres, checked in
  float64 before anything is cast to float32 (1e38 would become inf there).
  """
  path = str(path)
  seq_id = seq_id_from_path(path)
  header_line, body = _read_text(path)
  if not header_line.strip():
    raise CsvError(path, "empty file (no header)")
  header = [h.strip() for h in _csv_rows(path, header_line)[0]]
  missing = [c for c in CSV_COLUMNS if c not in header]
  if missing:
    raise CsvError(path, f"missing column(s) {missing}; header is {header}")
  rows = _csv_rows(path, body)
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
    if name != "TIMESTAMP" and np.any(np.abs(values) > max_abs_coordinate):
      bad = int(np.argmax(np.abs(values) > max_abs_coordinate))
      raise CsvError(path, f"line {bad + 2}: {name} is {col[name][bad].strip()!r}, beyond +-{max_abs_coordinate:g} m "
                           "(config data.max_abs_coordinate): not city coordinates")
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
