"""QAT fake-quant model vs the integer program on the same val batches (HAT's align_bpu validation: batch 30, no
shuffle): per layer % identical codes and max |diff| in LSB, end metrics of both. Exits 1 when a layer is
under `config.quant.align_min_identical` / over `align_max_lsb`, or an end metric differs by more than
`align_max_metric_diff`; writes WORKDIR/align_bpu_validation.json.

  python bin/align_bpu_validation.py --config=configs/argo.py [--workdir=runs/argo] [--num-batches=10]
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.deploy.align import BOARD_BATCH, run

flags.DEFINE_string("workdir", None, "Workdir holding qat/best and int/program (default: config.workdir).")
flags.DEFINE_integer("num_batches", -1, "Val batches to compare (-1: the whole split).")
flags.DEFINE_integer("batch_size", BOARD_BATCH, "Batch size (the board pipeline's: 30).")
flags.DEFINE_integer("max_rows", None, "Print only the N least aligned layers.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  cli.exit_with(run, cfg, FLAGS.workdir or cfg.workdir, num_batches=FLAGS.num_batches, batch_size=FLAGS.batch_size,
                max_rows=FLAGS.max_rows)


if __name__ == "__main__":
  cli.run(main)
