"""Evaluates a stage on the val split: metrics table (model beside constant velocity), eval_<stage>.json.

  python bin/eval.py --stage=float --config=configs/argo.py [--workdir=runs/argo] [--write-h5=out.h5]
  python bin/eval.py --stage=int --config=configs/argo.py     # or calibration, qat (fake-quant)
  python bin/eval.py --stage=int --config=configs/argo.py --split=test --write-h5=test.h5   # the leaderboard file
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.eval.evaluate import evaluate, format_table

flags.DEFINE_enum("stage", "float", ["float", "calibration", "qat", "int"], "Which stage's checkpoint.")
flags.DEFINE_enum("which", "best", ["best", "latest"], "The stage's best (lowest val minFDE_k6) or last checkpoint.")
flags.DEFINE_string("workdir", None, "Training workdir (default: config.workdir).")
flags.DEFINE_string("split", None, "Packed split to evaluate (default: config.data.val_split).")
flags.DEFINE_string("write_h5", None, "Also write an Argoverse 1 leaderboard HDF5 file here (refused unless every "
                    "sequence of the split's source directory, config.data.src_dir, is predicted).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  workdir = FLAGS.workdir or cfg.workdir
  result = evaluate(cfg, workdir, stage=FLAGS.stage, split=FLAGS.split, write_h5=FLAGS.write_h5, which=FLAGS.which)
  print(format_table([result]))
  print(f"{result['scenes_per_second']:.1f} scenes/s; wrote {result['json_path']}"
        + (f" and {FLAGS.write_h5} (every sequence of {result['leaderboard_h5']['checked_against']})"
           if FLAGS.write_h5 else ""))


if __name__ == "__main__":
  cli.run(main)
