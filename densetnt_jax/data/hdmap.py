"""Argoverse 1 HD map reader (no argoverse-api): lane centerlines, attributes, topology, radius queries.

Files per city in `map_files/`: `pruned_argoverse_<CITY>_<ID>_vector_map.xml`,
`<CITY>_<ID>_tableidx_to_laneid_map.json`, `<CITY>_<ID>_halluc_bbox_table.npy`.
Each city's map is parsed once per process (`load_city_map` caches).
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
from scipy.spatial import cKDTree

from densetnt_jax.data.errors import MapError

_XML_RE = re.compile(r"pruned_argoverse_([A-Za-z]+)_(\d+)_vector_map\.xml$")
TURN_DIRECTIONS = ("NONE", "LEFT", "RIGHT")


@dataclasses.dataclass(frozen=True)
class Lane:
  lane_id: int
  centerline_Px2: np.ndarray          # float64, city frame
  has_traffic_control: bool
  turn_direction: str                 # NONE / LEFT / RIGHT
  is_intersection: bool
  l_neighbor_id: int | None
  r_neighbor_id: int | None
  predecessors: tuple[int, ...]
  successors: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LanePieces:
  """Every lane split into pieces of bounded length, each resampled to P points (vectorization input)."""
  points_QxPx2: np.ndarray            # float64, city frame
  lane_index_Q: np.ndarray            # int32 into CityMap.lane_ids_L
  attributes_Qx6: np.ndarray          # float32: traffic control, left, right, intersection, l/r neighbour
  tree: cKDTree                       # over points_QxPx2.reshape(-1, 2)


class CityMap:
  """One city's lanes with fast radius queries."""

  def __init__(self, city: str, city_id: int, lanes: dict[int, Lane], halluc_bbox_Lx4: np.ndarray | None,
               path: str):
    self.city, self.city_id, self.lanes, self.path = city, city_id, lanes, path
    self.lane_ids_L = np.array(list(lanes), np.int64)
    self.halluc_bbox_Lx4 = halluc_bbox_Lx4
    points = [lane.centerline_Px2 for lane in lanes.values()]
    self._point_lane_P = np.repeat(np.arange(len(points)), [len(p) for p in points])
    self._points_Px2 = np.concatenate(points) if points else np.zeros((0, 2))
    self._tree = cKDTree(self._points_Px2)
    self._pieces: dict[tuple[int, float], LanePieces] = {}

  def __len__(self) -> int:
    return len(self.lanes)

  def lane_ids_within(self, xy_2, radius: float) -> np.ndarray:
    """Ids of lanes with a centerline point within `radius` of xy, nearest first."""
    idx = np.asarray(self._tree.query_ball_point(np.asarray(xy_2, np.float64), radius), np.int64)
    if idx.size == 0:
      return np.zeros((0,), np.int64)
    dist = np.linalg.norm(self._points_Px2[idx] - xy_2, axis=-1)
    lane = self._point_lane_P[idx]
    best = np.full(len(self.lanes), np.inf)
    np.minimum.at(best, lane, dist)
    hit = np.flatnonzero(np.isfinite(best))
    return self.lane_ids_L[hit[np.argsort(best[hit], kind="stable")]]

  def lane_pieces(self, num_points: int, max_length: float) -> LanePieces:
    """All lanes as pieces of <= max_length metres, each resampled to num_points points (cached)."""
    key = (num_points, float(max_length))
    if key not in self._pieces:
      self._pieces[key] = _split_and_resample(self, num_points, max_length)
    return self._pieces[key]


def resample_polyline(points_Px2: np.ndarray, num_points: int) -> np.ndarray:
  """num_points points evenly spaced by arc length along a polyline (endpoints kept)."""
  seg = np.linalg.norm(np.diff(points_Px2, axis=0), axis=-1)
  cum = np.concatenate([[0.0], np.cumsum(seg)])
  if cum[-1] <= 0:
    return np.repeat(points_Px2[:1], num_points, axis=0)
  s = np.linspace(0.0, cum[-1], num_points)
  return np.stack([np.interp(s, cum, points_Px2[:, 0]), np.interp(s, cum, points_Px2[:, 1])], -1)


def _split_and_resample(city_map: CityMap, num_points: int, max_length: float) -> LanePieces:
  pieces, owner, attrs = [], [], []
  for i, lane in enumerate(city_map.lanes.values()):
    line = lane.centerline_Px2
    length = float(np.sum(np.linalg.norm(np.diff(line, axis=0), axis=-1)))
    n_pieces = max(1, int(np.ceil(length / max_length - 1e-9)))
    dense = resample_polyline(line, n_pieces * (num_points - 1) + 1)
    a = (float(lane.has_traffic_control), float(lane.turn_direction == "LEFT"),
         float(lane.turn_direction == "RIGHT"), float(lane.is_intersection),
         float(lane.l_neighbor_id is not None), float(lane.r_neighbor_id is not None))
    for k in range(n_pieces):
      pieces.append(dense[k * (num_points - 1): (k + 1) * (num_points - 1) + 1])
      owner.append(i)
      attrs.append(a)
  points = np.asarray(pieces, np.float64).reshape(-1, num_points, 2)
  return LanePieces(points, np.asarray(owner, np.int32), np.asarray(attrs, np.float32).reshape(-1, 6),
                    cKDTree(points.reshape(-1, 2)))


