"""Packs Argoverse 1.1 forecasting CSVs + map_files into LMDB (HAT's argoverse_packer.py command line).

  python bin/argoverse_packer.py --src-data-dir ARGO_DIR --mode train --pack-type lmdb \
      --num-workers 10 --target-data-dir data/argoverse1_lmdb [--config=configs/argo.py]

A bad file (not a regular file, unreadable, not UTF-8, malformed, an odd or shared sequence id, coordinates
beyond data.max_abs_coordinate) is listed with its reason and the rest packs; scenes with no lane near the
agent pack with a warning. Both go to TARGET/{mode}_pack_errors.log; a re-run resumes and reports the same.
"""

from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.data.pack import pack_split

flags.DEFINE_string("src_data_dir", None, "Argoverse 1.1 root: {train,val,test_obs}/data/*.csv, map_files/.",
                    required=True)
flags.DEFINE_string("mode", "train", "Split to pack: train, val, test (test_obs/) or another split directory "
                    "with 50-step sequences (e.g. val_large of the real layout).")
flags.DEFINE_enum("pack_type", "lmdb", ["lmdb"], "Output format (LMDB only).")
flags.DEFINE_integer("num_workers", 4, "Worker processes (spawned; at most one per 1,000 files to pack, since "
                     "each parses the maps first).")
flags.DEFINE_string("target_data_dir", None, "Output root; writes {mode}_lmdb there.", required=True)
flags.DEFINE_integer("shard_index", 0, "This machine's shard (with --num_shards).")
flags.DEFINE_integer("num_shards", 1, "Split the files over this many independent packer runs.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Config whose `data` section sets vectorization.")


def main(argv):
  del argv
  cfg = flags.FLAGS.config
  summary = pack_split(flags.FLAGS.src_data_dir, flags.FLAGS.mode, flags.FLAGS.target_data_dir, cfg.data,
                       num_workers=flags.FLAGS.num_workers, shard_index=flags.FLAGS.shard_index,
                       num_shards=flags.FLAGS.num_shards)
  print(summary.format())
  return 0


if __name__ == "__main__":
  cli.run(main)
