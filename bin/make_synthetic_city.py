"""Writes the synthetic city in the official Argoverse 1.1 layout (map_files/, train/, val/, test_obs/).

  python bin/make_synthetic_city.py --out-dir data/synthetic_city --num-train 2000 --num-val 400
"""
import json

from absl import flags

from densetnt_jax import cli
from densetnt_jax.data.synthetic import write_synthetic_city

flags.DEFINE_string("out_dir", "data/synthetic_city", "Output root (official Argoverse 1.1 layout).")
flags.DEFINE_integer("num_train", 2000, "Train scenes (50 steps each).")
flags.DEFINE_integer("num_val", 400, "Val scenes (50 steps each).")
flags.DEFINE_integer("num_test", 0, "Test scenes (test_obs, 20 observed steps each).")
flags.DEFINE_integer("seed", 0, "Scene seed; the same seed writes byte-identical files.")


def main(argv):
  del argv
  f = flags.FLAGS
  summary = write_synthetic_city(f.out_dir, num_train=f.num_train, num_val=f.num_val, num_test=f.num_test,
                                 seed=f.seed)
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  cli.run(main)
