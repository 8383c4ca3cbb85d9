"""End-to-end float training throughput (`train_and_evaluate`, loader included) and time spent waiting on data.

  python benchmarks/bench_train.py                                   # real sample, packed into a temp dir
  python benchmarks/bench_train.py --config=configs/argo.py:demo     # data/synthetic_lmdb (`make demo`)

Prints steady-state scenes/s and steps/s (log windows after the first, which holds the compile), the fraction
of the loop's wall time spent getting the next batch (loader + host-to-device), and the loader alone in
scenes/s: a wait fraction near 0 and a loader rate far above the train rate mean the loader never stalls a step.
"""
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.train import loop
from densetnt_jax.train.checkpoint import quiet_orbax_logging

config_flags.DEFINE_config_file("config", "configs/argo.py:sample", "Config (`path.py:variant`).", lock_config=True)
flags.DEFINE_integer("epochs", 2, "Epochs to train (overrides config.train.epochs).")
FLAGS = flags.FLAGS


def loader_rate(dataset, batch_size: int, prefetch: int) -> float:
  """Scenes/s of the shuffled, prefetching batch iterator alone (one epoch, after a warm-up epoch)."""
  for _ in dataset.batches(batch_size, shuffle=True, drop_remainder=True, prefetch=prefetch):
    pass
  n, start = 0, time.perf_counter()
  for batch in dataset.batches(batch_size, shuffle=True, epoch=1, drop_remainder=True, prefetch=prefetch):
    n += batch.seq_id.shape[0]
  return n / (time.perf_counter() - start)


def main(argv):
  del argv
  quiet_orbax_logging()
  config = FLAGS.config.unlock()
  config.train.epochs = FLAGS.epochs
  config.train.eval_max_batches = 1          # evaluation is timed apart from the train windows anyway
  with tempfile.TemporaryDirectory() as tmp:
    if not os.path.exists(split_lmdb_path(config.data.lmdb_dir, config.data.train_split)):
      print(f"packing {config.data.src_dir} into a temp dir ({config.data.lmdb_dir} is not packed)")
      for split in (config.data.train_split, config.data.val_split):
        pack_split(config.data.src_dir, split, os.path.join(tmp, "lmdb"), config.data, num_workers=2,
                   progress=False)
      config.data.lmdb_dir = os.path.join(tmp, "lmdb")
    t = config.train
    start = time.perf_counter()
    loop.train_and_evaluate(config, os.path.join(tmp, "run"))
    wall = time.perf_counter() - start
    with open(os.path.join(tmp, "run", "float", "metrics.jsonl")) as f:
      windows = [r for r in map(json.loads, f) if "scenes_per_s" in r]
    train_ds = loop.open_split(config.data, config.data.train_split)   # after the run: one env per process
    rate = loader_rate(train_ds, t.batch_size, config.data.prefetch)

  steady = windows[1:] or windows
  steps = t.epochs * (len(train_ds) // t.batch_size)
  print(f"train {steps} steps of batch {t.batch_size} ({len(train_ds)} scenes, {t.epochs} epochs, "
        f"hidden {config.model.hidden_size}, {config.data.max_goals_num} goal slots): {wall:.1f} s end to end "
        f"(compile, evaluation and checkpoints included)")
  print(f"steady state (median of {len(steady)} log windows): "
        f"{np.median([r['scenes_per_s'] for r in steady]):.1f} scenes/s, "
        f"{np.median([r['steps_per_s'] for r in steady]):.2f} steps/s")
  print(f"waiting on data: {100 * np.median([r['data_wait_fraction'] for r in steady]):.1f}% of the loop's wall "
        f"time (max window {100 * max(r['data_wait_fraction'] for r in steady):.1f}%)")
  print(f"loader alone (batch {t.batch_size}, shuffled, prefetch {config.data.prefetch}): {rate:.0f} scenes/s")


if __name__ == "__main__":
  app.run(main)
