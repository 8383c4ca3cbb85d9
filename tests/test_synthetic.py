"""The synthetic city: official Argoverse 1.1 file formats, determinism, and agents worth forecasting."""
import collections
import csv
import filecmp
import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from densetnt_jax.data.synthetic import write_synthetic_city

NUM_TRAIN, NUM_VAL, NUM_TEST = 20, 120, 10
CITY, CITY_ID = "SYN", 10000
TAG_KEYS = ["has_traffic_control", "turn_direction", "is_intersection", "l_neighbor_id", "r_neighbor_id"]
TRACK_ID_RE = re.compile(r"^00000000-0000-0000-0000-\d{12}$")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic_city")
  summary = write_synthetic_city(out, num_train=NUM_TRAIN, num_val=NUM_VAL, num_test=NUM_TEST, seed=0)
  return out, summary


def _map_paths(out):
  d = out / "map_files"
  return (d / f"pruned_argoverse_{CITY}_{CITY_ID}_vector_map.xml", d / f"{CITY}_{CITY_ID}_tableidx_to_laneid_map.json",
          d / f"{CITY}_{CITY_ID}_halluc_bbox_table.npy")


def _parse_xml(path):
  """{lane_id: (tags dict, centerline Px2, predecessors, successors, child tag sequence)}."""
  root = ET.parse(path).getroot()
  nodes = {n.get("id"): (float(n.get("x")), float(n.get("y"))) for n in root.iter("node")}
  lanes = {}
  for way in root.iter("way"):
    tags, pred, succ, refs, order = {}, [], [], [], []
    for child in way:
      if child.tag == "nd":
        refs.append(child.get("ref"))
        order.append("nd")
      elif child.get("k") in ("predecessor", "successor"):
        (pred if child.get("k") == "predecessor" else succ).append(int(child.get("v")))
        order.append(child.get("k"))
      else:
        tags[child.get("k")] = child.get("v")
        order.append(child.get("k"))
    lanes[int(way.get("lane_id"))] = (tags, np.array([nodes[r] for r in refs]), pred, succ, order)
  return root, lanes


def _read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _agent_tracks(data_dir):
  """AGENT xy (num_files, steps, 2), in file order."""
  out = []
  for name in sorted(os.listdir(data_dir), key=lambda n: int(n[:-4])):
    _, rows = _read_csv(data_dir / name)
    agent = [r for r in rows if r[2] == "AGENT"]
    agent.sort(key=lambda r: float(r[0]))
    out.append([[float(r[3]), float(r[4])] for r in agent])
  return np.array(out)


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
  kw = dict(num_train=3, num_val=2, num_test=2)
  write_synthetic_city(tmp_path / "a", seed=5, **kw)
  write_synthetic_city(tmp_path / "b", seed=5, **kw)
  write_synthetic_city(tmp_path / "c", seed=6, **kw)
  for sub in ("map_files", "train/data", "val/data", "test_obs/data"):
    names = sorted(os.listdir(tmp_path / "a" / sub))
    assert names == sorted(os.listdir(tmp_path / "b" / sub))
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a" / sub, tmp_path / "b" / sub, names, shallow=False)
    assert not mismatch and not errors, (sub, mismatch, errors)
  assert filecmp.cmp(tmp_path / "a/train/data/1.csv", tmp_path / "c/train/data/1.csv", shallow=False) is False
  assert filecmp.cmp(*(_map_paths(tmp_path / d)[0] for d in "ac"), shallow=False)  # the map is fixed


