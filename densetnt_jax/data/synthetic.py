"""A synthetic city written in the exact official Argoverse 1.1 file formats.

Every command then runs out of the box, and the same readers serve real and synthetic data:
  map_files/pruned_argoverse_<CITY>_<ID>_vector_map.xml, <CITY>_<ID>_tableidx_to_laneid_map.json,
  <CITY>_<ID>_halluc_bbox_table.npy, {train,val}/data/<seq_id>.csv (50 steps), test_obs/data/<seq_id>.csv (20).

The city: a 3x3 grid of intersections (130 m blocks, the middle avenues have 2 lanes per direction, two
streets bend) inside a ring road with rounded corners, joined to it by T-junctions. Vehicles drive lane
routes at 10 Hz with a speed controller: cruise (with a random change of mind), slow down for curvature
(lateral acceleration limit), stop at red lights of the controlled intersections, then go. The AGENT is
placed so that at its last observed step it is approaching (or already in) an intersection and takes a
uniformly random exit, so its 3 s future is multimodal and far from constant velocity.
The map is fixed; the seed only draws the scenes. Same seed -> byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

LANE_WIDTH = 3.6              # m
LANE_POINTS = 10              # centerline nodes per lane, as in the real maps
MAX_SEGMENT = 25.0            # m; road lanes are cut into segments of at most this (= lane_piece_max_length)
INTERSECTION_MARGIN = 5.0     # m beyond the crossing roads' half-width where connector lanes start
BBOX_MARGIN = 1.9             # m, as in the real halluc_bbox tables
FIRST_LANE_ID = 20000001
CITY_ORIGIN = (2000.0, 1500.0)  # city-frame offset, so coordinates are as large as in the real cities

OBS_STEPS, TOTAL_STEPS = 20, 50
ROUTE_LENGTH = 200.0          # m of lane route sampled per vehicle (>= start offset + 5 s at 15 m/s + look-ahead)
ROUTE_DS = 1.0                # m between route samples
LATERAL_ACCEL = 2.5           # m/s^2, comfortable lateral acceleration in curves (scaled per vehicle)
ANTICIPATION_DECEL = 1.5      # m/s^2, braking ahead of curves
STOP_DECEL = 2.0              # m/s^2, braking profile to a red light's stop line
FOLLOW_DECEL = 3.0            # m/s^2, braking assumed when keeping a safe gap to the vehicle ahead
CAR_LENGTH = 4.5              # m
MAX_STOP_DECEL = 4.0          # m/s^2; a driver who would need more than this runs the red light
AV_TRACK_ID = "00000000-0000-0000-0000-000000000000"
CSV_HEADER = "TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME"


@dataclasses.dataclass
class LaneSpec:
  """One lane segment of the synthetic map (what the XML holds, plus what the simulator needs)."""
  lane_id: int
  centerline_Px2: np.ndarray
  turn_direction: str = "NONE"
  is_intersection: bool = False
  has_traffic_control: bool = False
  l_neighbor_id: int | None = None
  r_neighbor_id: int | None = None
  predecessors: list[int] = dataclasses.field(default_factory=list)
  successors: list[int] = dataclasses.field(default_factory=list)
  node: int = -1              # intersection index for connector lanes
  axis: int = -1              # 0: the connector enters from an east-west arm, 1: north-south (signal phase)

  @property
  def length(self) -> float:
    return float(_arclength(self.centerline_Px2)[-1])


# ----------------------------------------------------------------------------------------------- map


def _arclength(points_Px2: np.ndarray) -> np.ndarray:
  return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points_Px2, axis=0), axis=-1))])


def _resample(points_Px2: np.ndarray, s_K: np.ndarray) -> np.ndarray:
  """Points at arc lengths s_K along a polyline."""
  cum = _arclength(points_Px2)
  return np.stack([np.interp(s_K, cum, points_Px2[:, 0]), np.interp(s_K, cum, points_Px2[:, 1])], -1)


def _right_normals(points_Px2: np.ndarray) -> np.ndarray:
  t = np.gradient(points_Px2, axis=0)
  t /= np.linalg.norm(t, axis=-1, keepdims=True)
  return np.stack([t[:, 1], -t[:, 0]], -1)


def _road_geometry():
  """Intersections (x, y) and roads (node a, node b, dense reference polyline a->b, lanes per direction)."""
  grid = (0.0, 130.0, 260.0)
  lo, hi, corner_r = -80.0, 340.0, 50.0
  jitter = np.random.default_rng(20240601).uniform(-4.0, 4.0, (3, 3, 2))   # a slightly irregular grid
  nodes, roads = [], []
  grid_node = {}
  for i, x in enumerate(grid):
    for j, y in enumerate(grid):
      grid_node[i, j] = len(nodes)
      nodes.append((x + jitter[i, j, 0], y + jitter[i, j, 1]))
  # Ring T-junctions, counter-clockwise from the bottom-left, one per grid line end.
  ring = [(x, lo) for x in grid] + [(hi, y) for y in grid] + [(x, hi) for x in grid[::-1]] + \
         [(lo, y) for y in grid[::-1]]
  ring_node = [len(nodes) + k for k in range(len(ring))]
  nodes.extend(ring)

  def straight(a, b, bend=0.0):
    pa, pb = np.array(nodes[a]), np.array(nodes[b])
    n = max(2, int(np.linalg.norm(pb - pa)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    line = pa + t * (pb - pa)
    if bend:                                            # a smooth bulge with zero slope at both ends
      d = (pb - pa) / np.linalg.norm(pb - pa)
      line = line + bend * np.sin(np.pi * t) ** 2 * np.array([-d[1], d[0]])
    return line

  def lanes_for(i_or_j):                                # the middle avenues have 2 lanes per direction
    return 2 if i_or_j == 1 else 1

  bends = {("h", 2, 0): 12.0, ("v", 2, 0): -10.0}       # two bent streets (top-left, right-bottom blocks)
  for j in range(3):                                    # horizontal lines y = grid[j]
    chain = [ring_node[11 - j]] + [grid_node[i, j] for i in range(3)] + [ring_node[3 + j]]
    for k in range(4):
      roads.append((chain[k], chain[k + 1], straight(chain[k], chain[k + 1], bends.get(("h", j, k - 1), 0.0)),
                    lanes_for(j)))
  for i in range(3):                                    # vertical lines x = grid[i]
    chain = [ring_node[i]] + [grid_node[i, j] for j in range(3)] + [ring_node[8 - i]]
    for k in range(4):
      roads.append((chain[k], chain[k + 1], straight(chain[k], chain[k + 1], bends.get(("v", i, k - 1), 0.0)),
                    lanes_for(i)))
  # The ring: straight between T-junctions on a side, a rounded corner between sides.
  corners = [(hi, lo), (hi, hi), (lo, hi), (lo, lo)]
  for k in range(12):
    a, b = ring_node[k], ring_node[(k + 1) % 12]
    if k % 3 != 2:
      roads.append((a, b, straight(a, b), 1))
      continue
    cx, cy = corners[k // 3]
    pa, pb, c = np.array(nodes[a]), np.array(nodes[b]), np.array([cx, cy])
    d_in = (c - pa) / np.linalg.norm(c - pa)
    d_out = (pb - c) / np.linalg.norm(pb - c)
    p1, p2 = c - corner_r * d_in, c + corner_r * d_out  # arc from p1 to p2, tangent to both sides
    centre = p1 + corner_r * np.array([-d_in[1], d_in[0]])
    a0 = math.atan2(*(p1 - centre)[::-1])
    arc = centre + corner_r * np.stack([np.cos(a0 + np.linspace(0, np.pi / 2, 40)),
                                        np.sin(a0 + np.linspace(0, np.pi / 2, 40))], -1)
    line = np.concatenate([pa + np.linspace(0, 1, 31)[:-1, None] * (p1 - pa), arc,
                           p2 + np.linspace(0, 1, 31)[1:, None] * (pb - p2)])
    roads.append((a, b, line, 1))
  controlled = {grid_node[1, 0], grid_node[0, 1], grid_node[1, 1], grid_node[2, 1], grid_node[1, 2]}
  return np.array(nodes) + np.array(CITY_ORIGIN), [(a, b, line + np.array(CITY_ORIGIN), n)
                                                   for a, b, line, n in roads], controlled


def _bezier(p0, h0, p1, h1, turning: bool) -> np.ndarray:
  """A cubic Bezier lane from p0 (heading h0) to p1 (heading h1): near-circular for 90 degree turns."""
  chord = float(np.linalg.norm(p1 - p0))
  handle = chord * (0.39 if turning else 1.0 / 3.0)
  c = np.array([p0, p0 + handle * h0, p1 - handle * h1, p1])
  t = np.linspace(0.0, 1.0, 200)[:, None]
  dense = ((1 - t) ** 3) * c[0] + 3 * ((1 - t) ** 2) * t * c[1] + 3 * (1 - t) * t ** 2 * c[2] + t ** 3 * c[3]
  line = _resample(dense, np.linspace(0.0, _arclength(dense)[-1], LANE_POINTS))
  line[0], line[-1] = p0, p1                            # exact shared endpoints with the road lanes
  return line


def build_city_lanes() -> list[LaneSpec]:
  """The synthetic city's lane segments, ids increasing, topology and neighbours filled."""
  nodes, roads, controlled = _road_geometry()
  lanes: list[LaneSpec] = []

  def new_lane(**kw) -> LaneSpec:
    lane = LaneSpec(lane_id=FIRST_LANE_ID + len(lanes), **kw)
    lanes.append(lane)
    return lane

  half_width = np.zeros(len(nodes))
  for a, b, _, n in roads:
    half_width[a] = max(half_width[a], n * LANE_WIDTH)
    half_width[b] = max(half_width[b], n * LANE_WIDTH)
  trim = half_width + INTERSECTION_MARGIN
  incoming = [[] for _ in nodes]    # per node: (lanes innermost first, heading into the node)
  outgoing = [[] for _ in nodes]
  for a, b, line, n in roads:
    cum = _arclength(line)
    ref = _resample(line, np.linspace(trim[a], cum[-1] - trim[b], int(cum[-1]) + 1))
    for src, dst, r in ((a, b, ref), (b, a, ref[::-1])):
      normal = _right_normals(r)
      chains = []
      for k in range(n):
        offset = r + (k + 0.5) * LANE_WIDTH * normal
        cum_k = _arclength(offset)
        num_seg = int(math.ceil(cum_k[-1] / MAX_SEGMENT))
        cuts = np.linspace(0.0, cum_k[-1], num_seg + 1)
        chain = []
        for q in range(num_seg):
          pts = _resample(offset, np.linspace(cuts[q], cuts[q + 1], LANE_POINTS))
          if chain:
            pts[0] = chain[-1].centerline_Px2[-1]
          chain.append(new_lane(centerline_Px2=pts))
        for u, v in zip(chain[:-1], chain[1:]):
          u.successors.append(v.lane_id)
          v.predecessors.append(u.lane_id)
        chains.append(chain)
      for k in range(n - 1):                            # lane k is left of lane k + 1
        for u, v in zip(chains[k], chains[k + 1]):
          u.r_neighbor_id, v.l_neighbor_id = v.lane_id, u.lane_id
      heading_in = r[-1] - r[-2]
      heading_out = r[1] - r[0]
      incoming[dst].append(([c[-1] for c in chains], heading_in / np.linalg.norm(heading_in), src))
      outgoing[src].append(([c[0] for c in chains], heading_out / np.linalg.norm(heading_out), dst))

  for node in range(len(nodes)):
    for in_lanes, h_in, from_node in incoming[node]:
      axis = int(abs(h_in[1]) > abs(h_in[0]))
      for out_lanes, h_out, to_node in outgoing[node]:
        if to_node == from_node:
          continue                                      # no U-turns
        turn = math.degrees(math.atan2(h_in[0] * h_out[1] - h_in[1] * h_out[0], float(h_in @ h_out)))
        n_in, n_out = len(in_lanes), len(out_lanes)
        if turn > 45:
          pairs, direction = [(0, 0)], "LEFT"
        elif turn < -45:
          pairs, direction = [(n_in - 1, n_out - 1)], "RIGHT"
        else:
          pairs = [(min(k, n_in - 1), min(k, n_out - 1)) for k in range(max(n_in, n_out))]
          direction = "NONE"
        for k_in, k_out in pairs:
          u, v = in_lanes[k_in], out_lanes[k_out]
          p0, p1 = u.centerline_Px2[-1], v.centerline_Px2[0]
          h0 = p0 - u.centerline_Px2[-2]
          h1 = v.centerline_Px2[1] - p1
          c = new_lane(centerline_Px2=_bezier(p0, h0 / np.linalg.norm(h0), p1, h1 / np.linalg.norm(h1),
                                              direction != "NONE"),
                       turn_direction=direction, is_intersection=True,
                       has_traffic_control=node in controlled, node=node, axis=axis)
          c.predecessors.append(u.lane_id)
          c.successors.append(v.lane_id)
          u.successors.append(c.lane_id)
          v.predecessors.append(c.lane_id)
          if node in controlled:
            u.has_traffic_control = True                # the approach lane ends at the stop line
  return lanes


