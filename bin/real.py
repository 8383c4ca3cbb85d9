"""Real traffic end to end (`make real`): the Argoverse 1.1 sample + the 2,924-scene archive in the official
layout (extracted once into data/), packed; float, calibration, QAT and int; every stage on real val and
val_large beside constant velocity; checker, compiled artifact, int ONNX and align_bpu on real data.

  python bin/real.py [--config=configs/argo.py:real] [--config.train.epochs=...] [--deploy=False]
"""
import os

from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.pipelines import run_real

flags.DEFINE_string("sample_dir", os.environ.get("ARGOVERSE1_SHARED", "../shared/data/argoverse1"),
                    "The Argoverse 1.1 sample: train/, val/, map_files/.")
flags.DEFINE_string("archive", "../shared/data/argoverse1_more/train_2924.tar.xz", "The 2,924-scene archive.")
flags.DEFINE_integer("heldout", 400, "Archive scenes held out of train for val_large.")
flags.DEFINE_bool("deploy", True, "Also run the checker, compile, int ONNX and align_bpu on real data.")
config_flags.DEFINE_config_file("config", "configs/argo.py:real", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  result = run_real(FLAGS.config, sample_dir=FLAGS.sample_dir, archive=FLAGS.archive, heldout=FLAGS.heldout,
                    deploy=FLAGS.deploy)
  return 1 if any(result["status"].values()) else 0


if __name__ == "__main__":
  cli.run(main)