def test_map_files_formats_and_topology(city):
  out, summary = city
  xml_path, json_path, npy_path = _map_paths(out)
  text = xml_path.read_text()
  assert text.startswith("<ArgoverseVectorMap>\n <node id=\"0\" x=\"") and text.endswith("</ArgoverseVectorMap>\n")
  assert re.search(r'\n <way lane_id="\d+">\n  <tag k="has_traffic_control" v="(True|False)" />\n', text)
  root, lanes = _parse_xml(xml_path)
  kinds = [child.tag for child in root]
  assert kinds == sorted(kinds, key=lambda k: k != "node"), "all <node> before all <way>"
  assert len(lanes) == summary["lanes"] and 200 <= len(lanes) <= 1000
  assert list(lanes) == sorted(lanes)
  for lane_id, (tags, line, pred, succ, order) in lanes.items():
    assert order[:5] == TAG_KEYS and order[5:15] == ["nd"] * 10
    assert order[15:] == ["predecessor"] * len(pred) + ["successor"] * len(succ)
    assert tags["turn_direction"] in ("NONE", "LEFT", "RIGHT")
    assert tags["has_traffic_control"] in ("True", "False") and tags["is_intersection"] in ("True", "False")
    length = np.linalg.norm(np.diff(line, axis=0), axis=1).sum()
    assert 8.0 <= length <= 30.0, (lane_id, length)
    assert pred and succ, f"lane {lane_id} is a dead end"
    for s in succ:
      assert lane_id in lanes[s][2], "successor/predecessor not symmetric"
      np.testing.assert_array_equal(lanes[s][1][0], line[-1])          # chained lanes share their end node
    for p in pred:
      assert lane_id in lanes[p][3]
    for side, other in (("l_neighbor_id", "r_neighbor_id"), ("r_neighbor_id", "l_neighbor_id")):
      if tags[side] != "None":
        assert lanes[int(tags[side])][0][other] == str(lane_id)
  assert sum(t["l_neighbor_id"] != "None" for t, *_ in lanes.values()) >= 20       # multi-lane roads
  assert any(t["has_traffic_control"] == "True" for t, *_ in lanes.values())
  with open(json_path) as f:
    table = json.load(f)
  assert [table[str(i)] for i in range(len(table))] == list(lanes)
  bbox = np.load(npy_path, allow_pickle=False)
  assert bbox.dtype == np.float64 and bbox.shape == (len(lanes), 4)
  lines = [v[1] for v in lanes.values()]
  expect = np.array([np.concatenate([l.min(0) - 1.9, l.max(0) + 1.9]) for l in lines])
  np.testing.assert_allclose(bbox, expect, atol=1e-9)


def test_turn_lanes_of_every_direction(city):
  _, lanes = _parse_xml(_map_paths(city[0])[0])
  turns = collections.Counter((t["turn_direction"], t["is_intersection"]) for t, *_ in lanes.values())
  for direction in ("LEFT", "RIGHT", "NONE"):
    assert turns[direction, "True"] >= 10, turns
  assert turns["LEFT", "False"] == turns["RIGHT", "False"] == 0
  for tags, line, *_ in lanes.values():                                  # the tag matches the geometry
    d0, d1 = line[1] - line[0], line[-1] - line[-2]
    turn = np.degrees(np.arctan2(d0[0] * d1[1] - d0[1] * d1[0], d0 @ d1))
    expected = "LEFT" if turn > 45 else "RIGHT" if turn < -45 else "NONE"
    assert tags["turn_direction"] == expected


def test_csv_files(city):
  out, _ = city
  ids = {split: sorted(int(n[:-4]) for n in os.listdir(out / split / "data"))
         for split in ("train", "val", "test_obs")}
  assert [len(ids[s]) for s in ("train", "val", "test_obs")] == [NUM_TRAIN, NUM_VAL, NUM_TEST]
  assert len(set(sum(ids.values(), []))) == NUM_TRAIN + NUM_VAL + NUM_TEST     # unique across splits
  late = early = gaps = 0
  dts = []
  for split, steps in (("train", 50), ("val", 50), ("test_obs", 20)):
    for seq_id in ids[split]:
      header, rows = _read_csv(out / split / "data" / f"{seq_id}.csv")
      assert header == ["TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME"]
      stamps = [float(r[0]) for r in rows]
      assert stamps == sorted(stamps), "rows grouped by timestamp, increasing"
      distinct = sorted(set(stamps))
      assert len(distinct) == steps
      dts.extend(np.diff(distinct))
      assert {r[5] for r in rows} == {CITY}
      assert all(TRACK_ID_RE.match(r[1]) for r in rows)
      per_track = collections.defaultdict(list)
      types = collections.defaultdict(set)
      for r in rows:
        per_track[r[1]].append(distinct.index(float(r[0])))
        types[r[1]].add(r[2])
      assert all(len(t) == 1 for t in types.values())
      kinds = collections.Counter(next(iter(t)) for t in types.values())
      assert kinds["AGENT"] == 1 and kinds["AV"] == 1 and kinds["OTHERS"] <= 20
      assert kinds["OTHERS"] >= (5 if steps == 50 else 0)                 # late OTHERS miss test_obs
      for tid, t in types.items():
        if t != {"OTHERS"}:
          assert per_track[tid] == list(range(steps))
        elif steps == 50:
          s = per_track[tid]
          late += s[0] > 0
          early += s[-1] < 49
          gaps += len(s) < s[-1] - s[0] + 1
  assert late > 10 and early > 10 and gaps > 10
  dts = np.array(dts)
  assert 0.08 < dts.min() < dts.max() < 0.12 and dts.std() > 1e-3   # 10 Hz with tick jitter


