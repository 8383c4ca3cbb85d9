"""Builds the real-traffic data set in the official layout (see densetnt_jax/data/real_layout.py): extracts the
2,924-scene archive once into data/, then symlinks train / val / val_large and the maps. Nothing is copied.

  python bin/make_real_layout.py [--sample-dir ../shared/data/argoverse1] \
      [--archive ../shared/data/argoverse1_more/train_2924.tar.xz] [--out-dir data/argoverse1_real] [--heldout 400]
"""
import os

from absl import flags

from densetnt_jax import cli
from densetnt_jax.data.real_layout import make_real_layout

flags.DEFINE_string("sample_dir", os.environ.get("ARGOVERSE1_SHARED", "../shared/data/argoverse1"),
                    "The Argoverse 1.1 sample: train/, val/, map_files/.")
flags.DEFINE_string("archive", "../shared/data/argoverse1_more/train_2924.tar.xz", "The 2,924-scene archive.")
flags.DEFINE_string("out_dir", "data/argoverse1_real", "Layout root (ignored data/; never the repository).")
flags.DEFINE_integer("heldout", 400, "Archive scenes held out of train for val_large.")
flags.DEFINE_integer("seed", 0, "Seed of the held-out choice.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  counts = make_real_layout(FLAGS.sample_dir, FLAGS.archive, FLAGS.out_dir, heldout=FLAGS.heldout,
                            seed=FLAGS.seed)
  print(f"{FLAGS.out_dir}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))


if __name__ == "__main__":
  cli.run(main)