def write_map_files(map_dir: str, lanes: list[LaneSpec], city: str, city_id: int) -> int:
  """Writes the XML, JSON and NPY map files for `lanes`; returns the number of XML nodes."""
  os.makedirs(map_dir, exist_ok=True)
  # Nodes are shared where lane endpoints coincide exactly, and numbered in x order, as in the real maps.
  keys = sorted({(float(x), float(y)) for lane in lanes for x, y in lane.centerline_Px2})
  node_id = {k: i for i, k in enumerate(keys)}
  out = ["<ArgoverseVectorMap>"]
  out.extend(f' <node id="{i}" x="{x!r}" y="{y!r}" />' for i, (x, y) in enumerate(keys))
  for lane in lanes:
    out.append(f' <way lane_id="{lane.lane_id}">')
    out.append(f'  <tag k="has_traffic_control" v="{lane.has_traffic_control}" />')
    out.append(f'  <tag k="turn_direction" v="{lane.turn_direction}" />')
    out.append(f'  <tag k="is_intersection" v="{lane.is_intersection}" />')
    out.append(f'  <tag k="l_neighbor_id" v="{lane.l_neighbor_id}" />')
    out.append(f'  <tag k="r_neighbor_id" v="{lane.r_neighbor_id}" />')
    out.extend(f'  <nd ref="{node_id[float(x), float(y)]}" />' for x, y in lane.centerline_Px2)
    out.extend(f'  <tag k="predecessor" v="{p}" />' for p in lane.predecessors)
    out.extend(f'  <tag k="successor" v="{s}" />' for s in lane.successors)
    out.append(" </way>")
  out.append("</ArgoverseVectorMap>\n")
  prefix = os.path.join(map_dir, f"{city}_{city_id}")
  with open(os.path.join(map_dir, f"pruned_argoverse_{city}_{city_id}_vector_map.xml"), "w") as f:
    f.write("\n".join(out))
  with open(prefix + "_tableidx_to_laneid_map.json", "w") as f:
    f.write(json.dumps({str(i): lane.lane_id for i, lane in enumerate(lanes)}))
  bbox_Nx4 = np.array([np.concatenate([lane.centerline_Px2.min(0) - BBOX_MARGIN,
                                       lane.centerline_Px2.max(0) + BBOX_MARGIN]) for lane in lanes])
  np.save(prefix + "_halluc_bbox_table.npy", bbox_Nx4.astype(np.float64), allow_pickle=False)
  return len(keys)