def test_constant_velocity_baseline_is_far_off(city):
  """Velocity from steps 15..19 extrapolated 30 steps misses the AGENT's endpoint by metres (real: ~6 m)."""
  agent = _agent_tracks(city[0] / "val" / "data")
  assert agent.shape == (NUM_VAL, 50, 2)
  vel = (agent[:, 19] - agent[:, 15]) / 4
  fde = np.linalg.norm(agent[:, 19] + 30 * vel - agent[:, 49], axis=-1)
  assert fde.mean() >= 4.0, f"CV-baseline FDE mean {fde.mean():.2f} m on {NUM_VAL} val scenes"
  assert np.mean(fde > 2.0) >= 0.5


def test_agents_at_the_same_lane_take_different_exits(city):
  out, _ = city
  _, lanes = _parse_xml(_map_paths(out)[0])
  road = [(lid, line) for lid, (t, line, *_) in lanes.items() if t["is_intersection"] == "False"]
  points = np.concatenate([line[:-1] for _, line in road])
  direction = np.concatenate([np.diff(line, axis=0) for _, line in road])
  direction /= np.linalg.norm(direction, axis=1, keepdims=True)
  owner = np.repeat([lid for lid, _ in road], 9)
  agent = _agent_tracks(out / "val" / "data")
  h_obs, h_end = agent[:, 19] - agent[:, 15], agent[:, 49] - agent[:, 45]
  turn = np.degrees(np.arctan2(h_obs[:, 0] * h_end[:, 1] - h_obs[:, 1] * h_end[:, 0], (h_obs * h_end).sum(1)))
  label = np.where(turn > 45, "LEFT", np.where(turn < -45, "RIGHT", "STRAIGHT"))
  exits = collections.defaultdict(set)
  for xy, h, lab in zip(agent[:, 19], h_obs, label):
    aligned = direction @ (h / max(np.linalg.norm(h), 1e-9)) > 0.7 if np.linalg.norm(h) > 0.2 else True
    d = np.where(aligned, np.linalg.norm(points - xy, axis=1), np.inf)
    exits[owner[np.argmin(d)]].add(str(lab))
  counts = collections.Counter(label.tolist())
  assert min(counts[k] for k in ("LEFT", "RIGHT", "STRAIGHT")) >= 0.1 * NUM_VAL, counts
  assert sum(len(e) >= 2 for e in exits.values()) >= 3, exits


def test_round_trip_through_the_official_readers(city):
  """The synthetic files parse through the same readers as the real data."""
  from densetnt_jax.data.argoverse import read_forecasting_csv
  from densetnt_jax.data.hdmap import load_city_map
  out, _ = city
  city_map = load_city_map(out / "map_files", CITY)
  _, lanes = _parse_xml(_map_paths(out)[0])
  assert list(city_map.lanes) == list(lanes)
  for lane_id, (tags, line, pred, succ, _) in lanes.items():
    lane = city_map.lanes[lane_id]
    np.testing.assert_array_equal(lane.centerline_Px2, line)
    assert lane.turn_direction == tags["turn_direction"]
    assert lane.is_intersection == (tags["is_intersection"] == "True")
    assert list(lane.predecessors) == pred and list(lane.successors) == succ
  for split, steps in (("train", 50), ("val", 50), ("test_obs", 20)):
    for name in sorted(os.listdir(out / split / "data"))[:10]:
      seq = read_forecasting_csv(out / split / "data" / name, expected_steps=steps)
      assert seq.city == CITY and seq.num_steps == steps and seq.av_index >= 0
      assert seq.observed_NxS[seq.agent_index].all() and seq.observed_NxS[seq.av_index].all()
      near = city_map.lane_ids_within(seq.xy_NxSx2[seq.agent_index, steps - 1], 50.0)
      assert 1 <= len(near) <= 64                                        # fits max_lane_num
