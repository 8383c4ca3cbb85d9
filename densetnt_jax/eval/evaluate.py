"""Evaluation of any stage on a packed split: K=6 and K=1 metrics beside the constant-velocity baseline.

One code path for every stage: a `Predictor` (densetnt_jax.api) supplies the predictions, the same
`MetricsAccumulator` scores the model and the baseline, and `--write-h5` writes the leaderboard file.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from densetnt_jax.progress import progress_bar

from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import split_lmdb_path
from densetnt_jax.data.scene import to_city_frame_batch
from densetnt_jax.eval.baselines import constant_velocity
from densetnt_jax.eval.leaderboard import write_leaderboard_h5
from densetnt_jax.eval.metrics import MetricsAccumulator


def evaluate_dataset(predictor, dataset: ArgoverseDataset, *, batch_size: int, miss_threshold: float = 2.0,
                     max_batches: int = -1, write_h5: str | None = None, progress: bool = True) -> dict:
  """{'model': metrics, 'constant_velocity': metrics, 'num_sequences', 'scenes_per_second', 'lmdb_path' (the
  dataset's absolute path: which data the numbers are on)}."""
  d = predictor.config.data
  model_acc = MetricsAccumulator(ks=(6, 1), miss_threshold=miss_threshold)
  cv_acc = MetricsAccumulator(ks=(6, 1), miss_threshold=miss_threshold)
  trajs_by_seq, probs_by_seq = {}, {}
  n_batches = dataset.num_batches(batch_size, drop_remainder=False)
  if max_batches > 0:
    n_batches = min(n_batches, max_batches)
  start, seen = time.perf_counter(), 0
  for i, batch in enumerate(progress_bar(dataset.batches(batch_size), total=n_batches, desc=f"eval {predictor.stage}",
                                 disable=not progress, unit="batch")):
    if i >= n_batches:
      break
    pred = predictor.predict(batch)
    real = batch.seq_id >= 0
    scored = real & batch.has_future
    seen += int(real.sum())
    model_acc.add(pred["trajs_BxKxFx2"], pred["probs_BxK"], batch.future_Fx2, valid_N=scored)
    cv_trajs, cv_probs = constant_velocity(batch.trajs_TxVxC, batch.traj_vector_mask_TxV, d.pred_steps,
                                           d.heading_steps)
    cv_acc.add(cv_trajs, cv_probs, batch.future_Fx2, valid_N=scored)
    if write_h5:
      city = to_city_frame_batch(pred["trajs_BxKxFx2"], batch.origin_2, batch.rotation_2x2)
      for b in np.flatnonzero(real):
        trajs_by_seq[int(batch.seq_id[b])] = city[b]
        probs_by_seq[int(batch.seq_id[b])] = np.asarray(pred["probs_BxK"][b])
  seconds = time.perf_counter() - start
  if write_h5:
    expected = dataset.seq_ids if max_batches <= 0 else None
    write_leaderboard_h5(write_h5, trajs_by_seq, probs_by_seq, expected_seq_ids=expected)
  return {"stage": predictor.stage, "model": model_acc.result(), "constant_velocity": cv_acc.result(),
          "num_sequences": seen, "scenes_per_second": seen / seconds if seconds > 0 else 0.0,
          "lmdb_path": os.path.abspath(dataset.path)}


def evaluate(config, workdir: str, *, stage: str = "float", split: str | None = None,
             write_h5: str | None = None, progress: bool = True) -> dict:
  """Evaluates the stage's checkpoint in `workdir` on `split` (default: the config's val split); writes
  `{workdir}/eval_{stage}.json` and returns the result. The json records the split, the LMDB dir and the
  split's LMDB path, so an eval of another split or data set (which overwrites the file) says what it saw."""
  from densetnt_jax.api import load   # late import: api imports this module's callers
  split = split or config.data.val_split
  predictor = load(workdir, stage=stage, config=config)
  dataset = ArgoverseDataset(split_lmdb_path(config.data.lmdb_dir, split), config.data)
  result = evaluate_dataset(predictor, dataset, batch_size=config.train.eval_batch_size,
                            miss_threshold=config.eval.miss_threshold, max_batches=config.train.eval_max_batches,
                            write_h5=write_h5, progress=progress)
  result["split"] = split
  result["lmdb_dir"] = os.path.abspath(str(config.data.lmdb_dir))
  with open(os.path.join(workdir, f"eval_{stage}.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


def format_table(results: list[dict], keys=("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minADE_k1",
                                            "minFDE_k1", "MR_k1")) -> str:
  """A text table: one row per stage, the constant-velocity baseline (K=1 prediction) as the last row."""
  rows = [(r["stage"], r["model"]) for r in results]
  if results:
    rows.append(("const. velocity", results[0]["constant_velocity"]))
  width = max(len(n) for n, _ in rows) + 2
  head = "".ljust(width) + "".join(k.rjust(16) for k in keys)
  lines = [head, "-" * len(head)]
  for name, metrics in rows:
    lines.append(name.ljust(width) + "".join(f"{metrics.get(k, float('nan')):16.4f}" for k in keys))
  if results:
    lines.append(f"({results[0]['num_sequences']} sequences; the baseline predicts one trajectory, so its K=6 "
                 "columns equal K=1)")
  return "\n".join(lines)