# -------------------------------------------------------------------------------------------- routes


@dataclasses.dataclass
class RouteLibrary:
  """Every successor chain of >= ROUTE_LENGTH metres from every lane start, sampled every ROUTE_DS."""
  xy_RxKx2: np.ndarray          # float64 route centerline samples
  normal_RxKx2: np.ndarray      # float32 unit right normals (smoothed)
  vmax_RxK: np.ndarray          # float32 speed envelope for curvature with anticipation, unit driver scale
  start_lane_R: np.ndarray      # int32 lane index the route starts at
  prob_R: np.ndarray            # float64 probability of the route among those from its start lane
  stop_s_RxJ: np.ndarray        # float64 stop lines (connector starts at controlled nodes), inf padded
  stop_node_RxJ: np.ndarray     # int32
  stop_axis_RxJ: np.ndarray     # int32
  lane_RxK: np.ndarray          # int32 lane index at each sample
  lane_s_RxL: np.ndarray        # float32 where lane l starts along route r (inf if not on it): car following
  routes_from_lane: list[np.ndarray]   # route indices per start lane
  entries: dict[int, dict[int, list[tuple[int, float]]]]  # entry lane -> connector -> [(route, s_entry)]


def build_route_library(lanes: list[LaneSpec], agent_entry_range=(60.0, 110.0), max_stops=3) -> RouteLibrary:
  index = {lane.lane_id: i for i, lane in enumerate(lanes)}
  succ = [[index[s] for s in lane.successors] for lane in lanes]
  lengths = np.array([lane.length for lane in lanes])
  routes = []
  for start in range(len(lanes)):
    stack = [((start,), lengths[start], 1.0)]
    while stack:
      seq, total, p = stack.pop()
      if total >= ROUTE_LENGTH or not succ[seq[-1]]:
        routes.append((seq, p))
        continue
      for j in reversed(succ[seq[-1]]):
        stack.append((seq + (j,), total + lengths[j], p / len(succ[seq[-1]])))
  num_k = int(round(ROUTE_LENGTH / ROUTE_DS)) + 1
  s_K = np.arange(num_k) * ROUTE_DS
  xy = np.zeros((len(routes), num_k, 2))
  stop_s = np.full((len(routes), max_stops), np.inf)
  stop_node = np.zeros((len(routes), max_stops), np.int32)
  stop_axis = np.zeros((len(routes), max_stops), np.int32)
  lane_at = np.zeros((len(routes), num_k), np.int32)
  lane_s = np.full((len(routes), len(lanes)), np.inf, np.float32)
  entries: dict[int, dict[int, list[tuple[int, float]]]] = {}
  for r, (seq, _) in enumerate(routes):
    line = np.concatenate([lanes[seq[0]].centerline_Px2] + [lanes[i].centerline_Px2[1:] for i in seq[1:]])
    xy[r] = _resample(line, s_K)
    lane_start = np.concatenate([[0.0], np.cumsum(lengths[list(seq)])])
    lane_at[r] = np.array(seq)[np.clip(np.searchsorted(lane_start, s_K, "right") - 1, 0, len(seq) - 1)]
    lane_s[r, list(seq)] = lane_start[:-1]
    j = 0
    for q, i in enumerate(seq):
      lane = lanes[i]
      if lane.is_intersection and lane.has_traffic_control and j < max_stops:
        stop_s[r, j], stop_node[r, j], stop_axis[r, j] = lane_start[q], lane.node, lane.axis
        j += 1
      if lane.is_intersection and q > 0 and agent_entry_range[0] <= lane_start[q] <= agent_entry_range[1]:
        entries.setdefault(seq[q - 1], {}).setdefault(i, []).append((r, float(lane_start[q])))
  # Curvature from headings over a 4 m window (lane polylines have kinks at their nodes).
  d = np.concatenate([xy[:, 2:3] - xy[:, :1], xy[:, 4:] - xy[:, :-4], xy[:, -1:] - xy[:, -3:-2]], 1)
  d = np.concatenate([d[:, :1], d, d[:, -1:]], 1)
  heading = np.unwrap(np.arctan2(d[..., 1], d[..., 0]), axis=1)
  kappa = np.abs(np.gradient(heading, ROUTE_DS, axis=1))
  vlim = np.minimum(20.0, np.sqrt(LATERAL_ACCEL / np.maximum(kappa, 1e-6)))
  # v(s)^2 <= min_{s' >= s} vlim(s')^2 + 2 b (s' - s): a reverse cumulative minimum.
  e = vlim ** 2 + 2 * ANTICIPATION_DECEL * s_K
  env = np.minimum.accumulate(e[:, ::-1], axis=1)[:, ::-1] - 2 * ANTICIPATION_DECEL * s_K
  normal = np.stack([np.sin(heading), -np.cos(heading)], -1)
  start = np.array([seq[0] for seq, _ in routes], np.int32)
  return RouteLibrary(
      xy_RxKx2=xy, normal_RxKx2=normal.astype(np.float32),
      vmax_RxK=np.sqrt(np.maximum(env, 0.0)).astype(np.float32), start_lane_R=start,
      prob_R=np.array([p for _, p in routes]), stop_s_RxJ=stop_s, stop_node_RxJ=stop_node,
      stop_axis_RxJ=stop_axis, lane_RxK=lane_at, lane_s_RxL=lane_s,
      routes_from_lane=[np.flatnonzero(start == i) for i in range(len(lanes))], entries=entries)


