"""Exports a stage as ONNX (onnx.helper from the recorded op list / integer program; no TensorFlow, no
jax2onnx), runs it in onnxruntime on `config.export.num_batches` val batches beside its JAX reference and
prints the agreement; exits 1 when the stage's bar (config.export) fails. Writes the .onnx and a .json report.

  python bin/export_onnx.py --config=configs/argo.py --stage=float   # float model, within float_atol of JAX
  python bin/export_onnx.py --config=configs/argo.py --stage=qat     # QDQ, within qdq_max_lsb of fake-quant
  python bin/export_onnx.py --config=configs/argo.py --stage=int     # integer ops, bit-identical to run_program
      [--workdir=runs/argo] [--output=PATH] [--num-batches=N]

The graphs end at the five program outputs (goal log-probs, top-k goals / log-probs / validity / trajectories);
NMS and mode selection run on the host (`densetnt_jax.deploy.onnx_check.finish`).
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.deploy.onnx_check import STAGES, run

flags.DEFINE_enum("stage", "int", list(STAGES), "float: float model; qat: QDQ of the QAT model; int: program.")
flags.DEFINE_string("workdir", None, "Workdir holding the stage (default: config.workdir).")
flags.DEFINE_string("output", None, "ONNX path (default: WORKDIR/export/densetnt_<stage>.onnx).")
flags.DEFINE_integer("num_batches", None, "Val batches to compare (default: config.export.num_batches).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  cli.exit_with(run, cfg, FLAGS.workdir or cfg.workdir, FLAGS.stage, output=FLAGS.output, num_batches=FLAGS.num_batches)


if __name__ == "__main__":
  cli.run(main)
