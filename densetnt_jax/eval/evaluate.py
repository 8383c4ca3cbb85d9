"""Evaluation of any stage on a packed split: K=6 and K=1 metrics beside the constant-velocity baseline.

One code path for every stage: a `Predictor` (densetnt_jax.api) supplies the predictions, the one evaluator
(`densetnt_jax.metrics.evaluate`, as in training) scores the model and the baseline, and `--write-h5` writes
the leaderboard file, only when it holds every sequence of the split's source directory
(`config.data.src_dir`). A split without futures (test) gets the file and no metrics.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging

from densetnt_jax.api import load
from densetnt_jax.data.loader import ArgoverseDataset, open_split
from densetnt_jax.data.pack import error_logs, failed_sequence_ids, split_source
from densetnt_jax.data.scene import to_city_frame_batch
from densetnt_jax.eval.baselines import constant_velocity
from densetnt_jax.eval.leaderboard import refuse_incomplete, source_sequence_ids, write_leaderboard_h5
from densetnt_jax import metrics
from densetnt_jax.progress import progress_bar


def evaluate_dataset(predictor, dataset: ArgoverseDataset, *, batch_size: int, miss_threshold: float = 2.0,
                     max_batches: int = -1, write_h5: str | None = None, expected_seq_ids=None,
                     missing_reasons: dict | None = None, expected_from: str | None = None,
                     progress: bool = True) -> dict:
  """{'model': metrics, 'constant_velocity': metrics ({} for both when no scene has a future: a test split),
  'num_sequences', 'num_scored' (those with a future), 'scenes_per_second', 'lmdb_path' (the dataset's
  absolute path: which data the numbers are on)}.

  `write_h5`: the leaderboard file, written only when every sequence of `expected_seq_ids` (default: the
  dataset's) is predicted; what can be told before predicting (a sequence not in the dataset, `max_batches`
  stopping early) is refused first. `missing_reasons` ({reason: ids}) and `expected_from` word the refusal.
  """
  d = predictor.config.data
  trajs_by_seq, probs_by_seq = {}, {}
  n_batches = dataset.num_batches(batch_size, drop_remainder=False)
  if max_batches > 0:
    n_batches = min(n_batches, max_batches)
  if write_h5:
    expected = dataset.seq_ids if expected_seq_ids is None else expected_seq_ids
    expected_from = expected_from or f"the packed split {dataset.path}"
    reasons = dict(missing_reasons or {})
    reasons[f"cut off by max_batches={max_batches} (config.train.eval_max_batches; -1 predicts the whole "
            "split)"] = dataset.seq_ids[n_batches * batch_size:]       # unshuffled batches: the dataset order
    refuse_incomplete(write_h5, expected, dataset.seq_ids[:n_batches * batch_size], reasons, expected_from)
  seen = 0

  def predict(batch):
    nonlocal seen
    pred = predictor.predict(batch)
    real = batch.seq_id >= 0
    seen += int(real.sum())
    if write_h5:
      city = to_city_frame_batch(pred["trajs_BxKxFx2"], batch.origin_2, batch.rotation_2x2)
      for b in np.flatnonzero(real):
        trajs_by_seq[int(batch.seq_id[b])] = city[b]
        probs_by_seq[int(batch.seq_id[b])] = np.asarray(pred["probs_BxK"][b])
    return {"model": (pred["trajs_BxKxFx2"], pred["probs_BxK"]),
            "constant_velocity": constant_velocity(batch.trajs_TxVxC, batch.traj_vector_mask_TxV, d.pred_steps,
                                                   d.heading_steps)}

  start = time.perf_counter()
  bar = progress_bar(dataset.batches(batch_size), total=n_batches, desc=f"eval {predictor.stage}",
                     disable=not progress, unit="batch")
  accs = metrics.evaluate(predict, bar, ks=(6, 1), miss_threshold=miss_threshold, max_batches=n_batches)
  seconds = time.perf_counter() - start
  if write_h5:
    reasons["packed but not predicted (skipped when loading)"] = dataset.seq_ids
    write_leaderboard_h5(write_h5, trajs_by_seq, probs_by_seq, expected_seq_ids=expected,
                         missing_reasons=reasons, expected_from=expected_from)
  model_acc, cv_acc = accs["model"], accs["constant_velocity"]
  scored = model_acc.num_sequences > 0
  return {"stage": predictor.stage, "model": model_acc.result() if scored else {},
          "constant_velocity": cv_acc.result() if scored else {}, "num_sequences": seen,
          "num_scored": model_acc.num_sequences, "scenes_per_second": seen / seconds if seconds > 0 else 0.0,
          "lmdb_path": os.path.abspath(dataset.path)}


def split_sequences(data_config, split: str, dataset: ArgoverseDataset) -> tuple[set | None, dict, str]:
  """What a leaderboard file of `split` must hold: (the sequence ids of its source directory
  `{src_dir}/{split dir}/data`, {why some are missing: ids}, where the ids came from). Without that directory
  (None, {}, the packed split): the file is checked against the LMDB's keys only, and a warning says so."""
  csv_dir = os.path.join(str(data_config.src_dir), split_source(split)[0], "data")
  if not os.path.isdir(csv_dir):
    logging.warning("%s (config.data.src_dir) is not there: the leaderboard file is checked against the packed "
                    "split %s only, not against the sequences it was packed from", csv_dir, dataset.path)
    return None, {}, f"the packed split {dataset.path}"
  expected = source_sequence_ids(csv_dir)
  logs = error_logs(data_config.lmdb_dir, split)
  policy = data_config.get("skip_unusable_scenes", "train")
  reasons = {f"failed to pack (reasons in {', '.join(logs)})": failed_sequence_ids(logs),
             f"skipped as unusable (config.data.skip_unusable_scenes={policy!r}; 'none' keeps them)":
                 set(dataset.skipped),
             f"not in the packed split {dataset.path} (pack it: bin/argoverse_packer.py --mode={split})":
                 expected - set(dataset.seq_ids.tolist())}
  return expected, reasons, csv_dir


