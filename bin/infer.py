"""Inference visualization: one PNG per scene (lanes, tracks, GT, 6 predictions with probabilities, goal
heatmap).

  python bin/infer.py --config=configs/argo.py:demo --save-path runs/demo/infer --num 8 [--stage=int]
"""
from absl import app, flags
from ml_collections import config_flags

import densetnt_jax
from densetnt_jax.eval.infer import render_predictions

flags.DEFINE_string("save_path", None, "Output directory for the PNGs.", required=True)
flags.DEFINE_integer("num", 10, "Number of scenes.")
flags.DEFINE_enum("stage", "float", ["float", "calibration", "qat", "int"], "Which stage's checkpoint.")
flags.DEFINE_string("workdir", None, "Training workdir (default: config.workdir).")
flags.DEFINE_string("split", None, "Packed split (default: config.data.val_split).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  try:
    predictor = densetnt_jax.load(FLAGS.workdir or cfg.workdir, FLAGS.stage, config=cfg)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from None
  paths = render_predictions(predictor, predictor.dataset(FLAGS.split), FLAGS.save_path, num=FLAGS.num)
  print(f"wrote {len(paths)} PNGs to {FLAGS.save_path}")


if __name__ == "__main__":
  flags.DEFINE_alias("save-path", "save_path")
  app.run(main)
