"""Checks the int stage's program against the deployment target (`config.target`): supported ops, int8/int16
per op, scales, static shapes, int32 accumulator bounds from the weights, requant multipliers and shifts, LUT
and tensor sizes. Prints a table per layer; exits 1 naming the layer and the rule of every violation.

  python bin/model_checker.py --config=configs/argo.py [--workdir=runs/argo]
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.deploy.checker import run

flags.DEFINE_string("workdir", None, "Workdir holding int/program (default: config.workdir).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config (its target section).",
                                lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  cli.exit_with(run, cfg, FLAGS.workdir or cfg.workdir)


if __name__ == "__main__":
  cli.run(main)