def find_map_files(map_dir) -> dict[str, tuple[str, int]]:
  """{city: (xml path, city id)} for every vector map in map_dir."""
  found = {}
  for path in sorted(glob.glob(os.path.join(str(map_dir), "pruned_argoverse_*_vector_map.xml"))):
    m = _XML_RE.search(os.path.basename(path))
    if m:
      found[m.group(1)] = (path, int(m.group(2)))
  return found


@functools.lru_cache(maxsize=None)
def _load_city_map_cached(map_dir: str, city: str) -> CityMap:
  found = find_map_files(map_dir)
  if city not in found:
    raise MapError(map_dir, f"no vector map for city {city!r} (maps found: {sorted(found) or 'none'})")
  xml_path, city_id = found[city]
  lanes = parse_vector_map_xml(xml_path)
  prefix = os.path.join(map_dir, f"{city}_{city_id}")
  bbox = None
  if os.path.exists(prefix + "_halluc_bbox_table.npy"):
    try:
      bbox = np.load(prefix + "_halluc_bbox_table.npy", allow_pickle=False)
    except ValueError as e:
      raise MapError(prefix + "_halluc_bbox_table.npy", f"unreadable ({e})") from None
    if bbox.shape != (len(lanes), 4):
      raise MapError(prefix + "_halluc_bbox_table.npy", f"shape {bbox.shape}, expected ({len(lanes)}, 4)")
  table_path = prefix + "_tableidx_to_laneid_map.json"
  if os.path.exists(table_path):
    try:
      with open(table_path) as f:
        table = json.load(f)
    except json.JSONDecodeError as e:
      raise MapError(table_path, f"malformed JSON ({e})") from None
    ids = [int(table[str(i)]) for i in range(len(table))]
    if ids != list(lanes):
      raise MapError(table_path, "table index -> lane id does not match the XML's lane order")
  return CityMap(city, city_id, lanes, bbox, xml_path)


def load_city_map(map_dir, city: str) -> CityMap:
  """The city's map from `map_dir` (the official `map_files/` folder), parsed once per process (per real path:
  a symlinked `map_files` shares the parse)."""
  return _load_city_map_cached(os.path.realpath(str(map_dir)), city)


def available_cities(map_dir) -> list[str]:
  return sorted(find_map_files(map_dir))


def parse_vector_map_xml(path) -> dict[int, Lane]:
  """Parses `pruned_argoverse_*_vector_map.xml` into {lane_id: Lane}, in file order."""
  path = str(path)
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise MapError(path, f"malformed or truncated XML ({e})") from None
  except OSError as e:
    raise MapError(path, f"cannot read ({e})") from None
  nodes = {}
  for node in root.iter("node"):
    try:
      xy = (float(node.attrib["x"]), float(node.attrib["y"]))
    except (KeyError, ValueError):
      raise MapError(path, f"bad <node> {node.attrib}") from None
    if not (math.isfinite(xy[0]) and math.isfinite(xy[1])):
      raise MapError(path, f"<node> {node.attrib.get('id')!r} has non-finite coordinates {xy}")
    nodes[node.attrib["id"]] = xy
  lanes: dict[int, Lane] = {}
  for way in root.iter("way"):
    if "lane_id" not in way.attrib:
      raise MapError(path, f"<way> without lane_id: {way.attrib}")
    lane_id = int(way.attrib["lane_id"])
    tags: dict[str, str] = {}
    pred, succ, refs = [], [], []
    for child in way:
      if child.tag == "nd":
        refs.append(child.attrib.get("ref"))
      elif child.tag == "tag":
        k, v = child.attrib.get("k"), child.attrib.get("v")
        if k == "predecessor":
          pred.append(int(v))
        elif k == "successor":
          succ.append(int(v))
        else:
          tags[k] = v
    missing = [r for r in refs if r not in nodes]
    if missing:
      raise MapError(path, f"lane {lane_id} references missing node(s) {missing[:5]}")
    if len(refs) < 2:
      raise MapError(path, f"lane {lane_id} has {len(refs)} centerline node(s), needs >= 2")
    turn = tags.get("turn_direction", "NONE")
    if turn not in TURN_DIRECTIONS:
      raise MapError(path, f"lane {lane_id}: unknown turn_direction {turn!r}")
    lanes[lane_id] = Lane(
        lane_id=lane_id, centerline_Px2=np.array([nodes[r] for r in refs], np.float64),
        has_traffic_control=tags.get("has_traffic_control") == "True", turn_direction=turn,
        is_intersection=tags.get("is_intersection") == "True",
        l_neighbor_id=_optional_id(tags.get("l_neighbor_id")),
        r_neighbor_id=_optional_id(tags.get("r_neighbor_id")),
        predecessors=tuple(pred), successors=tuple(succ))
  if not lanes:
    raise MapError(path, "no <way> lanes in the map")
  return lanes


def _optional_id(v: str | None) -> int | None:
  return None if v in (None, "None", "") else int(v)
