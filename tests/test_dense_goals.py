"""DenseTNT's dense goal stage: the lattice grid (shapes, de-duplication, masks), its integer kernels against the
float reference and their fake-quant twins, the model's goal set and its losses (set and lane labels), and the
new ops through the integer program, the checker, the cost model, the artifact and the int ONNX export."""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from densetnt_jax.data.scene import MODEL_INPUT_FIELDS
from densetnt_jax.deploy import artifact, checker, perf, runner
from densetnt_jax.deploy import onnx_check as C
from densetnt_jax.deploy import onnx_export as X
from densetnt_jax.model import densetnt_loss, primitives as P
from densetnt_jax.model.loss import nearest_lane
from densetnt_jax.quant import arith as A
from densetnt_jax.quant import fakequant as FQ
from densetnt_jax.quant import run_program
from densetnt_jax.quant.qtensor import codes_by_name


def _inputs(batch):
  return {k: batch[k] for k in MODEL_INPUT_FIELDS}


# -------------------------------------------------------------------------------------------- the grid
def test_float_grid_is_a_square_lattice_around_each_rounded_seed():
  seeds = np.array([[[0.2, 0.4], [10.6, -3.5], [-7.49, 2.51]]], np.float32)     # (1, 3, 2)
  grid = np.asarray(P.dense_grid(seeds, 1.0, 2))
  assert grid.shape == (1, 3 * 25, 2)
  np.testing.assert_array_equal(grid, np.round(grid))                          # on the 1 m lattice
  centres = np.floor(seeds[0] + 0.5)                                             # ties round up: -3.5 -> -3
  for m in range(3):
    pts = grid[0, m * 25:(m + 1) * 25]
    assert len({tuple(p) for p in pts.tolist()}) == 25
    assert np.abs(pts - centres[m]).max() == 2.0                                 # +-2 m square (5 x 5)
  half = np.asarray(P.dense_grid(seeds, 0.5, 1))                                 # other spacing and radius
  assert half.shape == (1, 27, 2) and np.abs(half[0, :9] - np.array([0.0, 0.5])).max() == 0.5


