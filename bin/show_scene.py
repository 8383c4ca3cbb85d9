"""Renders a scene to PNG: a raw forecasting CSV (vectorized on the fly) or a packed LMDB record.

  python bin/show_scene.py --csv ../shared/data/argoverse1/forecasting_sample/data/2645.csv \
      --map_dir ../shared/data/argoverse1/map_files --out scene.png
  python bin/show_scene.py --lmdb data/synthetic_lmdb/val_lmdb --index 0 --out scene.png
"""
import os

from absl import app, flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.scene import decode_city
from densetnt_jax.data.vectorize import vectorize_csv
from densetnt_jax.eval.visualize import save_scene_png

flags.DEFINE_string("csv", None, "A raw forecasting CSV.")
flags.DEFINE_string("map_dir", None, "map_files/ for --csv (default: ../../map_files next to the CSV's split).")
flags.DEFINE_string("lmdb", None, "A packed split, e.g. data/synthetic_lmdb/val_lmdb.")
flags.DEFINE_integer("index", 0, "Scene index in --lmdb.")
flags.DEFINE_integer("seq_id", None, "Sequence id in --lmdb (instead of --index).")
flags.DEFINE_string("out", "scene.png", "Output PNG.")
flags.DEFINE_enum("view", "full", ["full", "fit"], "full: the whole vectorized scene; fit: the agent's history "
                  "and GT future with a margin.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Config whose `data` section sets vectorization.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  data = FLAGS.config.data
  if bool(FLAGS.csv) == bool(FLAGS.lmdb):
    raise app.UsageError("give exactly one of --csv or --lmdb")
  if FLAGS.csv:
    map_dir = FLAGS.map_dir or os.path.join(os.path.dirname(os.path.abspath(FLAGS.csv)), "..", "..", "map_files")
    scene = vectorize_csv(FLAGS.csv, map_dir, data)
  else:
    ds = ArgoverseDataset(FLAGS.lmdb, data)
    scene = ds.by_seq_id(FLAGS.seq_id) if FLAGS.seq_id is not None else ds[FLAGS.index]
  title = f"seq {int(scene.seq_id)} ({decode_city(scene.city_code)})"
  save_scene_png(FLAGS.out, scene, title=title, view=FLAGS.view)
  print(f"wrote {FLAGS.out}: {title}, {int(scene.traj_mask_T.sum())} tracks, {int(scene.lane_mask_L.sum())} "
        f"lanes, {int(scene.goal_mask_G.sum())} goal candidates")


if __name__ == "__main__":
  cli.run(main)
