"""Model, loss, postprocess and the pure train/predict steps on tiny-config shapes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import init_params, load_config

from densetnt_jax.data.scene import MODEL_INPUT_FIELDS
from densetnt_jax.model import build_model, densetnt_loss, nms_select, primitives as P, select_modes
from densetnt_jax.train.step import (init_train_state, learning_rate_schedule, make_optimizer, predict_step,
                                     train_step)

LABELS = ("future_Fx2", "goal_index", "has_future")


def random_batch(rng, b, t, l, g, *, tv=19, lv=9, real_t=None, real_l=None, real_g=None, pred_steps=30):
  """A valid batch: the first real_* rows of each scene are real, the rest padded (zeros)."""
  real_t = real_t or np.full(b, t - 2)
  real_l = real_l or np.full(b, l - 3)
  real_g = real_g or np.full(b, g - 40)
  batch = {
      "trajs_TxVxC": np.zeros((b, t, tv, 9), np.float32), "traj_vector_mask_TxV": np.zeros((b, t, tv), bool),
      "traj_mask_T": np.zeros((b, t), bool), "lanes_LxVxC": np.zeros((b, l, lv, 11), np.float32),
      "lane_vector_mask_LxV": np.zeros((b, l, lv), bool), "lane_mask_L": np.zeros((b, l), bool),
      "goals_Gx2": np.zeros((b, g, 2), np.float32), "goal_mask_G": np.zeros((b, g), bool),
  }
  for i in range(b):
    nt, nl, ng = real_t[i], real_l[i], real_g[i]
    batch["trajs_TxVxC"][i, :nt] = rng.normal(size=(nt, tv, 9)) * 5
    batch["traj_vector_mask_TxV"][i, :nt] = rng.random((nt, tv)) < 0.85
    batch["traj_vector_mask_TxV"][i, 0] = True
    batch["traj_mask_T"][i, :nt] = True
    batch["lanes_LxVxC"][i, :nl] = rng.normal(size=(nl, lv, 11)) * 5
    batch["lane_vector_mask_LxV"][i, :nl] = True
    batch["lane_mask_L"][i, :nl] = True
    batch["goals_Gx2"][i, :ng] = rng.normal(size=(ng, 2)) * 15
    batch["goal_mask_G"][i, :ng] = True
  batch["future_Fx2"] = np.cumsum(rng.normal(size=(b, pred_steps, 2)), axis=1).astype(np.float32)
  batch["goal_index"] = rng.integers(0, min(real_g), b).astype(np.int32)
  batch["has_future"] = np.ones(b, bool)
  return batch


@pytest.fixture(scope="module")
def tiny():
  config = load_config("tiny")
  model = build_model(config)
  batch = random_batch(np.random.default_rng(0), 4, config.data.max_traj_num, config.data.max_lane_num,
                       config.data.max_goals_num)
  params = init_params(model, batch)
  return config, model, params, batch


def test_output_shapes_finite_and_probs_sum_to_one(tiny):
  config, model, params, batch = tiny
  out = model.apply({"params": params}, batch, train=True)
  b, g, f = 4, config.data.max_goals_num, config.model.pred_steps
  assert out.goal_logprobs_BxG.shape == (b, g) and out.traj_BxFx2.shape == (b, f, 2)
  assert out.offsets_BxGx2 is None
  assert np.all(np.isfinite(out.goal_logprobs_BxG)) and np.all(np.isfinite(out.traj_BxFx2))
  real = batch["goal_mask_G"]
  np.testing.assert_allclose(np.exp(np.where(real, out.goal_logprobs_BxG, -np.inf)).sum(-1), 1.0, rtol=1e-5)

  pred = model.apply({"params": params}, batch, method="predict")
  k, n = config.postprocess.mode_num, config.model.top_k
  assert pred.trajs_BxKxFx2.shape == (b, k, f, 2) and pred.probs_BxK.shape == (b, k)
  assert pred.goals_BxKx2.shape == (b, k, 2) and pred.topk_goals_BxNx2.shape == (b, n, 2)
  for x in pred:
    assert np.all(np.isfinite(np.asarray(x, np.float32)))
  np.testing.assert_allclose(pred.probs_BxK.sum(-1), 1.0, rtol=1e-6)
  assert np.all(pred.probs_BxK >= 0) and np.all(pred.mode_mask_BxK[:, 0])
  # the top-k goals are real candidates, best first
  assert np.all(pred.topk_valid_BxN) and np.all(np.diff(pred.topk_logprobs_BxN, axis=-1) <= 0)


def _pad_and_permute(rng, batch, t2, l2, g2):
  """The same scenes with bigger maxima (garbage in the new padded slots), non-agent trajectories, lanes and
  goal candidates permuted. Returns the new batch and, per scene, where each old goal went."""
  b, t, tv, _ = batch["trajs_TxVxC"].shape
  l, g = batch["lanes_LxVxC"].shape[1], batch["goals_Gx2"].shape[1]
  out = {}

  def grow(name, n_new, axis_len):
    x = batch[name]
    shape = (b, n_new) + x.shape[2:]
    garbage = (rng.normal(size=shape) * 1e3).astype(x.dtype) if x.dtype != bool else np.zeros(shape, bool)
    garbage[:, :axis_len] = x
    return garbage

  for name in ("trajs_TxVxC", "traj_vector_mask_TxV", "traj_mask_T"):
    out[name] = grow(name, t2, t)
  for name in ("lanes_LxVxC", "lane_vector_mask_LxV", "lane_mask_L"):
    out[name] = grow(name, l2, l)
  for name in ("goals_Gx2", "goal_mask_G"):
    out[name] = grow(name, g2, g)
  # garbage also inside real polylines' padded vectors
  out["trajs_TxVxC"] = np.where(out["traj_vector_mask_TxV"][..., None], out["trajs_TxVxC"],
                                rng.normal(size=out["trajs_TxVxC"].shape).astype(np.float32) * 1e3)
  goal_perm = np.zeros((b, g2), int)
  for i in range(b):
    tp = np.concatenate([[0], 1 + rng.permutation(t2 - 1)])
    lp, gp = rng.permutation(l2), rng.permutation(g2)
    for name in ("trajs_TxVxC", "traj_vector_mask_TxV", "traj_mask_T"):
      out[name][i] = out[name][i][tp]
    for name in ("lanes_LxVxC", "lane_vector_mask_LxV", "lane_mask_L"):
      out[name][i] = out[name][i][lp]
    for name in ("goals_Gx2", "goal_mask_G"):
      out[name][i] = out[name][i][gp]
    goal_perm[i] = gp
  where_old = np.argsort(goal_perm, axis=1)           # new position of old candidate j
  out["future_Fx2"] = batch["future_Fx2"]
  out["has_future"] = batch["has_future"]
  out["goal_index"] = np.take_along_axis(where_old, batch["goal_index"][:, None], 1)[:, 0].astype(np.int32)
  return out, where_old


def test_padding_and_permutation_change_nothing(tiny):
  config, model, params, batch = tiny
  t2, l2, g2 = config.data.max_traj_num + 5, config.data.max_lane_num + 7, config.data.max_goals_num + 33
  big, where_old = _pad_and_permute(np.random.default_rng(1), batch, t2, l2, g2)
  config2 = load_config("tiny")
  config2.data.max_traj_num = config2.model.num_traj = t2
  model2 = build_model(config2)

  out = model.apply({"params": params}, batch, train=True)
  out2 = model2.apply({"params": params}, big, train=True)
  real = batch["goal_mask_G"]
  lp2 = np.take_along_axis(np.asarray(out2.goal_logprobs_BxG), where_old[:, :real.shape[1]], axis=1)
  np.testing.assert_allclose(np.where(real, lp2, 0), np.where(real, out.goal_logprobs_BxG, 0), atol=1e-5)
  np.testing.assert_allclose(out2.traj_BxFx2, out.traj_BxFx2, atol=1e-4)
  loss, _ = densetnt_loss(out, batch, config.loss)
  loss2, _ = densetnt_loss(out2, big, config.loss)
  np.testing.assert_allclose(loss2, loss, rtol=1e-5)

  pred = model.apply({"params": params}, batch, method="predict")
  pred2 = model2.apply({"params": params}, big, method="predict")
  np.testing.assert_allclose(pred2.trajs_BxKxFx2, pred.trajs_BxKxFx2, atol=1e-3)
  np.testing.assert_allclose(pred2.probs_BxK, pred.probs_BxK, atol=1e-5)


def test_empty_scene_and_nan_in_padding_stay_finite(tiny):
  config, model, params, batch = tiny
  b = {k: np.array(v) for k, v in batch.items()}
  for name in ("traj_mask_T", "lane_mask_L", "goal_mask_G", "traj_vector_mask_TxV", "lane_vector_mask_LxV"):
    b[name][0] = False                                  # scene 0: nothing real at all
  for data, mask in (("trajs_TxVxC", "traj_vector_mask_TxV"), ("lanes_LxVxC", "lane_vector_mask_LxV"),
                     ("goals_Gx2", "goal_mask_G")):
    b[data] = np.where(b[mask][..., None], b[data], np.nan).astype(np.float32)
  b["has_future"][0] = False
  b["goal_index"][0] = -1
  out = model.apply({"params": params}, b, train=True)
  assert np.all(np.isfinite(out.goal_logprobs_BxG)) and np.all(np.isfinite(out.traj_BxFx2))
  pred = model.apply({"params": params}, b, method="predict")
  assert np.all(np.isfinite(pred.trajs_BxKxFx2)) and np.all(np.isfinite(pred.probs_BxK))
  np.testing.assert_allclose(pred.probs_BxK.sum(-1), 1.0, rtol=1e-6)
  assert pred.mode_mask_BxK[0].tolist() == [True] + [False] * (config.postprocess.mode_num - 1)
  loss, terms = densetnt_loss(out, b, config.loss)
  grads = jax.grad(lambda p: densetnt_loss(model.apply({"params": p}, b, train=True), b, config.loss)[0])(params)
  assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_unlabelled_scenes_contribute_nothing(tiny_dense):
  config, model, params = tiny_dense["config"], tiny_dense["model"], tiny_dense["params"]
  batch = tiny_dense["batches"][0]
  out = model.apply({"params": params}, batch, train=True)
  b = {k: np.array(v) for k, v in batch.items()}
  b["has_future"][1] = False
  b["goal_index"][2] = -1
  b["future_Fx2"][1] += 100.0                           # labels of unlabelled scenes are ignored
  loss, terms = densetnt_loss(out, b, config.loss)
  keep = np.array([0, 3])
  sub_out = jax.tree.map(lambda x: None if x is None else x[keep], out, is_leaf=lambda x: x is None)
  sub = {k: v[keep] for k, v in b.items()}
  loss_sub, terms_sub = densetnt_loss(sub_out, sub, config.loss)
  np.testing.assert_allclose(loss, loss_sub, rtol=1e-6)
  assert set(terms) == {"goal_ce", "traj_smooth_l1", "set_ce", "lane_ce"}   # dense goal set + lanes
  b["has_future"][:] = False
  loss0, _ = densetnt_loss(out, b, config.loss)
  assert float(loss0) == 0.0


def test_goal_offset_head():
  config = load_config("tiny")
  config.model.goal_offset, config.model.dense_seeds = True, 4
  batch = random_batch(np.random.default_rng(2), 2, 8, 16, 256)
  with pytest.raises(ValueError, match="goal_offset and the dense goal stage"):
    jax.eval_shape(functools.partial(build_model(config).init, train=True), jax.random.key(0), batch)
  config.model.dense_seeds = 0                                        # the offset head is the sparse decoder's
  model = build_model(config)
  params = init_params(model, batch)
  out = model.apply({"params": params}, batch, train=True)
  assert out.offsets_BxGx2.shape == (2, 256, 2)
  loss, terms = densetnt_loss(out, batch, config.loss)
  assert set(terms) == {"goal_ce", "traj_smooth_l1", "offset_smooth_l1"} and np.isfinite(loss)
  pred = model.apply({"params": params}, batch, method="predict")
  idx = np.argsort(-np.where(batch["goal_mask_G"], out.goal_logprobs_BxG, -np.inf), axis=1)[:, :1]
  expected = (np.take_along_axis(batch["goals_Gx2"], idx[..., None], 1)
              + np.take_along_axis(np.asarray(out.offsets_BxGx2), idx[..., None], 1))[:, 0]
  np.testing.assert_allclose(pred.goals_BxKx2[:, 0], expected, atol=1e-5)


def _greedy_nms(goals, scores, valid, threshold, k):
  order = sorted(range(len(goals)), key=lambda i: (-scores[i], i))
  kept = []
  for i in order:
    if valid[i] and all(np.hypot(*(goals[i] - goals[j])) >= threshold for j in kept):
      kept.append(i)
    if len(kept) == k:
      break
  return kept


def test_nms_hand_made_goals():
  goals = np.array([[0, 0], [1.9, 0], [3.0, 0], [3.0, 2.1], [0, 1.0], [40, 40], [3.5, 0.5]], np.float32)
  scores = np.array([-1.0, -1.1, -1.2, -1.3, -1.4, -9.0, -0.5], np.float32)
  valid = np.array([True, True, True, True, True, False, False])
  # by score: 6 (invalid), 0 kept, 1 within 1.9 of 0, 2 kept (3.0 from 0), 3 kept (2.1 from 2), 4 within 1.0 of 0
  idx, kept = nms_select(goals[None], scores[None], valid[None], threshold=2.0, mode_num=6)
  assert idx[0, :3].tolist() == [0, 2, 3] and kept[0].tolist() == [True] * 3 + [False] * 3
  assert idx[0, 3:].tolist() == [0, 0, 0]                      # padding repeats the best mode

  trajs = np.arange(7 * 30 * 2, dtype=np.float32).reshape(1, 7, 30, 2)
  modes = select_modes(goals[None], scores[None], valid[None], trajs, threshold=2.0, mode_num=6)
  w = np.exp(scores[[0, 2, 3]] - scores[0])
  np.testing.assert_allclose(modes.probs_BxK[0], np.concatenate([w / w.sum(), np.zeros(3)]), rtol=1e-6)
  np.testing.assert_array_equal(modes.trajs_BxKxFx2[0, 3:], np.repeat(trajs[:, :1], 3, axis=1)[0])
  np.testing.assert_array_equal(modes.goals_BxKx2[0, :3], goals[[0, 2, 3]])
  # a stable sort by descending probability (as metrics.py) keeps the real modes first, in order
  assert np.argsort(-np.asarray(modes.probs_BxK[0]), kind="stable").tolist() == [0, 1, 2, 3, 4, 5]


def test_nms_matches_sequential_greedy_and_handles_no_valid_goal():
  rng = np.random.default_rng(3)
  goals = (rng.normal(size=(16, 40, 2)) * 3).astype(np.float32)
  scores = np.sort(rng.normal(size=(16, 40)).astype(np.float32), axis=1)[:, ::-1].copy()
  valid = rng.random((16, 40)) < 0.9
  valid[0] = False
  idx, kept = jax.jit(functools.partial(nms_select, threshold=2.0, mode_num=6))(goals, scores, valid)
  for i in range(1, 16):
    ref = _greedy_nms(goals[i], scores[i], valid[i], 2.0, 6)
    assert np.asarray(idx[i])[np.asarray(kept[i])].tolist() == ref
  assert kept[0].tolist() == [True] + [False] * 5 and idx[0, 0] == 0


def test_custom_vjps_match_autodiff():
  k = iter(jax.random.split(jax.random.key(0), 8))
  x = jax.random.normal(next(k), (3, 5, 16))
  s, b = jax.random.normal(next(k), (16,)), jax.random.normal(next(k), (16,))
  w = jax.random.normal(next(k), x.shape)

  def ref_ln(x, s, b):
    m = x.mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5) * s + b

  for mine, ref, args in [
      (P.layernorm, ref_ln, (x, s, b)),
      (P.softmax, jax.nn.softmax, (x,)),
      (lambda x, kk, bb: P.dense(x[..., :2], kk, bb), lambda x, kk, bb: x[..., :2] @ kk + bb,
       (x, jax.random.normal(next(k), (2, 16)), b)),
  ]:
    np.testing.assert_allclose(mine(*args), ref(*args), atol=1e-5)
    g1 = jax.grad(lambda *a: (mine(*a) * w).sum(), argnums=tuple(range(len(args))))(*args)
    g2 = jax.grad(lambda *a: (ref(*a) * w).sum(), argnums=tuple(range(len(args))))(*args)
    for a, c in zip(g1, g2):
      np.testing.assert_allclose(a, c, atol=1e-4)
  mask = jax.random.uniform(next(k), x.shape[:-1]) < 0.5
  mask = mask.at[0, 0].set(False)

  def ref_max(x):
    y = jnp.max(jnp.where(mask[..., None], x, -1e30), axis=-2)
    return jnp.where(mask.any(-1)[..., None], y, 0)

  wm = w[:, 0]
  np.testing.assert_array_equal(P.masked_max(x, mask), ref_max(x))
  np.testing.assert_allclose(jax.grad(lambda x: (P.masked_max(x, mask) * wm).sum())(x),
                             jax.grad(lambda x: (ref_max(x) * wm).sum())(x), atol=1e-6)


def test_train_step_lowers_loss_and_chunking_is_exact(tiny):
  config, model, _, batch = tiny
  inputs = {k: batch[k] for k in MODEL_INPUT_FIELDS}
  # chunked == full-batch gradient (SGD with lr 1 makes the param change the gradient itself)
  sgd = optax.sgd(1.0)
  state = init_train_state(model, sgd, jax.random.key(0), inputs)
  steps = {c: jax.jit(functools.partial(train_step, model=model, optimizer=sgd, loss_config=config.loss,
                                        chunk_size=c)) for c in (None, 2, 1)}
  results = {c: f(state, batch) for c, f in steps.items()}
  for c in (2, 1):
    np.testing.assert_allclose(results[c][1]["loss"], results[None][1]["loss"], rtol=1e-5)
    for a, r in zip(jax.tree.leaves(results[c][0].params), jax.tree.leaves(results[None][0].params)):
      np.testing.assert_allclose(a, r, atol=1e-5)

  config = load_config("tiny")
  config.train.epochs, config.train.warmup_epochs, config.train.learning_rate = 100, 0, 1e-2
  optimizer = make_optimizer(config.train, steps_per_epoch=10)
  state = init_train_state(model, optimizer, jax.random.key(0), inputs)
  step = jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, loss_config=config.loss,
                                   chunk_size=2))
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 20 and np.all(np.isfinite(losses))
  assert all(b < a for a, b in zip(losses[:10], losses[1:10])) and losses[-1] < 0.75 * losses[0], losses
  assert float(metrics["learning_rate"]) == pytest.approx(1e-2, rel=1e-3)


def test_schedule_warms_up_then_decays():
  config = load_config("tiny")
  config.train.epochs, config.train.warmup_epochs = 4, 1
  schedule = learning_rate_schedule(config.train, steps_per_epoch=10)
  lrs = [float(schedule(i)) for i in range(41)]
  assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
  assert lrs[25] == pytest.approx(5e-4, rel=1e-2) and lrs[40] == pytest.approx(0.0, abs=1e-9)
  assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
  # the optimizer applies it: step i uses schedule(i), reported as metrics["learning_rate"]
  optimizer = make_optimizer(config.train, steps_per_epoch=10)
  params = {"w": jnp.ones(3)}
  opt_state = optimizer.init(params)
  for i in range(12):
    _, opt_state = optimizer.update({"w": jnp.ones(3)}, opt_state, params)
    assert float(opt_state.hyperparams["learning_rate"]) == pytest.approx(lrs[i], abs=1e-9)


def test_predict_step_chunked_equals_direct(tiny):
  config, model, params, batch = tiny
  direct = model.apply({"params": params}, {k: batch[k] for k in MODEL_INPUT_FIELDS}, method="predict")
  chunked = jax.jit(functools.partial(predict_step, model=model, chunk_size=2))(params, batch)
  for a, c in zip(direct, chunked):
    np.testing.assert_allclose(np.asarray(c, np.float32), np.asarray(a, np.float32), atol=1e-5)


def test_wrong_num_traj_is_a_clear_error(tiny):
  config, model, params, batch = tiny
  b = dict(batch, trajs_TxVxC=np.zeros((4, 9, 19, 9), np.float32))
  with pytest.raises(ValueError, match="num_traj"):
    model.apply({"params": params}, b, train=True)


@pytest.mark.parametrize("heads", [1, 2])
def test_folded_attention_is_standard_attention(heads):
  """project_queries=False computes standard attention with the query/output projections moved to the
  key/value side: map a standard layer's weights onto it and the outputs agree."""
  from densetnt_jax.model.vectornet import Attention
  h, d, hid = heads, 8 // heads, 8
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 5, hid)).astype(np.float32)
  kv = rng.normal(size=(2, 7, hid)).astype(np.float32)
  mask = rng.random((2, 7)) < 0.7
  mask[:, 0] = True
  std = Attention(hid, h, project_queries=True)
  p = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32),
                   std.init(jax.random.key(0), x, kv, mask))["params"]
  wq, bq, wk, bk = p["query"]["kernel"], p["query"]["bias"], p["key"]["kernel"], p["key"]["bias"]
  wv, bv, wo, bo = p["value"]["kernel"], p["value"]["bias"], p["out"]["kernel"], p["out"]["bias"]
  heads_ = [slice(j * d, (j + 1) * d) for j in range(h)]
  folded = {
      "key": {"kernel": jnp.concatenate([wk[:, s] @ wq[:, s].T for s in heads_], 1),
              "bias": jnp.concatenate([bk[s] @ wq[:, s].T for s in heads_])},
      "key_bias": {"kernel": jnp.stack([wk[:, s] @ bq[s] for s in heads_], 1) / np.sqrt(d),
                   "bias": jnp.stack([bk[s] @ bq[s] for s in heads_]) / np.sqrt(d)},
      "value": {"kernel": jnp.concatenate([wv[:, s] @ wo[s] for s in heads_], 1),
                "bias": jnp.concatenate([bv[s] @ wo[s] + bo / h for s in heads_])},
  }
  out_std = std.apply({"params": p}, x, kv, mask)
  out_fold = Attention(hid, h, project_queries=False).apply({"params": folded}, x, kv, mask)
  np.testing.assert_allclose(out_fold, out_std, rtol=1e-4, atol=1e-4)
