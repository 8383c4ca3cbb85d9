"""Data-path throughput: packing (scenes/s per worker, real sample and synthetic city) and loading (scenes/s).

  python benchmarks/bench_data.py            # prints the figures; bars: pack >= 50/s/worker, load >= 2,000/s

Packing is timed with 1 worker (per-worker figure) after the city maps are parsed (once per process, as in
the packer); loading times shuffled, drop-remainder batches of 64 through the prefetching iterator.
"""
import importlib.util
import os
import pathlib
import tempfile
import time

from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.synthetic import write_synthetic_city

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGO = pathlib.Path(os.environ.get("ARGOVERSE1_SHARED", ROOT.parent / "shared" / "data" / "argoverse1"))


def _config():
  spec = importlib.util.spec_from_file_location("argo_config", ROOT / "configs" / "argo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def bench_pack(src, mode, data_config, tmp):
  best = None
  for trial in range(2):
    s = pack_split(src, mode, os.path.join(tmp, f"{os.path.basename(str(src))}{trial}"), data_config,
                   num_workers=1, progress=False)
    best = s if best is None or s.scenes_per_second > best.scenes_per_second else best
  return best


def main():
  cfg = _config()
  with tempfile.TemporaryDirectory() as tmp:
    real = bench_pack(ARGO, "train", cfg.data, tmp)
    print(f"pack real Argoverse sample (train, {real.packed} scenes): {real.scenes_per_second:.0f} scenes/s per worker")
    syn_dir = os.path.join(tmp, "synthetic_city")
    write_synthetic_city(syn_dir, num_train=500, num_val=0, seed=0)
    syn = bench_pack(syn_dir, "train", cfg.data, tmp)
    print(f"pack synthetic city (train, {syn.packed} scenes): {syn.scenes_per_second:.0f} scenes/s per worker")
    ds = ArgoverseDataset(split_lmdb_path(os.path.join(tmp, "synthetic_city0"), "train"), cfg.data)
    for b in ds.batches(64, shuffle=True, drop_remainder=True):   # warm the page cache
      pass
    n, start = 0, time.perf_counter()
    for epoch in range(10):
      for b in ds.batches(64, shuffle=True, seed=0, epoch=epoch, drop_remainder=True):
        n += b.seq_id.shape[0]
    rate = n / (time.perf_counter() - start)
    print(f"load (batch 64, shuffled, prefetch): {rate:.0f} scenes/s")


if __name__ == "__main__":
  main()
