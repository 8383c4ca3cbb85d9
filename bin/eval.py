"""Evaluates a stage on the val split: metrics table (model beside constant velocity), eval_<stage>.json.

  python bin/eval.py --stage=float --config=configs/argo.py [--workdir=runs/argo] [--write-h5=out.h5]
  python bin/eval.py --stage=int --config=configs/argo.py     # or calibration, qat (fake-quant)
"""
import json

from absl import app, flags
from ml_collections import config_flags

from densetnt_jax.eval.evaluate import evaluate, format_table

flags.DEFINE_enum("stage", "float", ["float", "calibration", "qat", "int"], "Which stage's checkpoint.")
flags.DEFINE_string("workdir", None, "Training workdir (default: config.workdir).")
flags.DEFINE_string("split", None, "Packed split to evaluate (default: config.data.val_split).")
flags.DEFINE_string("write_h5", None, "Also write an Argoverse 1 leaderboard HDF5 file here.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  workdir = FLAGS.workdir or cfg.workdir
  try:
    result = evaluate(cfg, workdir, stage=FLAGS.stage, split=FLAGS.split, write_h5=FLAGS.write_h5)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from None
  print(format_table([result]))
  print(f"{result['scenes_per_second']:.1f} scenes/s; wrote {workdir}/eval_{FLAGS.stage}.json"
        + (f" and {FLAGS.write_h5}" if FLAGS.write_h5 else ""))


if __name__ == "__main__":
  flags.DEFINE_alias("write-h5", "write_h5")
  app.run(main)
