"""Argoverse 1 metrics on hand-computed cases, and against a per-sequence loop written from the reference."""
import numpy as np
import pytest

from densetnt_jax.metrics import (MetricsAccumulator, evaluate, forecasting_metrics, per_sequence_errors,
                                  summarize)

GT_TX2 = np.array([[0.0, 1.0], [0.0, 2.0]])


def _one(pred_KxTx2, prob_K, gt_Tx2=GT_TX2, **kw):
  return forecasting_metrics(np.asarray(pred_KxTx2)[None], np.asarray(prob_K)[None], gt_Tx2[None], **kw)


def test_fde_equal_to_threshold_is_not_a_miss():
  at = GT_TX2 + [2.0, 0.0]
  assert _one([at], [1.0], k=6)["MR_k6"] == 0.0
  assert _one([at], [1.0], k=6)["minFDE_k6"] == 2.0
  assert _one([GT_TX2 + [2.0001, 0.0]], [1.0], k=6)["MR_k6"] == 1.0


def test_kept_probabilities_are_renormalised_for_brier():
  # Probabilities 0.3 and 0.2 are the top 2 of 7; kept with k=2 they become 0.6 and 0.4.
  far = GT_TX2 + [3.0, 0.0]
  best = GT_TX2 + [1.0, 0.0]
  perfect = GT_TX2
  pred = [far, best] + [perfect] * 5
  m = _one(pred, [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1], k=2)
  assert m["minFDE_k2"] == pytest.approx(1.0)
  assert m["brier_minFDE_k2"] == pytest.approx(1.0 + 0.6 ** 2)
  e = per_sequence_errors(np.array(pred)[None], np.array([[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]]), GT_TX2[None], k=2)
  assert e["best_index_N"][0] == 1
  assert e["best_prob_N"][0] == pytest.approx(0.4)


def test_fde_tie_picks_first_after_sort():
  # Both end 1 m from the GT endpoint; the second (higher probability) comes first after sorting.
  a = np.array([[5.0, 1.0], [1.0, 2.0]])   # ADE 3
  b = np.array([[0.0, 1.0], [-1.0, 2.0]])  # ADE 0.5
  e = per_sequence_errors(np.array([[a, b]]), np.array([[0.2, 0.5]]), GT_TX2[None], k=6)
  assert e["best_index_N"][0] == 1
  assert e["ade_N"][0] == pytest.approx(0.5)
  assert e["brier_fde_N"][0] == pytest.approx(1.0 + (1 - 0.5 / 0.7) ** 2)
  # Same probabilities, swapped order: the first one now wins the tie.
  e = per_sequence_errors(np.array([[a, b]]), np.array([[0.5, 0.2]]), GT_TX2[None], k=6)
  assert e["best_index_N"][0] == 0
  assert e["ade_N"][0] == pytest.approx(3.0)


def test_min_ade_is_ade_of_min_fde_mode():
  low_ade = np.array([[0.0, 1.0], [3.0, 2.0]])  # ADE 1.5, FDE 3
  low_fde = np.array([[3.0, 1.0], [1.0, 2.0]])  # ADE 2.0, FDE 1
  m = _one([low_ade, low_fde], [0.5, 0.5], k=6)
  assert m["minADE_k6"] == pytest.approx(2.0)
  assert m["minFDE_k6"] == pytest.approx(1.0)


def test_k1_picks_highest_probability_mode():
  pred = [GT_TX2, GT_TX2 + [0.0, 5.0], GT_TX2 + [1.0, 0.0]]
  m = _one(pred, [0.1, 0.7, 0.2], k=1)
  assert m == pytest.approx({"minADE_k1": 5.0, "minFDE_k1": 5.0, "MR_k1": 1.0, "brier_minFDE_k1": 5.0})


def test_equal_probabilities_keep_original_order():
  pred = [GT_TX2 + [2.0, 0.0], GT_TX2 + [1.0, 0.0], GT_TX2, GT_TX2]
  assert _one(pred, [0.25] * 4, k=2)["minFDE_k2"] == pytest.approx(1.0)  # mode 2 is not kept
  assert _one(pred, [0.25] * 4, k=1)["minFDE_k1"] == pytest.approx(2.0)
  assert _one(pred, [0.25] * 4, k=3)["minFDE_k3"] == 0.0


def test_k_larger_than_modes_uses_all():
  pred = [GT_TX2 + [3.0, 0.0], GT_TX2 + [1.0, 0.0], GT_TX2 + [2.0, 0.0]]
  m = _one(pred, [0.5, 0.3, 0.2], k=6)
  assert m["minFDE_k6"] == pytest.approx(1.0)
  assert m["brier_minFDE_k6"] == pytest.approx(1.0 + 0.7 ** 2)


def test_unweighted_mean_over_sequences():
  pred = np.array([[GT_TX2 + [1.0, 0.0]], [GT_TX2 + [3.0, 0.0]]])
  m = forecasting_metrics(pred, np.ones((2, 1)), np.stack([GT_TX2, GT_TX2]), k=6)
  assert m["minFDE_k6"] == pytest.approx(2.0)
  assert m["MR_k6"] == pytest.approx(0.5)