# -------------------------------------------------------------------------------------------- scenes


@dataclasses.dataclass
class SplitTracks:
  """Simulated tracks of one split; vehicles of all scenes stacked along V."""
  timestamps_SxT: np.ndarray    # float64
  scene_V: np.ndarray           # int32
  kind_V: np.ndarray            # int8: 0 AGENT, 1 AV, 2 OTHERS
  number_V: np.ndarray          # int64 track number (TRACK_ID suffix)
  order_V: np.ndarray           # int32 row order within its scene (AV first)
  xy_VxTx2: np.ndarray          # float64
  observed_VxT: np.ndarray      # bool


def _sample_vehicles(rng, lanes, lib, num_scenes):
  """Starting states of every vehicle of every scene (Python loop over scenes; cheap)."""
  mid_Lx2 = np.array([lane.centerline_Px2[LANE_POINTS // 2] for lane in lanes])
  lane_len = np.array([lane.length for lane in lanes])
  parkable = np.array([not l.is_intersection and l.r_neighbor_id is None for l in lanes])
  entry_lanes = sorted(lib.entries)
  cols = {k: [] for k in ("scene", "kind", "route", "s0", "v0", "parked_x", "parked_y")}
  wait_node_S, wait_axis_S = np.full(num_scenes, -1), np.full(num_scenes, -1)

  def add(scene, kind, route, s0, parked_xy=(np.nan, np.nan), v0=np.nan):
    cols["scene"].append(scene), cols["kind"].append(kind), cols["route"].append(route)
    cols["s0"].append(s0), cols["v0"].append(v0)
    cols["parked_x"].append(parked_xy[0]), cols["parked_y"].append(parked_xy[1])

  for scene in range(num_scenes):
    e = entry_lanes[rng.integers(len(entry_lanes))]
    conns = sorted(lib.entries[e])
    c = conns[rng.integers(len(conns))]                 # left / straight / right uniformly
    cands = lib.entries[e][c]
    r, s_entry = cands[rng.integers(len(cands))]
    conn = lanes[c]
    if conn.has_traffic_control and rng.random() < 0.3:
      # Waiting at a red light at t = 0; it turns green during the 5 s (stop and go).
      s_init = s_entry - 1.0 - rng.uniform(0.0, 4.0)
      wait_node_S[scene], wait_axis_S[scene] = conn.node, conn.axis
      add(scene, 0, r, s_init, v0=0.0)
    else:
      # At its last observed step the agent is 25 m before the junction .. 5 m into it.
      s19 = s_entry + rng.uniform(-25.0, 5.0)
      v_guess = min(float(lib.vmax_RxK[r, int(s19)]), rng.uniform(6.0, 14.0))
      s_init = max(0.0, s19 - v_guess * (OBS_STEPS - 1) * 0.1)
      add(scene, 0, r, s_init)
    placed = [lib.xy_RxKx2[r, int(s_init)]]
    num_others = int(rng.integers(5, 21))
    dist = np.linalg.norm(mid_Lx2 - placed[0], axis=-1)
    near_av = np.flatnonzero(dist < 35.0)
    near = np.flatnonzero(dist < 70.0)
    kinds = [1] + [2] * num_others
    for kind in kinds:
      for _ in range(20):                               # rejection: keep 7 m between vehicles at t = 0
        parked = kind == 2 and rng.random() < 0.15
        pool = near[parkable[near]] if parked else (near_av if kind == 1 else near)
        if pool.size == 0:
          continue
        lane = int(pool[rng.integers(pool.size)])
        s0 = rng.uniform(0.0, lane_len[lane])
        if parked:
          line = lanes[lane].centerline_Px2
          p = _resample(line, np.array([s0, min(s0 + 0.5, lane_len[lane])]))
          h = (p[1] - p[0]) / max(np.linalg.norm(p[1] - p[0]), 1e-9)
          xy = p[0] + 2.9 * np.array([h[1], -h[0]])   # at the kerb, right of the outermost lane
          route = -1
        else:
          from_lane = lib.routes_from_lane[lane]
          route = int(rng.choice(from_lane, p=lib.prob_R[from_lane] / lib.prob_R[from_lane].sum()))
          xy = lib.xy_RxKx2[route, int(s0)]
        if min(np.linalg.norm(xy - q) for q in placed) >= 7.0:
          placed.append(xy)
          add(scene, kind, route, s0, xy if parked else (np.nan, np.nan))
          break
  return {k: np.array(v) for k, v in cols.items()}, wait_node_S, wait_axis_S


def simulate_split(rng, lanes: list[LaneSpec], lib: RouteLibrary, num_scenes: int) -> SplitTracks:
  """Samples and drives every vehicle of `num_scenes` scenes (vectorized over all vehicles)."""
  v, wait_node_S, wait_axis_S = _sample_vehicles(rng, lanes, lib, num_scenes)
  scene_V, kind_V = v["scene"].astype(np.int32), v["kind"].astype(np.int8)
  parked_V = v["route"] < 0
  route_V = np.where(parked_V, 0, v["route"]).astype(np.int64)
  num_v, num_t = len(scene_V), TOTAL_STEPS
  # Timestamps: nominal 10 Hz with tick jitter, each scene at its own log time.
  dt_SxT = np.clip(0.1 + rng.normal(0.0, 0.004, (num_scenes, num_t - 1)), 0.088, 0.112)
  t0_S = 315969000.0 + rng.uniform(0.0, 20000.0, num_scenes)
  rel_SxT = np.concatenate([np.zeros((num_scenes, 1)), np.cumsum(dt_SxT, 1)], 1)
  timestamps = t0_S[:, None] + rel_SxT
  # Drivers: cruise speed with a possible change of mind, curve-speed scale, acceleration limit.
  is_agent = kind_V == 0
  v_cruise0 = np.where(is_agent, rng.uniform(7.0, 15.0, num_v), rng.uniform(5.0, 14.0, num_v))
  change = rng.random(num_v) < 0.5
  v_cruise1 = np.where(change, v_cruise0 * rng.uniform(0.5, 1.4, num_v), v_cruise0)
  t_change = rng.uniform(0.0, 5.0, num_v)
  scale = rng.uniform(0.85, 1.15, num_v)
  accel_max = rng.uniform(1.5, 3.0, num_v)
  # Signals: per scene and controlled node, which axis is green first and when it switches.
  num_nodes = int(max(l.node for l in lanes)) + 1
  green_first_SxN = rng.integers(0, 2, (num_scenes, num_nodes))
  switch_SxN = rng.uniform(0.0, 8.0, (num_scenes, num_nodes))
  waits = np.flatnonzero(wait_node_S >= 0)
  green_first_SxN[waits, wait_node_S[waits]] = 1 - wait_axis_S[waits]
  switch_SxN[waits, wait_node_S[waits]] = rng.uniform(0.5, 4.0, len(waits))
  stop_s = lib.stop_s_RxJ[route_V]
  stop_s[parked_V] = np.inf
  red_first = lib.stop_axis_RxJ[route_V] != green_first_SxN[scene_V[:, None], lib.stop_node_RxJ[route_V]]
  switch = switch_SxN[scene_V[:, None], lib.stop_node_RxJ[route_V]]
  ignored = np.zeros(stop_s.shape, bool)
  num_k = lib.xy_RxKx2.shape[1]

  # Car following: for every ordered pair of moving vehicles of a scene, the follower's distance to the
  # leader along the follower's route (inf when the leader is not on it).
  pair_i, pair_j = _scene_pairs(scene_V, ~parked_V)
  followers, first_pair = np.unique(pair_i, return_index=True)

  def follow_speed(s, speed):
    k = np.minimum(s.astype(np.int64), num_k - 1)
    lane = lib.lane_RxK[route_V, k]
    offset = s - lib.lane_s_RxL[route_V, lane]
    dist = lib.lane_s_RxL[route_V[pair_i], lane[pair_j]] + offset[pair_j] - s[pair_i]
    gap = dist - CAR_LENGTH - 2.0 - 0.5 * speed[pair_i]
    v_pair = np.where((dist > 0) & (dist < 60.0),
                      np.sqrt(np.maximum(speed[pair_j] ** 2 + 2 * FOLLOW_DECEL * gap, 0.0)), np.inf)
    out = np.full(num_v, np.inf)
    if len(pair_i):
      out[followers] = np.minimum.reduceat(v_pair, first_pair)
    return out

  s = v["s0"].astype(np.float64)
  k0 = np.minimum(s.astype(np.int64), num_k - 1)
  speed = np.minimum(v_cruise0, scale * lib.vmax_RxK[route_V, k0]) * rng.uniform(0.7, 1.05, num_v)
  speed = np.where(np.isnan(v["v0"]), speed, v["v0"])
  speed = np.minimum(speed, follow_speed(s, speed))
  s_VxT = np.zeros((num_v, num_t))
  s_VxT[:, 0] = s
  for t in range(num_t - 1):
    now = rel_SxT[scene_V, t]
    dt = dt_SxT[scene_V, t]
    k = np.minimum(s.astype(np.int64), num_k - 1)
    target = np.minimum(np.where(now >= t_change, v_cruise1, v_cruise0), scale * lib.vmax_RxK[route_V, k])
    red = np.where(now[:, None] < switch, red_first, ~red_first)
    gap = stop_s - 1.0 - s[:, None]                     # stop 1 m before the line
    ignored |= red & (gap > 0) & (speed[:, None] ** 2 > 2 * MAX_STOP_DECEL * np.maximum(gap, 0.05))
    obey = red & ~ignored & (gap > -0.5)
    v_stop = np.where(obey, np.sqrt(2 * STOP_DECEL * np.maximum(gap, 0.0)), np.inf).min(1)
    target = np.minimum(np.minimum(target, v_stop), follow_speed(s, speed))
    accel = np.clip(2.0 * (target - speed), -6.0, accel_max)
    new_speed = np.maximum(speed + accel * dt, 0.0)
    s_new = s + 0.5 * (speed + new_speed) * dt
    limit = np.where(obey, stop_s - 0.5, np.inf).min(1)  # never roll over an obeyed stop line
    held = s_new > limit
    s = np.where(held, np.maximum(limit, s), s_new)
    speed = np.where(held, 0.0, new_speed)
    s_VxT[:, t + 1] = s

  # Positions on the route, plus a smooth lateral wander (~0.1 m) and tracker jitter.
  s_VxT = np.clip(s_VxT, 0.0, (num_k - 1) * ROUTE_DS - 1e-6)
  k = (s_VxT / ROUTE_DS).astype(np.int64)
  frac = (s_VxT / ROUTE_DS - k)[..., None]
  r = route_V[:, None]
  xy = lib.xy_RxKx2[r, k] * (1 - frac) + lib.xy_RxKx2[r, k + 1] * frac
  lateral = rng.normal(0.0, 0.08, num_v)[:, None] + _ar1(rng, (num_v, num_t), 0.9, 0.03)
  xy = xy + lateral[..., None] * lib.normal_RxKx2[r, k].astype(np.float64)
  xy = np.where(parked_V[:, None, None], np.stack([v["parked_x"], v["parked_y"]], -1)[:, None, :], xy)
  xy = xy + rng.normal(0.0, 0.02, xy.shape)

  observed = np.ones((num_v, num_t), bool)
  others = np.flatnonzero(kind_V == 2)
  n = len(others)
  first = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 36, n))
  last = np.where(rng.random(n) < 0.6, num_t - 1, first + 5 + (rng.random(n) * (num_t - 6 - first)).astype(int))
  gap_at = first + (rng.random(n) * (last - first)).astype(int)
  gap_len = np.where(rng.random(n) < 0.25, rng.integers(1, 5, n), 0)
  steps = np.arange(num_t)
  observed[others] = ((steps >= first[:, None]) & (steps <= last[:, None]) &
                      ~((steps > gap_at[:, None]) & (steps <= (gap_at + gap_len)[:, None])))

  # Track numbers unique within a scene; rows AV first, then the others in a random order.
  number = np.zeros(num_v, np.int64)
  order = np.zeros(num_v, np.int32)
  starts = np.searchsorted(scene_V, np.arange(num_scenes + 1))
  for sc in range(num_scenes):
    a, b = starts[sc], starts[sc + 1]
    base = int(rng.integers(1000, 90000))
    number[a:b] = base + np.sort(rng.choice(400, b - a, replace=False))
    perm = rng.permutation(b - a)
    number[a + np.flatnonzero(kind_V[a:b] == 1)] = 0
    order[a:b] = np.argsort(np.argsort(np.where(kind_V[a:b] == 1, -1, perm), kind="stable"), kind="stable")
  return SplitTracks(timestamps, scene_V, kind_V, number, order, xy, observed)


def _scene_pairs(scene_V: np.ndarray, mask_V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All ordered pairs (i, j), i != j, of masked vehicles in the same scene, sorted by i."""
  idx = np.flatnonzero(mask_V)
  starts = np.searchsorted(scene_V[idx], np.arange(scene_V.max() + 2 if len(idx) else 1))
  pi, pj = [], []
  for a, b in zip(starts[:-1], starts[1:]):
    grid_i, grid_j = np.meshgrid(idx[a:b], idx[a:b], indexing="ij")
    keep = grid_i != grid_j
    pi.append(grid_i[keep])
    pj.append(grid_j[keep])
  cat = lambda x: np.concatenate(x) if x else np.zeros((0,), np.int64)
  return cat(pi), cat(pj)


def _ar1(rng, shape, rho, sigma):
  noise = rng.normal(0.0, sigma, shape)
  out = np.zeros(shape)
  for t in range(1, shape[-1]):
    out[..., t] = rho * out[..., t - 1] + noise[..., t]
  return out


def write_split_csvs(data_dir: str, tracks: SplitTracks, seq_ids: np.ndarray, city: str, num_steps: int) -> None:
  """One `<seq_id>.csv` per scene, rows grouped by timestamp (first `num_steps` steps)."""
  os.makedirs(data_dir, exist_ok=True)
  kinds = ("AGENT", "AV", "OTHERS")
  starts = np.searchsorted(tracks.scene_V, np.arange(len(seq_ids) + 1))
  for sc, seq_id in enumerate(seq_ids):
    a, b = starts[sc], starts[sc + 1]
    idx = a + np.argsort(tracks.order_V[a:b])
    ids = [f"00000000-0000-0000-0000-{n:012d}" for n in tracks.number_V[idx]]
    types = [kinds[k] for k in tracks.kind_V[idx]]
    xy = tracks.xy_VxTx2[idx, :num_steps].tolist()
    obs = tracks.observed_VxT[idx, :num_steps]
    ts = tracks.timestamps_SxT[sc, :num_steps].tolist()
    lines = [CSV_HEADER]
    for t in range(num_steps):
      stamp = repr(ts[t])
      lines.extend(f"{stamp},{ids[i]},{types[i]},{xy[i][t][0]!r},{xy[i][t][1]!r},{city}"
                   for i in np.flatnonzero(obs[:, t]).tolist())
    with open(os.path.join(data_dir, f"{seq_id}.csv"), "w") as f:
      f.write("\n".join(lines) + "\n")


def cv_fde(tracks: SplitTracks, obs_steps: int = OBS_STEPS, window: int = 4) -> np.ndarray:
  """Per-scene final displacement error of the constant-velocity baseline for the AGENT."""
  agent = tracks.xy_VxTx2[tracks.kind_V == 0]
  vel = (agent[:, obs_steps - 1] - agent[:, obs_steps - 1 - window]) / window
  pred = agent[:, obs_steps - 1] + (agent.shape[1] - obs_steps) * vel
  return np.linalg.norm(pred - agent[:, -1], axis=-1)


def write_synthetic_city(out_dir, *, num_train: int, num_val: int, num_test: int = 0, seed: int = 0,
                         city: str = "SYN", city_id: int = 10000) -> dict:
  """Writes map_files/, train/data, val/data (50 steps) and test_obs/data (20 steps); returns a summary."""
  start = time.perf_counter()
  out_dir = str(out_dir)
  lanes = build_city_lanes()
  num_nodes = write_map_files(os.path.join(out_dir, "map_files"), lanes, city, city_id)
  lib = build_route_library(lanes)
  summary = {"out_dir": out_dir, "city": city, "lanes": len(lanes), "map_nodes": num_nodes,
             "routes": len(lib.prob_R)}
  next_id = 1
  for k, (split, folder, n, steps) in enumerate((("train", "train", num_train, TOTAL_STEPS),
                                                 ("val", "val", num_val, TOTAL_STEPS),
                                                 ("test", "test_obs", num_test, OBS_STEPS))):
    if n <= 0:
      continue
    rng = np.random.default_rng([seed, k])              # one stream per split: sizes do not interact
    tracks = simulate_split(rng, lanes, lib, n)
    seq_ids = np.arange(next_id, next_id + n)
    next_id += n
    write_split_csvs(os.path.join(out_dir, folder, "data"), tracks, seq_ids, city, steps)
    summary[split] = {"scenes": n, "tracks_per_scene": round(len(tracks.scene_V) / n, 1)}
    if steps == TOTAL_STEPS:
      summary[split]["cv_fde_m"] = round(float(cv_fde(tracks).mean()), 2)
  summary["seconds"] = round(time.perf_counter() - start, 2)
  return summary
