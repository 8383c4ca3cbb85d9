"""Argoverse 1 forecasting metrics, computed as argoverse-api's `get_displacement_errors_and_miss_rate`.

Per sequence: stable-sort the modes by probability (descending), keep the top k, renormalise the kept
probabilities; j* = the kept mode with the smallest final displacement (the first one on ties).
  minFDE = FDE of j*     minADE = ADE of j* (not the smallest ADE)     miss = minFDE > threshold (strict)
  brier-minFDE = minFDE + (1 - p_j*)^2, with p_j* the renormalised probability
Each metric is the unweighted mean over sequences. Keys carry the k (`minFDE_k6`, `minFDE_k1`), so a top-1
error is never reported as a plain "minFDE".

numpy only, below every stage that scores predictions: training validation, `bin/eval.py`, align and the ONNX
comparisons all score through `evaluate(predict_fn, batches)`, with this one accumulator and one valid mask.
`Agreement`: how two implementations' outputs agree element by element (align's codes, the ONNX checks).
"""
from __future__ import annotations

import collections
from collections.abc import Mapping

import numpy as np

METRIC_NAMES = ("minADE", "minFDE", "MR", "brier_minFDE")
# the columns the stage tables print (pipelines, align, the ONNX checks)
TABLE_METRICS = ("minADE_k6", "minFDE_k6", "MR_k6", "minADE_k1", "minFDE_k1", "MR_k1")


def per_sequence_errors(pred_NxKxTx2: np.ndarray, prob_NxK: np.ndarray, gt_NxTx2: np.ndarray,
                        miss_threshold: float = 2.0, k: int = 6) -> dict[str, np.ndarray]:
  """Per-sequence ade/fde/miss/brier_fde of the min-FDE mode among the top-k, plus its index and probability.

  `best_index_N` indexes the original (unsorted) modes; `best_prob_N` is the renormalised probability. If k is
  larger than the number of modes, all modes are used. Computed in float64, like the reference.
  """
  pred = np.asarray(pred_NxKxTx2, np.float64)
  prob = np.asarray(prob_NxK, np.float64)
  gt = np.asarray(gt_NxTx2, np.float64)
  if pred.ndim != 4 or pred.shape[-1] != 2 or gt.shape != pred.shape[:1] + pred.shape[2:]:
    raise ValueError(f"expected pred (N,K,T,2) and gt (N,T,2); got pred {pred.shape}, gt {gt.shape}")
  n, num_modes = pred.shape[:2]
  if prob.shape != (n, num_modes):
    raise ValueError(f"expected prob (N,K) = {(n, num_modes)}; got {prob.shape}")
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}")
  kept = min(k, num_modes)
  # Stable sort of the negated probabilities: equal probabilities keep their original order (as the reference).
  order_NxK = np.argsort(-prob, axis=1, kind="stable")[:, :kept]
  prob_NxK = np.take_along_axis(prob, order_NxK, axis=1)
  prob_NxK = prob_NxK / prob_NxK.sum(axis=1, keepdims=True)
  pred_NxKxTx2 = np.take_along_axis(pred, order_NxK[:, :, None, None], axis=1)
  dist_NxKxT = np.linalg.norm(pred_NxKxTx2 - gt[:, None], axis=-1)
  fde_NxK = dist_NxKxT[:, :, -1]
  # The reference keeps the first strict improvement: argmin's first-on-ties, NaN never chosen.
  j_N = np.argmin(np.where(np.isnan(fde_NxK), np.inf, fde_NxK), axis=1)
  rows = np.arange(n)
  fde_N = fde_NxK[rows, j_N]
  ade_N = dist_NxKxT[rows, j_N].mean(axis=1)
  p_N = prob_NxK[rows, j_N]
  return {
      "ade_N": ade_N,
      "fde_N": fde_N,
      "miss_N": fde_N > miss_threshold,
      "brier_fde_N": fde_N + (1.0 - p_N) ** 2,
      "best_index_N": order_NxK[rows, j_N],
      "best_prob_N": p_N,
  }


def summarize(errors: dict[str, np.ndarray], k: int) -> dict[str, float]:
  """Unweighted means over sequences of `per_sequence_errors` output, named with the k suffix."""
  if len(errors["fde_N"]) == 0:
    raise ValueError("no sequences to summarize")
  return {
      f"minADE_k{k}": float(np.mean(errors["ade_N"])),
      f"minFDE_k{k}": float(np.mean(errors["fde_N"])),
      f"MR_k{k}": float(np.mean(errors["miss_N"])),
      f"brier_minFDE_k{k}": float(np.mean(errors["brier_fde_N"])),
  }


def forecasting_metrics(pred_NxKxTx2: np.ndarray, prob_NxK: np.ndarray, gt_NxTx2: np.ndarray,
                        miss_threshold: float = 2.0, k: int = 6) -> dict[str, float]:
  """minADE_k{k}, minFDE_k{k}, MR_k{k}, brier_minFDE_k{k} over N sequences, as the Argoverse 1 evaluation."""
  return summarize(per_sequence_errors(pred_NxKxTx2, prob_NxK, gt_NxTx2, miss_threshold, k), k)