def _reference_loop(pred, prob, gt, k, thr):
  """The reference algorithm, one sequence at a time in plain Python (an independent transcription)."""
  out = {"ade": [], "fde": [], "miss": [], "brier": []}
  for n in range(len(gt)):
    order = np.argsort([-p for p in prob[n]], kind="stable")[:min(k, len(prob[n]))]
    probs = [prob[n][t] for t in order]
    probs = [p / sum(probs) for p in probs]
    best, best_fde = 0, float("inf")
    for j, t in enumerate(order):
      fde = float(np.hypot(*(pred[n][t][-1] - gt[n][-1])))
      if fde < best_fde:
        best, best_fde = j, fde
    ade = float(np.mean(np.hypot(*(pred[n][order[best]] - gt[n]).T)))
    out["ade"].append(ade)
    out["fde"].append(best_fde)
    out["miss"].append(best_fde > thr)
    out["brier"].append(best_fde + (1 - probs[best]) ** 2)
  return {f"minADE_k{k}": np.mean(out["ade"]), f"minFDE_k{k}": np.mean(out["fde"]),
          f"MR_k{k}": np.mean(out["miss"]), f"brier_minFDE_k{k}": np.mean(out["brier"])}


@pytest.mark.parametrize("k", [1, 2, 6, 9])
def test_matches_reference_loop_on_random_data(k):
  rng = np.random.default_rng(k)
  n, modes, t = 50, 8, 30
  gt = np.cumsum(rng.normal(size=(n, t, 2)), axis=1)
  pred = gt[:, None] + rng.normal(scale=2.0, size=(n, modes, t, 2))
  prob = rng.integers(1, 5, size=(n, modes)).astype(float)  # many ties in probability
  prob /= prob.sum(axis=1, keepdims=True)
  got = forecasting_metrics(pred, prob, gt, k=k)
  assert got == pytest.approx(_reference_loop(pred, prob, gt, k, 2.0), rel=1e-12, abs=1e-12)


def test_accumulator_over_batches_equals_whole():
  rng = np.random.default_rng(0)
  gt = np.cumsum(rng.normal(size=(10, 30, 2)), axis=1)
  pred = gt[:, None] + rng.normal(scale=2.0, size=(10, 6, 30, 2))
  prob = rng.dirichlet(np.ones(6), size=10)
  acc = MetricsAccumulator()
  acc.add(pred[:4], prob[:4], gt[:4])
  acc.add(pred[4:], prob[4:], gt[4:])
  valid = np.ones(3, bool)
  valid[1] = False
  acc.add(pred[:3] + 100.0, prob[:3], gt[:3], valid_N=~valid)  # only the middle row, a sure miss
  res = acc.result()
  assert res["num_sequences"] == 11
  whole6 = summarize(per_sequence_errors(np.concatenate([pred, pred[1:2] + 100.0]),
                                         np.concatenate([prob, prob[1:2]]), np.concatenate([gt, gt[1:2]]), k=6), 6)
  whole1 = forecasting_metrics(np.concatenate([pred, pred[1:2] + 100.0]), np.concatenate([prob, prob[1:2]]),
                               np.concatenate([gt, gt[1:2]]), k=1)
  assert res == pytest.approx({**whole6, **whole1, "num_sequences": 11})
  assert set(res) == {"minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minADE_k1", "minFDE_k1", "MR_k1",
                      "brier_minFDE_k1", "num_sequences"}
  assert res["minFDE_k1"] >= res["minFDE_k6"]


def test_evaluate_scores_only_real_rows_with_a_future():
  """One valid mask for every loop: a padding row (seq_id -1) and a row without a future are not scored, a
  batch whose predict returns {} scores nothing, max_batches stops early; Scene-like and dict batches alike."""
  rng = np.random.default_rng(1)
  gt_BxTx2 = rng.normal(size=(4, 2, 2))
  pred_BxKxTx2, prob_BxK = rng.normal(size=(4, 3, 2, 2)), rng.random((4, 3))
  batch = {"future_Fx2": gt_BxTx2, "seq_id": np.array([7, 8, 9, -1]), "has_future": np.array([1, 0, 1, 1], bool)}
  unlabelled = {"seq_id": np.array([5])}
  calls = []

  def predict(b):
    calls.append(b)
    return {} if b is unlabelled else {"model": (pred_BxKxTx2, prob_BxK), "twice": (pred_BxKxTx2, prob_BxK)}

  accs = evaluate(predict, [batch, unlabelled, batch, batch], max_batches=3)
  assert len(calls) == 3
  expected = MetricsAccumulator()
  for _ in range(2):
    expected.add(pred_BxKxTx2[[0, 2]], prob_BxK[[0, 2]], gt_BxTx2[[0, 2]])
  assert accs["model"].result() == expected.result() == accs["twice"].result()
  assert accs["model"].num_sequences == 4
  assert accs["never predicted"].num_sequences == 0