def test_lattice_first_keeps_exactly_the_first_copy_of_every_point():
  rng = np.random.default_rng(0)
  for _ in range(20):
    b, m, r = 3, 7, int(rng.integers(1, 3))
    lat = rng.integers(-4, 5, size=(b, m, 2)).astype(np.int32)                # seeds close: grids overlap
    valid = rng.random((b, m)) < 0.8
    keep = np.asarray(A.lattice_first(jnp.asarray(lat), jnp.asarray(valid), r))
    pts = np.asarray(A.lattice_points(jnp.asarray(lat), r))
    d = (2 * r + 1)**2
    assert keep.shape == pts.shape[:2] == (b, m * d)
    for i in range(b):
      seen = set()
      for q in range(m * d):
        point, seed = tuple(pts[i, q]), q // d
        assert keep[i, q] == (bool(valid[i, seed]) and point not in seen), (i, q)
        if valid[i, seed]:
          seen.add(point)
    # kept points are unique and every valid seed's grid point is kept once
    for i in range(b):
      kept = [tuple(p) for p in pts[i][keep[i]].tolist()]
      assert len(kept) == len(set(kept))
      assert set(kept) == {tuple(p) for q, p in enumerate(pts[i].tolist()) if valid[i, q // d]}


def test_integer_grid_matches_the_float_reference():
  """The kernel on int16 codes lays the float model's lattice up to the step's rounding: the same lattice
  index for almost every seed, points within (|L| + R) x |step s - spacing| + s / 2, the same mask."""
  rng = np.random.default_rng(1)
  seeds = rng.uniform(-60, 60, size=(8, 16, 2)).astype(np.float32)
  valid = rng.random((8, 16)) < 0.9
  s = np.float32(75.0 / 32767.5)
  q = A.quantize(seeds, s, 16)
  step = A.grid_step(s, 1.0)
  assert int(step) == round(1.0 / float(s))
  lat_int = np.asarray(A.grid_lattice(q, step))
  lat_float = np.asarray(P.grid_lattice(seeds, 1.0))
  same = np.all(lat_int == lat_float, axis=-1)
  assert same.mean() > 0.99                                                    # differ only at half-metre ties
  pts_int = np.asarray(A.dequantize(A.dense_grid(q, step, 2, 16), s)).reshape(8, 16, 25, 2)
  pts_float = np.asarray(P.dense_grid(seeds, 1.0, 2)).reshape(8, 16, 25, 2)
  tol = (np.abs(lat_float).max() + 2) * abs(float(step) * float(s) - 1.0) + float(s)
  assert np.abs(pts_int - pts_float)[same].max() <= tol
  scenes = np.all(same, axis=-1)                                               # scenes whose lattices agree
  mask_int = np.asarray(A.dense_grid_mask(q, valid, step, 2, 16))
  mask_float = np.asarray(P.dense_grid_mask(seeds, valid, 1.0, 2))
  np.testing.assert_array_equal(mask_int[scenes], mask_float[scenes])


def test_grid_points_outside_the_code_range_are_masked():
  s = np.float32(0.01)                                                         # int16 covers +-327 m
  seeds = np.array([[[326.0, 0.0], [0.0, 0.0]]], np.float32)
  q, step = A.quantize(seeds, s, 16), A.grid_step(s, 1.0)
  codes = np.asarray(A.dense_grid(q, step, 2, 16))
  mask = np.asarray(A.dense_grid_mask(q, np.ones((1, 2), bool), step, 2, 16))
  x = codes[0, :25, 0]
  assert codes.max() <= 32767 and x.max() == 32767                            # saturated ...
  np.testing.assert_array_equal(mask[0, :25], (np.repeat(np.arange(-2, 3), 5) + 326) * 100 <= 32767)   # ... masked
  assert mask[0, 25:].all()


def test_fake_quant_twins_are_the_kernels_times_the_scale():
  rng = np.random.default_rng(2)
  seeds = rng.uniform(-40, 40, size=(2, 5, 2)).astype(np.float32)
  valid = rng.random((2, 5)) < 0.8
  s = np.float32(50.0 / 32767.5)
  q, step = A.quantize(seeds, s, 16), A.grid_step(s, 1.0)
  np.testing.assert_array_equal(FQ.dense_grid(seeds, s, spacing=1.0, radius=2, bits=16),
                                A.dequantize(A.dense_grid(q, step, 2, 16), s))
  np.testing.assert_array_equal(FQ.dense_grid_mask(seeds, valid, s, spacing=1.0, radius=2, bits=16),
                                A.dense_grid_mask(q, valid, step, 2, 16))
  assert A.grid_acc_bound(int(step), 2, 16) < 2**31


# -------------------------------------------------------------------------------------- the model
def test_goal_set_is_sparse_then_dense_from_the_best_seeds(tiny_dense):
  model, params, batch = tiny_dense["model"], tiny_dense["params"], tiny_dense["batches"][0]
  dec = model.decoder

  def goal_set(mdl, inputs):
    enc = mdl._encode(inputs)
    m = inputs["goal_mask_G"]
    goals = mdl.decoder.mask_goals(inputs["goals_Gx2"], m)
    lanes, _ = mdl.decoder.lanes(enc)
    logits, logp, _ = mdl.decoder.score_goals(enc, goals, m, lanes)
    return mdl.decoder.goal_set(enc, goals, m, logits, logp, lanes), logits

  gs, logits = jax.jit(lambda p, x: model.apply({"params": p}, x, method=goal_set))(params, _inputs(batch))
  g = batch["goals_Gx2"].shape[1]
  assert gs.goals_BxUx2.shape == (4, g + dec.dense_points, 2) and gs.mask_BxU.shape == (4, g + dec.dense_points)
  np.testing.assert_allclose(np.exp(np.where(gs.mask_BxU, gs.logprobs_BxU, -np.inf)).sum(-1), 1.0, rtol=1e-5)
  dense = np.asarray(gs.goals_BxUx2[:, g:])
  dense_mask = np.asarray(gs.mask_BxU[:, g:])
  for b in range(4):
    seeds = np.argsort(-np.where(batch["goal_mask_G"][b], logits[b], -np.inf), kind="stable")[:dec.dense_seeds]
    pts = dense[b][dense_mask[b]]
    assert len({tuple(p) for p in pts.tolist()}) == len(pts)                   # de-duplicated
    lat = np.floor(batch["goals_Gx2"][b][seeds] + 0.5)
    near = np.abs(pts[:, None] - lat[None]).max(-1) <= 2
    assert near.any(1).all()                                                   # every point is a seed's
    best = np.abs(pts[:, None] - lat[None]).max(-1) <= 2
    first_seed = np.argmax(best, axis=1)
    assert np.all(np.diff(first_seed) >= 0)                                    # the best seeds' points first


def test_set_and_lane_losses_use_the_nearest_goal_and_lane(tiny_dense):
  model, params, batch = tiny_dense["model"], tiny_dense["params"], tiny_dense["batches"][0]
  config = tiny_dense["config"]
  out, (loss, terms) = jax.jit(lambda p, b: (o := model.apply({"params": p}, b, train=True),
                                              densetnt_loss(o, b, config.loss)))(params, batch)
  assert set(terms) == {"goal_ce", "traj_smooth_l1", "set_ce", "lane_ce"}
  end = batch["future_Fx2"][:, -1]
  d = np.linalg.norm(np.asarray(out.set_goals_BxUx2) - end[:, None], axis=-1)
  label = np.argmin(np.where(out.set_mask_BxU, d, np.inf), axis=1)
  want = -np.take_along_axis(np.asarray(out.set_logprobs_BxU), label[:, None], 1).mean()
  assert float(terms["set_ce"]) == pytest.approx(want, rel=1e-5)
  grads = jax.jit(jax.grad(lambda p: densetnt_loss(model.apply({"params": p}, batch, train=True), batch,
                                                   config.loss)[0]))(params)
  assert float(jnp.abs(grads["decoder"]["lane_out"]["kernel"]).sum()) > 0


def test_lane_attention_needs_lane_scoring(tiny_dense):
  from densetnt_jax.model import build_model
  config = tiny_dense["config"].copy_and_resolve_references()
  config.model.lane_scoring = False
  with pytest.raises(ValueError, match="lane_top_k"):
    jax.eval_shape(functools.partial(build_model(config).init, train=True), jax.random.key(0),
                   tiny_dense["batches"][0])


def test_nearest_lane_measures_to_the_centerline_segments():
  lanes = np.zeros((1, 3, 2, 11), np.float32)
  lanes[0, 0, 0, :4] = [0, 0, 0, 10]          # x = 0, y 0..10
  lanes[0, 1, 0, :4] = [5, 0, 5, 10]          # x = 5
  lanes[0, 2, 0, :4] = [3, 0, 3, 10]          # x = 3, but padded
  batch = {"lanes_LxVxC": lanes, "lane_vector_mask_LxV": np.array([[[True, False], [True, False], [True, False]]]),
           "lane_mask_L": np.array([[True, True, False]])}
  assert int(nearest_lane(batch, np.array([[2.0, 5.0]], np.float32))[0]) == 0
  assert int(nearest_lane(batch, np.array([[3.2, 50.0]], np.float32))[0]) == 1   # the padded lane is never it


# ------------------------------------------------------------------------ through the integer program
def test_program_reproduces_fake_quant_codes_with_dense_ops(tiny_dense):
  program, model = tiny_dense["program"], tiny_dense["model"]
  kinds = {o.kind for o in program.ops}
  assert {"dense_grid", "dense_grid_mask"} <= kinds
  names = {o.name for o in program.ops}                                        # lane scoring + attention
  assert "decoder/lane_out" in names and any(n.startswith("decoder/goal_lane_attention/") for n in names)
  assert any(o.name.endswith("@dense") for o in program.ops)                   # the scorer's second call
  assert program.meta["postprocess"]["selection"] == "mr"
  fq = jax.jit(lambda p, q, x: model.apply({"params": p, "quant": q}, x, method="predict",
                                           mutable=["intermediates"]))
  for batch in tiny_dense["batches"][:2]:
    x = _inputs(batch)
    _, inter = fq(tiny_dense["params"], tiny_dense["quant"], x)
    codes_fq = codes_by_name(inter["intermediates"])
    pred, codes = run_program(program, x, return_codes=True)
    assert set(codes) == set(codes_fq) == set(program.code_ops())
    for name in program.code_ops():
      np.testing.assert_array_equal(codes[name], codes_fq[name], err_msg=name)
      lo, hi = A.qrange(program.op(name).bits)                                # codes stay in their ranges
      assert lo <= int(np.min(codes[name])) and int(np.max(codes[name])) <= hi, name


def test_checker_cost_model_and_artifact_handle_the_dense_ops(tiny_dense, tmp_path):
  program, config = tiny_dense["program"], tiny_dense["config"]
  spec = checker.TargetSpec.from_config(config.target)
  report = checker.check_program(program, spec)
  assert report.ok, [str(v) for v in report.violations]
  rows = {r.name: r for r in report.rows}
  grid = next(o for o in program.ops if o.kind == "dense_grid")
  assert rows[grid.name].acc_bound == A.grid_acc_bound(int(grid.consts["step"]), 2, 16)
  broken = copy.deepcopy(program)
  broken.op(grid.name).consts["step"] = np.asarray(0, np.int32)              # a zero step divides by zero
  assert (grid.name, "accumulator") in checker.check_program(broken, spec).rules_failed()
  no_grid = spec.replace(op_bits={k: v for k, v in spec.op_bits.items() if k != "dense_grid"})
  assert (grid.name, "op-supported") in checker.check_program(program, no_grid).rules_failed()
  layers = {p.name: p for p in perf.layer_perf(program, spec, 30)}
  mask = next(o for o in program.ops if o.kind == "dense_grid_mask")
  assert layers[mask.name].element_ops == 30 * mask.shape[1] * 4 * 4           # points x seeds x 4
  path = str(tmp_path / "model.dtnt")
  artifact.write(program, path)
  inputs = {k: np.asarray(v) for k, v in _inputs(tiny_dense["batches"][0]).items()}
  assert all(runner.same_bits(a, b) for a, b in zip(run_program(program, inputs), runner.Runner(path)(inputs)))


def test_int_onnx_is_bit_identical_with_dense_ops(tiny_dense):
  program, config = tiny_dense["program"], tiny_dense["config"]
  proto = X.export_int(program, config, codes=True)
  res = C.compare_batches(C.make_session(proto), [_inputs(b) for b in tiny_dense["batches"]],
                          C.int_reference(program, codes=True), codes=True, complete=C.complete_int(program))
  assert C.failures("int", res, config) == []
  assert all(s["identical"] == 1.0 for s in res["codes"].values())
  assert all(res["outputs"][r]["identical"] == 1.0 for r in X.OUTPUT_ROLES)


def test_float_and_qdq_onnx_with_dense_ops(tiny_dense):
  model, params, config = tiny_dense["model"], tiny_dense["params"], tiny_dense["config"]
  batches = [_inputs(b) for b in tiny_dense["batches"]]
  proto = X.export_float(model, params, batches[0], config)
  res = C.compare_batches(C.make_session(proto), batches, C.jax_reference(model, params))
  assert C.failures("float", res, config) == []
  proto = X.export_qdq(model, params, tiny_dense["quant"], batches[0], config, program=tiny_dense["program"])
  res = C.compare_batches(C.make_session(proto, qdq_int8=True), batches,
                          C.jax_reference(model, params, tiny_dense["quant"]))
  assert res["outputs"]["topk_valid_BxN"]["elements"] > 0
