"""Compiles the int stage's program into one deployable file (WORKDIR/deploy/model.dtnt: versioned header, op
list, weights, LUTs, scales, SHA-256), checks it reloads (and runs in a fresh process) bit for bit like the
interpreter, and prints per-layer and total MACs, parameter bytes, peak activation memory, the estimated
latency on `config.target` (J6E-class by default) beside HAT's J6E figure, and the interpreter's measured
latency here. Writes WORKDIR/deploy/perf.json. Refuses a program that fails bin/model_checker.py.

  python bin/compile_perf.py --config=configs/argo.py [--workdir=runs/argo] [--nomeasure] [--nofresh_check]

Run the artifact anywhere the package's runtime is installed (no flax / training code needed):
  python -m densetnt_jax.deploy.runner WORKDIR/deploy/model.dtnt --inputs DIR --outputs DIR
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.deploy.compiler import run

flags.DEFINE_string("workdir", None, "Workdir holding int/program (default: config.workdir).")
flags.DEFINE_string("out_dir", None, "Where the artifact and perf.json go (default: WORKDIR/deploy).")
flags.DEFINE_integer("reps", 5, "Timed interpreter runs per batch (the best is reported).")
flags.DEFINE_bool("measure", True, "Time the interpreter here at config.target.perf_batches.")
flags.DEFINE_bool("fresh_check", True, "Run the artifact in a fresh process and compare bit for bit.")
flags.DEFINE_bool("per_layer", True, "Print the per-layer table (else totals only).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config (its target section).",
                                lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  cli.exit_with(run, cfg, FLAGS.workdir or cfg.workdir, out_dir=FLAGS.out_dir, reps=FLAGS.reps, measure=FLAGS.measure,
                fresh_check=FLAGS.fresh_check, per_layer=FLAGS.per_layer)


if __name__ == "__main__":
  cli.run(main)
