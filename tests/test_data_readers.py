"""Readers on the real Argoverse 1.1 files, and every bad-input kind with its typed error."""
import glob
import os
import shutil

import numpy as np
import pytest

from densetnt_jax.data.argoverse import read_forecasting_csv
from densetnt_jax.data.errors import CsvError, MapError
from densetnt_jax.data.hdmap import load_city_map, parse_vector_map_xml


def test_maps_parse_with_real_facts(argo_dir):
  mia = load_city_map(argo_dir / "map_files", "MIA")
  pit = load_city_map(argo_dir / "map_files", "PIT")
  assert len(mia) == 12574 and len(pit) == 4952
  assert (mia.city_id, pit.city_id) == (10316, 10314)
  lane = pit.lanes[9604854]
  np.testing.assert_array_equal(lane.centerline_Px2[0], [3168.066310258233, 1674.663991981186])
  assert 9608794 in lane.predecessors
  assert len(lane.centerline_Px2) == 10
  assert pit.halluc_bbox_Lx4.shape == (4952, 4)
  # The cache: parsed once per process.
  assert load_city_map(str(argo_dir / "map_files") + "/", "PIT") is pit


def test_lanes_within_radius_nearest_first(argo_dir):
  pit = load_city_map(argo_dir / "map_files", "PIT")
  xy = pit.lanes[9604854].centerline_Px2[3]
  ids = pit.lane_ids_within(xy, 30.0)
  assert ids[0] == 9604854
  for lane_id in ids:
    assert np.min(np.linalg.norm(pit.lanes[int(lane_id)].centerline_Px2 - xy, axis=-1)) <= 30.0
  dists = [np.min(np.linalg.norm(pit.lanes[int(i)].centerline_Px2 - xy, axis=-1)) for i in ids]
  assert dists == sorted(dists)


@pytest.mark.parametrize("split", ["forecasting_sample", "train", "val"])
def test_every_real_csv_parses(argo_dir, split):
  files = sorted(glob.glob(str(argo_dir / split / "data" / "*.csv")))
  assert len(files) == {"forecasting_sample": 5, "train": 244, "val": 99}[split]
  for path in files:
    seq = read_forecasting_csv(path, expected_steps=50)
    assert seq.num_steps == 50
    assert seq.observed_NxS[seq.agent_index].all() and seq.object_types[seq.agent_index] == "AGENT"
    assert seq.object_types[seq.av_index] == "AV" and seq.observed_NxS[seq.av_index].all()
    assert seq.city in ("MIA", "PIT")
    assert np.all(np.diff(seq.timestamps_S) > 0)
    assert np.isnan(seq.xy_NxSx2[~seq.observed_NxS]).all()


def test_sample_sequence_facts(argo_dir):
  seq = read_forecasting_csv(argo_dir / "forecasting_sample" / "data" / "2645.csv")
  assert seq.seq_id == 2645 and seq.city == "MIA"
  assert seq.observed_NxS.sum() == sum(1 for _ in open(argo_dir / "forecasting_sample/data/2645.csv")) - 1
  # OTHERS are ragged in real data: at least one track is not seen at every step.
  assert (~seq.observed_NxS).any()


HEADER = "TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME\n"


def _csv(rows, steps=50, agent_steps=None, city="PIT"):
  lines = [HEADER]
  for s in range(steps):
    t = 100.0 + 0.1 * s
    if agent_steps is None or s < agent_steps:
      lines.append(f"{t},a,AGENT,{s * 1.0},0.0,{city}\n")
    lines.append(f"{t},v,AV,{s * 1.0},5.0,{city}\n")
  lines += rows
  return "".join(lines)


BAD_CSVS = {
    "empty file": ("", "empty file"),
    "missing column": ("TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,CITY_NAME\n1,a,AGENT,1,PIT\n", "missing column"),
    "non-numeric": (_csv(["100.0,o,OTHERS,abc,1.0,PIT\n"]), "non-numeric X"),
    "nan": (_csv(["100.0,o,OTHERS,nan,1.0,PIT\n"]), "NaN/inf"),
    "inf": (_csv(["100.0,o,OTHERS,1.0,inf,PIT\n"]), "NaN/inf"),
    "no agent": (_csv([]).replace("AGENT", "OTHERS"), "exactly one AGENT"),
    "two agents": (_csv(["100.0,b,AGENT,1.0,1.0,PIT\n"]), "exactly one AGENT"),
    "agent steps": (_csv([], agent_steps=40), "AGENT has 40 steps"),
    "duplicate": (_csv(["100.0,a,AGENT,3.0,3.0,PIT\n"]), "duplicate (track, timestamp)"),
    "two cities": (_csv(["100.0,o,OTHERS,1.0,1.0,MIA\n"]), "several cities"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CSVS))
def test_bad_csv_gives_typed_error(tmp_path, kind):
  text, message = BAD_CSVS[kind]
  path = tmp_path / "123.csv"
  path.write_text(text)
  with pytest.raises(CsvError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
    read_forecasting_csv(path, expected_steps=50)
  assert e.value.path == str(path)


def test_good_synthetic_csv_parses(tmp_path):
  path = tmp_path / "7.csv"
  path.write_text(_csv(["100.0,o,OTHERS,1.0,1.0,PIT\n"]))
  seq = read_forecasting_csv(path, expected_steps=50)
  assert seq.seq_id == 7 and seq.observed_NxS.sum() == 101


def _copy_maps(argo_dir, tmp_path, city="PIT"):
  out = tmp_path / "map_files"
  out.mkdir()
  for f in glob.glob(str(argo_dir / "map_files" / f"*{city}*")):
    shutil.copy(f, out)
  return out, next(out.glob("*vector_map.xml"))


def test_truncated_map_xml(argo_dir, tmp_path):
  _, xml = _copy_maps(argo_dir, tmp_path)
  data = xml.read_bytes()
  xml.write_bytes(data[: len(data) // 2])
  with pytest.raises(MapError, match="malformed or truncated XML") as e:
    parse_vector_map_xml(xml)
  assert e.value.path == str(xml)


def test_lane_with_missing_node(tmp_path):
  xml = tmp_path / "pruned_argoverse_ZZZ_1_vector_map.xml"
  xml.write_text('<ArgoverseVectorMap>\n <node id="0" x="0.0" y="0.0" />\n <way lane_id="5">\n'
                 '  <nd ref="0" />\n  <nd ref="99" />\n </way>\n</ArgoverseVectorMap>\n')
  with pytest.raises(MapError, match=r"lane 5 references missing node\(s\) \['99'\]"):
    parse_vector_map_xml(xml)


def test_city_without_map(argo_dir, tmp_path):
  maps, _ = _copy_maps(argo_dir, tmp_path)
  with pytest.raises(MapError, match=r"no vector map for city 'MIA' \(maps found: \['PIT'\]\)"):
    load_city_map(maps, "MIA")


def test_map_table_mismatch(argo_dir, tmp_path):
  maps, _ = _copy_maps(argo_dir, tmp_path)
  table = next(maps.glob("*tableidx_to_laneid_map.json"))
  table.write_text('{"0": 1}')
  with pytest.raises(MapError, match="does not match"):
    load_city_map(maps, "PIT")
