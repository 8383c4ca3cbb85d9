"""The project's main job on the embedded default data (what `make demo` runs): `densetnt_jax.pipelines.run_demo`.

Writes the synthetic city (official Argoverse 1.1 formats), packs train/val to LMDB, renders a few scenes,
trains the float model (`configs/argo.py:demo`), evaluates it beside the constant-velocity baseline and
renders its predictions; then the quantization stages (calibration, QAT, conversion to the integer program),
each evaluated on val; then deployment: the model checker's verdict against config.target, the compiled
artifact with its performance table, the float / QDQ / int ONNX exports each checked in onnxruntime; the
align_bpu check (QAT vs int, and the artifact and int ONNX vs the interpreter) on a few board batches, and the
table of all four stages; last, the pictures (WORKDIR/pictures: training curves, stage bars, the worst val
scenes, float vs int, a contact sheet). Every step resumes: a second run reuses what the first one wrote.
The numbers it gives: configs/argo.py's `demo` docstring.

  python bin/demo.py [--config=configs/argo.py:demo] [--config.train.epochs=...] [--quant=False]
"""
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.pipelines import run_demo

flags.DEFINE_integer("num_train", 2000, "Synthetic train scenes.")
flags.DEFINE_integer("num_val", 400, "Synthetic val scenes.")
flags.DEFINE_bool("train", True, "Also train and evaluate (False: data steps only).")
flags.DEFINE_bool("quant", True, "Also run calibration, QAT and int after float.")
flags.DEFINE_bool("deploy", True, "Also check, compile and export (ONNX) the integer program after int.")
flags.DEFINE_integer("export_batches", 2, "Val batches each ONNX export is compared on.")
flags.DEFINE_integer("align_batches", 4, "Val batches (of 30) the align_bpu check compares.")
config_flags.DEFINE_config_file("config", "configs/argo.py:demo", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  run_demo(FLAGS.config, num_train=FLAGS.num_train, num_val=FLAGS.num_val, train=FLAGS.train, quant=FLAGS.quant,
           deploy=FLAGS.deploy, export_batches=FLAGS.export_batches, align_batches=FLAGS.align_batches)


if __name__ == "__main__":
  cli.run(main)