def evaluate(config, workdir: str, *, stage: str = "float", split: str | None = None,
             write_h5: str | None = None, which: str = "best", progress: bool = True) -> dict:
  """Evaluates the stage's checkpoint (`which`: best or latest) in `workdir` on `split` (default: the config's
  val split); writes `{workdir}/eval_{stage}.json` (`eval_{stage}_{split}.json` for a split without futures,
  which has no metrics) and returns the result. The json records the split, the LMDB dir and the split's LMDB
  path, so an eval of another split or data set (which overwrites the file) says what it saw. `write_h5`: the
  leaderboard file, refused (before any prediction where it can be told) unless it holds every sequence of
  the split's source directory (`split_sequences`)."""
  split = split or config.data.val_split
  dataset = open_split(config.data, split)
  expected, reasons, expected_from = split_sequences(config.data, split, dataset) if write_h5 else (None, {}, None)
  predictor = load(workdir, stage=stage, which=which, config=config)
  result = evaluate_dataset(predictor, dataset, batch_size=config.train.eval_batch_size,
                            miss_threshold=config.eval.miss_threshold, max_batches=config.train.eval_max_batches,
                            write_h5=write_h5, expected_seq_ids=expected, missing_reasons=reasons,
                            expected_from=expected_from, progress=progress)
  result["split"] = split
  if write_h5:
    result["leaderboard_h5"] = {"path": os.path.abspath(write_h5), "checked_against": expected_from}
  result["lmdb_dir"] = os.path.abspath(str(config.data.lmdb_dir))
  # A split without futures has no metrics: its json goes beside the scored one, which the plots read.
  name = f"eval_{stage}.json" if result["num_scored"] else f"eval_{stage}_{split}.json"
  result["json_path"] = os.path.join(str(workdir), name)
  with open(result["json_path"], "w") as f:
    json.dump(result, f, indent=2)
  return result


def format_table(results: list[dict], keys=("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minADE_k1",
                                            "minFDE_k1", "MR_k1")) -> str:
  """A text table: one row per stage, the constant-velocity baseline (K=1 prediction) as the last row. A result
  without metrics (no scene with a future: a test split) is a line saying so."""
  unscored = [r for r in results if not r["model"]]
  results = [r for r in results if r["model"]]
  notes = [f"{r['stage']}: no metrics, none of the {r['num_sequences']} sequences of {r['lmdb_path']} has a "
           "ground-truth future (a test split)" for r in unscored]
  if not results:
    return "\n".join(notes)
  rows = [(r["stage"], r["model"]) for r in results]
  rows.append(("const. velocity", results[0]["constant_velocity"]))
  width = max(len(n) for n, _ in rows) + 2
  head = "".ljust(width) + "".join(k.rjust(16) for k in keys)
  lines = [head, "-" * len(head)]
  for name, values in rows:
    lines.append(name.ljust(width) + "".join(f"{values.get(k, float('nan')):16.4f}" for k in keys))
  lines.append(f"({results[0]['num_sequences']} sequences; the baseline predicts one trajectory, so its K=6 "
               "columns equal K=1)")
  return "\n".join(lines + notes)