class MetricsAccumulator:
  """Collects per-sequence errors over batches for several k at once (default k=6 and k=1)."""

  def __init__(self, ks: tuple[int, ...] = (6, 1), miss_threshold: float = 2.0):
    self.ks = tuple(ks)
    self.miss_threshold = miss_threshold
    self._parts = {k: [] for k in self.ks}

  def add(self, pred_NxKxTx2: np.ndarray, prob_NxK: np.ndarray, gt_NxTx2: np.ndarray,
          valid_N: np.ndarray | None = None) -> None:
    """Adds a batch; `valid_N` (e.g. has_future, or not a padding row) drops the other sequences."""
    pred, prob, gt = np.asarray(pred_NxKxTx2), np.asarray(prob_NxK), np.asarray(gt_NxTx2)
    if valid_N is not None:
      valid_N = np.asarray(valid_N, bool)
      pred, prob, gt = pred[valid_N], prob[valid_N], gt[valid_N]
    if len(pred) == 0:
      return
    for k in self.ks:
      self._parts[k].append(per_sequence_errors(pred, prob, gt, self.miss_threshold, k))

  @property
  def num_sequences(self) -> int:
    return sum(len(e["fde_N"]) for e in self._parts[self.ks[0]])

  def errors(self, k: int) -> dict[str, np.ndarray]:
    """The per-sequence errors for one k, concatenated over all added batches."""
    parts = self._parts[k]
    if not parts:
      raise ValueError("MetricsAccumulator has no sequences; call add() first")
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

  def result(self) -> dict[str, float]:
    """Every metric for every k (`minFDE_k6`, ..., `minFDE_k1`, ...) and `num_sequences`."""
    out = {}
    for k in self.ks:
      out.update(summarize(self.errors(k), k))
    out["num_sequences"] = self.num_sequences
    return out


def _field(batch, name: str, default):
  return batch.get(name, default) if isinstance(batch, Mapping) else getattr(batch, name, default)


def scored_rows(batch) -> np.ndarray:
  """The rows a metric counts: real (`seq_id >= 0`, not padding) and with a ground-truth future (`has_future`).
  `batch`: a Scene or a dict of its fields; a missing field counts as true (an unpadded batch with futures)."""
  future = np.asarray(_field(batch, "future_Fx2", None))
  scored_B = np.asarray(_field(batch, "has_future", True)) & (np.asarray(_field(batch, "seq_id", 0)) >= 0)
  return np.broadcast_to(scored_B, future.shape[:1])


def evaluate(predict_fn, batches, *, ks: tuple[int, ...] = (6, 1), miss_threshold: float = 2.0,
             max_batches: int = -1, gather=np.asarray) -> dict[str, MetricsAccumulator]:
  """Scores every batch's predictions against its `future_Fx2` on its `scored_rows`.

  predict_fn(batch) -> {name: (trajs_BxKxFx2, probs_BxK)}, one accumulator per name (a model and its baseline,
  or both sides of a comparison); an empty dict scores nothing for that batch (a batch without labels).
  `max_batches` >= 0 stops after that many batches; `gather` turns a prediction or a batch field into the
  whole batch's numpy rows (the trainer's: every process's rows of a sharded batch). Returns the accumulators,
  a defaultdict: a name that never predicted gives an empty one (`num_sequences` 0)."""
  accs = collections.defaultdict(lambda: MetricsAccumulator(ks=ks, miss_threshold=miss_threshold))
  for i, batch in enumerate(batches):
    if 0 <= max_batches <= i:
      break
    preds = predict_fn(batch)
    if not preds:
      continue
    future_BxFx2, scored_B = gather(_field(batch, "future_Fx2", None)), gather(scored_rows(batch))
    for name, (trajs_BxKxFx2, probs_BxK) in preds.items():
      accs[name].add(gather(trajs_BxKxFx2), gather(probs_BxK), future_BxFx2, valid_N=scored_B)
  return accs


class Agreement:
  """Running max |diff| (in LSB with a `scale`, in float32 ulps with `ulp`) and share of bit-identical elements
  of one output of two implementations (align's per-op codes, the ONNX checks' outputs)."""

  def __init__(self, scale: float | None, ulp: bool = False):
    self.scale, self.n, self.same, self.max_abs, self.max_lsb = scale, 0, 0, 0.0, 0.0
    self.max_ulp = 0 if ulp else None     # float32 ulp distance (log-probs: far from 0, where ulps mean something)

  def add(self, ref, got, rows=None):
    ref, got = np.asarray(ref), np.asarray(got)
    if rows is not None:
      ref, got = ref[rows], got[rows]
    if ref.dtype == bool:
      d = (ref != got).astype(np.float64)
    else:
      d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    same = (ref == got) | (np.isnan(ref) & np.isnan(got)) if ref.dtype.kind == "f" else ref == got
    self.n += ref.size
    self.same += int(same.sum())
    if d.size:
      self.max_abs = max(self.max_abs, float(np.nanmax(d)))
      if self.scale:
        self.max_lsb = max(self.max_lsb, float(np.nanmax(d)) / self.scale)
      if self.max_ulp is not None:
        self.max_ulp = max(self.max_ulp, int(np.max(np.abs(_ordered(ref) - _ordered(got)))))

  def result(self) -> dict:
    r = {"max_abs": self.max_abs, "identical": self.same / max(self.n, 1), "elements": self.n}
    if self.scale:
      r["max_lsb"] = self.max_lsb
    if self.max_ulp is not None:
      r["max_ulp"] = self.max_ulp
    return r


def _ordered(x: np.ndarray) -> np.ndarray:
  """float32 bit patterns as integers in the floats' order: adjacent floats differ by 1 (an ulp)."""
  i = np.ascontiguousarray(x, np.float32).view(np.int32).astype(np.int64)
  return np.where(i < 0, -2**31 - i, i)
