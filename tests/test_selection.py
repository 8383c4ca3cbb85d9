"""Mode selection on the host (densetnt_jax/postprocess.py): DenseTNT's goal-set optimisation (mr / fde) on hand-made
distributions against HAT's NMS, its determinism, probabilities and padding, and the endpoint on the goal."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from densetnt_jax.postprocess import (PostprocessSettings, end_on_goal, finish_prediction, optimize_select,
                                      select_modes)


def _two_clusters():
  """A: 100 goals spread over a 12 x 12 m square, 0.01 each (60% in all); B: 200 goals within 1 m of (40, 0),
  0.002 each (40%). Every A goal outscores every B goal, so score-ordered NMS spends its 6 modes in A."""
  rng = np.random.default_rng(0)
  a = rng.uniform(-6, 6, size=(100, 2))
  b = np.array([40.0, 0.0]) + rng.uniform(-0.7, 0.7, size=(200, 2))
  goals = np.concatenate([a, b]).astype(np.float32)
  p = np.concatenate([np.full(100, 0.6 / 100), np.full(200, 0.4 / 200)])
  order = np.argsort(-p, kind="stable")                     # top-k order: best first, as the model hands them
  return goals[order], np.log(p[order]).astype(np.float32)


def _select(goals, logp, selection, **kw):
  s = PostprocessSettings(selection=selection, **kw)
  valid = np.ones(logp.shape, bool)
  if selection == "nms":
    return np.asarray(select_modes(goals[None], logp[None], valid[None], np.zeros((1, len(goals), 30, 2)),
                                   threshold=s.threshold, mode_num=s.mode_num).goals_BxKx2[0])
  idx, kept, probs = optimize_select(goals[None], logp[None], valid[None], settings=s)
  return goals[np.asarray(idx[0])], np.asarray(kept[0]), np.asarray(probs[0])


def _expected_miss(goals, logp, chosen, thr=2.0):
  p = np.exp(logp) / np.exp(logp).sum()
  d = np.linalg.norm(goals[:, None] - chosen[None], axis=-1).min(1)
  return float(np.sum(p * (d > thr)))


@pytest.mark.parametrize("selection", ["mr", "fde"])
def test_two_far_clusters_are_both_covered(selection):
  goals, logp = _two_clusters()
  chosen, kept, probs = _select(goals, logp, selection)
  nms = _select(goals, logp, "nms")
  assert kept.all()
  to_b = np.linalg.norm(chosen - np.array([40.0, 0.0]), axis=-1)
  assert to_b.min() < 1.0                                   # the 40% cluster gets a goal
  assert np.linalg.norm(nms - np.array([40.0, 0.0]), axis=-1).min() > 30   # NMS never leaves cluster A
  assert _expected_miss(goals, logp, chosen) < _expected_miss(goals, logp, nms) - 0.3
  # the goal on B carries B's mass; probabilities sum to 1, most probable first
  assert probs[np.argmin(to_b)] == pytest.approx(0.4, abs=1e-5)
  assert probs.sum() == pytest.approx(1.0, abs=1e-6) and np.all(np.diff(probs) <= 0)


@pytest.mark.parametrize("selection", ["mr", "fde"])
def test_one_sharp_peak_gets_goals_around_it(selection):
  rng = np.random.default_rng(1)
  goals = (np.array([10.0, 25.0]) + rng.normal(scale=1.5, size=(150, 2))).astype(np.float32)
  logp = (-0.5 * np.sum(np.square(goals - goals.mean(0)), -1) / 1.5**2).astype(np.float32)
  chosen, kept, _ = _select(goals, logp, selection)
  assert kept.all()
  assert np.all(np.linalg.norm(chosen - np.array([10.0, 25.0]), axis=-1) < 5.0)   # all around the peak
  assert len({tuple(g) for g in chosen.tolist()}) == 6                             # and not stacked
  if selection == "fde":                                    # E[FDE] puts a goal near the middle
    assert np.linalg.norm(chosen - np.array([10.0, 25.0]), axis=-1).min() < 1.0


def test_fixed_seed_gives_the_same_set_and_batch_does_not_matter():
  rng = np.random.default_rng(2)
  goals = rng.uniform(-30, 30, size=(3, 150, 2)).astype(np.float32)
  logp = jax.nn.log_softmax(jnp.asarray(rng.normal(scale=2.0, size=(3, 150)), jnp.float32))
  valid = np.ones((3, 150), bool)
  s = PostprocessSettings(selection="mr", opt_seed=7)
  run = jax.jit(functools.partial(optimize_select, settings=s))
  first, second = run(goals, logp, valid), run(goals, logp, valid)
  jax.tree.map(np.testing.assert_array_equal, first, second)
  alone = run(goals[1:2], logp[1:2], valid[1:2])             # a scene's set does not depend on its batch
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[0], b[1]), alone, first)


def test_optimiser_beats_greedy_start_and_nms_on_its_objective():
  rng = np.random.default_rng(3)
  for _ in range(5):
    centres = rng.uniform(-30, 30, size=(4, 2))
    goals = (centres[rng.integers(0, 4, 150)] + rng.normal(scale=2.0, size=(150, 2))).astype(np.float32)
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(scale=1.5, size=150), jnp.float32)))
    order = np.argsort(-logp, kind="stable")
    goals, logp = goals[order], logp[order]
    opt, _, _ = _select(goals, logp, "mr")
    greedy, _, _ = _select(goals, logp, "mr", opt_iterations=0, opt_restarts=0)
    nms = _select(goals, logp, "nms")
    assert _expected_miss(goals, logp, opt) <= _expected_miss(goals, logp, greedy) + 1e-6
    assert _expected_miss(goals, logp, opt) <= _expected_miss(goals, logp, nms) + 1e-6


def test_fewer_valid_goals_than_modes_pads_with_mode_zero():
  goals = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [5.0, 5.0]], np.float32)[None]
  logp = np.log(np.array([[0.5, 0.3, 0.2, 1e-9]], np.float32))
  valid = np.array([[True, True, True, False]])
  idx, kept, probs = optimize_select(goals, logp, valid, settings=PostprocessSettings(selection="fde"))
  idx, kept, probs = np.asarray(idx[0]), np.asarray(kept[0]), np.asarray(probs[0])
  assert kept.tolist() == [True] * 3 + [False] * 3
  assert sorted(idx[:3].tolist()) == [0, 1, 2] and np.all(idx[3:] == idx[0])
  np.testing.assert_allclose(probs, [0.5, 0.3, 0.2, 0, 0, 0], atol=1e-6)


def test_endpoint_on_the_goal():
  rng = np.random.default_rng(4)
  trajs = rng.normal(size=(2, 6, 30, 2)).astype(np.float32)
  goals = rng.normal(size=(2, 6, 2)).astype(np.float32)
  np.testing.assert_array_equal(end_on_goal(trajs, goals, "model"), trajs)
  snap = np.asarray(end_on_goal(trajs, goals, "snap"))
  np.testing.assert_array_equal(snap[..., -1, :], goals)
  np.testing.assert_array_equal(snap[..., :-1, :], trajs[..., :-1, :])
  shift = np.asarray(end_on_goal(trajs, goals, "shift"))
  np.testing.assert_allclose(shift[..., -1, :], goals, atol=1e-6)
  err = goals - trajs[..., -1, :]
  np.testing.assert_allclose(shift[..., 0, :] - trajs[..., 0, :], err / 30, atol=1e-6)   # linear in time
  np.testing.assert_allclose(shift[..., 14, :] - trajs[..., 14, :], err * 15 / 30, atol=1e-6)


def test_finish_prediction_applies_selection_and_endpoint():
  goals, logp = _two_clusters()
  n = len(goals)
  trajs = np.zeros((1, n, 30, 2), np.float32)
  out = finish_prediction(np.zeros((1, 8), np.float32), goals[None], logp[None], np.ones((1, n), bool), trajs,
                          settings=PostprocessSettings(selection="fde", endpoint="snap"))
  np.testing.assert_array_equal(np.asarray(out.trajs_BxKxFx2)[..., -1, :], np.asarray(out.goals_BxKx2))
  assert np.asarray(out.probs_BxK).sum() == pytest.approx(1.0, abs=1e-6)
  with pytest.raises(ValueError, match="selection"):
    PostprocessSettings(selection="beam")
  with pytest.raises(ValueError, match="endpoint"):
    PostprocessSettings(endpoint="last")
