"""The stages after float on a tiny workdir: float -> calibration -> qat -> int run end to end and write their
checkpoint / program, every stage evaluates through the Predictor, the int stage's predictions are the
interpreter's, a killed QAT resumes exactly, align_bpu_validation passes (the script) and fails on a corrupted program weight,
a missing input gives the clear error, sensitivity ranks points.

Data: 12 real train and 8 real val scenes packed into tmp; config tiny (batch 4: 3 steps per epoch), one float
and one QAT epoch, 2 calibration batches. Runs in one process share compiled steps (loop caches them), so the
uninterrupted QAT reference costs no compile; the two command-line runs start as subprocesses as soon as their
inputs exist and run while the in-process stages and tests do.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, load_config, pack_real_subset, tiny_config
import densetnt_jax
from densetnt_jax.data.scene import model_inputs
from densetnt_jax.deploy.align import BOARD_BATCH, run as align_run
from densetnt_jax.eval.evaluate import evaluate
from densetnt_jax.train import loop
from densetnt_jax.train.checkpoint import restore_stage
from densetnt_jax.train.stages import run_stage
from densetnt_jax.workdir import MissingStageError, checkpoint_dir, load_program, program_dir

NUM_TRAIN, NUM_VAL = 12, 8
STAGES = ("float", "calibration", "qat", "int")
OVERRIDES = {"train.epochs": 1, "train.checkpoint_every_steps": 2, "qat.epochs": 1, "qat.decay_epochs": (0.5,),
             "quant.calibration_batches": 2, "data.prefetch": 2}
TIMEOUT_S = 300


def _config(lmdb_dir):
  return tiny_config(lmdb_dir, OVERRIDES)


def _cli(script, lmdb_dir, workdir, *extra):
  overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  return ([sys.executable, str(ROOT / "bin" / script), f"--config={ROOT / 'configs' / 'argo.py'}:tiny",
           f"--config.data.lmdb_dir={lmdb_dir}", f"--workdir={workdir}"] + overrides + list(extra))


def _start(cmd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc) -> tuple[int, str, str]:
  try:
    out, err = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
  return proc.returncode, out, err


def _jsonl(workdir, stage):
  with open(os.path.join(workdir, stage, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def lmdb_dir(argo_dir, tmp_path_factory):
  """The first 12 train and 8 val CSVs of the real sample, packed."""
  return pack_real_subset(argo_dir, tmp_path_factory.mktemp("stages_data"), NUM_TRAIN, NUM_VAL,
                          load_config("tiny").data)


def _corrupt_a_weight(workdir, to) -> str:
  """A workdir copy (qat + int) whose program has its largest dense weight sign-flipped; returns the op name."""
  shutil.copytree(os.path.join(workdir, "qat"), to / "qat")
  program = load_program(workdir)
  dense = next(o for o in program.ops if o.kind == "dense" and "w_q" in o.consts)
  w = dense.consts["w_q"].copy()
  i = np.unravel_index(np.argmax(np.abs(w)), w.shape)
  w[i] = -w[i] if w[i] != -128 else 127
  dense.consts["w_q"] = w
  program.save(str(to / "int" / "program"))
  return dense.name


@pytest.fixture(scope="module")
def pipeline(lmdb_dir, tmp_path_factory):
  """All four stages in one workdir, QAT killed after step 2 and resumed: (config, workdir, {stage: final
  metrics}, {name: (background process, info)}). In the background: bin/train.py --stage=int on an empty
  workdir (from the start) and bin/align_bpu_validation.py on the workdir (once the program exists)."""
  config = _config(lmdb_dir)
  workdir = tmp_path_factory.mktemp("stages")
  empty = tmp_path_factory.mktemp("empty")
  procs = {"train_int_missing": (_start(_cli("train.py", lmdb_dir, empty, "--stage=int")), empty)}
  try:
    results = {stage: run_stage(config, workdir, stage) for stage in ("float", "calibration")}
    assert loop.train_and_evaluate(config, workdir, stage="qat", stop_after_steps=2) == {"step": 2, "stopped": True}
    results["qat"] = run_stage(config, workdir, "qat")             # resumes from the step-2 checkpoint
    results["int"] = run_stage(config, workdir, "int")
    procs["align"] = (_start(_cli("align_bpu_validation.py", lmdb_dir, workdir)), None)
    yield config, workdir, results, procs
  finally:
    for p, _ in procs.values():
      if p.poll() is None:
        p.kill()
        p.communicate()


def test_each_stage_writes_its_checkpoint_or_program_and_logs_val_metrics(pipeline):
  config, workdir, results, _ = pipeline
  for stage in ("float", "calibration", "qat"):
    _, quant, meta = restore_stage(workdir, stage, "best")
    assert (quant is None) == (stage == "float"), stage
    assert meta["stage"] == stage
  assert os.path.isfile(os.path.join(program_dir(workdir), "program.json"))
  assert sorted(os.listdir(checkpoint_dir(workdir, "calibration", "best"))) == ["0"]
  for stage in STAGES:
    val = [r for r in _jsonl(workdir, stage) if "val/minFDE_k6" in r]
    assert len(val) == 1 and np.isfinite(val[0]["val/minFDE_k6"]), stage
    assert val[0]["val/num_sequences"] == NUM_VAL
    assert results[stage]["val/minFDE_k6"] == val[0]["val/minFDE_k6"]
  lr = {r["step"]: r["train/learning_rate"] for r in _jsonl(workdir, "qat") if "train/loss" in r}
  assert sorted(lr) == [1, 2, 3]                                     # each step logged once across the resume
  assert lr[1] == pytest.approx(config.qat.learning_rate)            # x0.1 after half an epoch (step 1.5)
  assert lr[3] == pytest.approx(config.qat.learning_rate * config.qat.decay_factor)


def test_calibration_keeps_float_params_and_qat_trains_params_not_scales(pipeline):
  _, workdir, _, _ = pipeline
  p_float, _, _ = restore_stage(workdir, "float", "best")
  p_cal, q_cal, _ = restore_stage(workdir, "calibration", "best")
  p_qat, q_qat, _ = restore_stage(workdir, "qat", "best")
  for a, b in zip(jax.tree.leaves(p_float), jax.tree.leaves(p_cal)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(p_cal), jax.tree.leaves(p_qat)))
  assert jax.tree.structure(q_cal) == jax.tree.structure(q_qat)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(q_cal), jax.tree.leaves(q_qat)):
    assert np.asarray(a).dtype == np.asarray(b).dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
  scales = [float(np.asarray(x)) for p, x in jax.tree_util.tree_leaves_with_path(q_cal)
            if jax.tree_util.keystr(p).endswith("['scale']")]
  assert scales and all(np.isfinite(scales)) and any(s != 1.0 for s in scales)   # calibrated, not the init


def test_qat_kill_and_resume_equals_uninterrupted(pipeline, tmp_path):
  config, workdir, _, _ = pipeline
  reference = tmp_path
  for stage in ("float", "calibration"):
    shutil.copytree(os.path.join(workdir, stage), reference / stage)
  assert loop.train_and_evaluate(config, reference, stage="qat")["step"] == 3
  (p_ref, q_ref, m_ref), (p, q, m) = restore_stage(reference, "qat", "latest"), restore_stage(workdir, "qat", "latest")
  assert m["step"] == m_ref["step"] == 3
  for a, b in zip(jax.tree.leaves((p, q)), jax.tree.leaves((p_ref, q_ref))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  loss = lambda d: {r["step"]: r["train/loss"] for r in _jsonl(d, "qat") if "train/loss" in r}
  assert loss(workdir) == loss(reference)


def test_eval_of_every_quant_stage_goes_through_the_predictor_and_matches_the_stage_log(pipeline):
  config, workdir, results, _ = pipeline
  for stage in ("calibration", "qat", "int"):                       # float: tests/test_eval_api.py
    result = evaluate(config, workdir, stage=stage, progress=False)
    assert result["stage"] == stage and result["num_sequences"] == NUM_VAL
    with open(os.path.join(workdir, f"eval_{stage}.json")) as f:
      assert json.load(f)["model"]["minFDE_k6"] == result["model"]["minFDE_k6"]
    for k in ("minADE_k6", "minFDE_k6", "MR_k6"):
      assert result["model"][k] == pytest.approx(results[stage][f"val/{k}"], rel=1e-4, abs=1e-5), (stage, k)


def test_int_stage_predictions_are_the_interpreter_run_directly(pipeline):
  from densetnt_jax.quant import run_program
  config, workdir, _, _ = pipeline
  predictor = densetnt_jax.load(workdir, "int", config=config)
  batch = next(predictor.dataset().batches(NUM_VAL))
  pred = predictor.predict(batch)
  direct = run_program(load_program(workdir), model_inputs(batch))
  np.testing.assert_array_equal(pred["trajs_BxKxFx2"], np.asarray(direct.trajs_BxKxFx2))
  np.testing.assert_array_equal(pred["probs_BxK"], np.asarray(direct.probs_BxK))
  np.testing.assert_array_equal(pred["goal_logprobs_BxG"], np.asarray(direct.goal_logprobs_BxG))


def test_align_passes_on_the_tiny_model_and_fails_on_a_corrupted_program_weight(pipeline, tmp_path, capsys):
  config, workdir, _, procs = pipeline
  rc, out, err = _finish(procs["align"][0])
  assert rc == 0, (out + err)[-3000:]
  assert "PASSED" in out and "identical %" in out
  with open(os.path.join(workdir, "align_bpu_validation.json")) as f:
    result = json.load(f)
  assert result["failures"] == [] and result["batch_size"] == BOARD_BATCH and result["num_sequences"] == NUM_VAL
  assert len(result["layers"]) > 20
  assert min(r["identical"] for r in result["layers"]) >= config.quant.align_min_identical
  assert result["fake_quant"]["minFDE_k6"] == pytest.approx(result["int"]["minFDE_k6"], abs=1e-6)
  corrupted = _corrupt_a_weight(workdir, tmp_path)
  capsys.readouterr()
  assert align_run(config, tmp_path, progress=False) == 1          # what the script exits with
  out, err = capsys.readouterr()
  assert "FAILED" in err and f"{corrupted}:" in err


def test_align_also_checks_the_compiled_artifact_and_the_int_onnx(pipeline, tmp_path, capsys):
  """With WORKDIR/deploy/model.dtnt and WORKDIR/export/densetnt_int.onnx present, align runs both beside the
  interpreter: bit-identical here; an artifact compiled from another program (one weight flipped) fails."""
  import onnx
  from densetnt_jax.deploy import artifact, onnx_export
  from densetnt_jax.workdir import deployed_paths
  config, workdir, _, _ = pipeline
  shutil.copytree(os.path.join(workdir, "qat"), tmp_path / "qat")
  shutil.copytree(os.path.join(workdir, "int"), tmp_path / "int")
  program = load_program(tmp_path)
  artifact_path, onnx_path = deployed_paths(tmp_path)
  artifact.write(program, artifact_path, info={})
  os.makedirs(os.path.dirname(onnx_path))
  onnx.save(onnx_export.export_int(program, config), onnx_path)
  capsys.readouterr()
  assert align_run(config, tmp_path, progress=False) == 0
  out, _ = capsys.readouterr()
  assert "compiled artifact vs interpreter: 1 batches, bit-identical" in out and "int ONNX" in out
  with open(tmp_path / "align_bpu_validation.json") as f:
    result = json.load(f)
  assert result["artifact"]["differing"] == [] and result["int_onnx"]["failures"] == []
  assert result["int_onnx"]["outputs"]["topk_trajs_BxNxFx2"]["identical"] == 1.0
  other = tmp_path / "other"
  _corrupt_a_weight(workdir, other)
  artifact.write(load_program(other), artifact_path, info={})
  assert align_run(config, tmp_path, progress=False) == 1
  _, err = capsys.readouterr()
  assert "compiled artifact vs interpreter:" in err


def test_missing_input_checkpoint_says_which_stage_to_run(lmdb_dir, tmp_path, pipeline):
  config, _, _, procs = pipeline
  for stage, prev in (("calibration", "float"), ("qat", "calibration"), ("int", "qat")):
    with pytest.raises(MissingStageError, match=f"run --stage={prev} first"):
      run_stage(config, tmp_path, stage)
  with pytest.raises(MissingStageError, match="run --stage=int first"):
    densetnt_jax.load(tmp_path, "int", config=config)
  assert os.listdir(tmp_path) == []
  proc, empty = procs["train_int_missing"]
  rc, _, err = _finish(proc)
  assert rc == 2 and "run --stage=qat first" in err and os.listdir(empty) == []


def _points_of(quant):
  return jax.tree.leaves(quant, is_leaf=lambda x: isinstance(x, dict) and "qmax" in x)


def test_sensitivity_ranks_points_by_their_int8_cost_and_suggests_int16(pipeline):
  from densetnt_jax.eval.sensitivity import group, points, sensitivity, suggest_int16, with_bits
  config, workdir, _, _ = pipeline
  _, quant, _ = restore_stage(workdir, "calibration", "best")
  names = points(quant)
  assert len(names) == len(_points_of(quant))
  all16 = with_bits(quant, lambda n: 16, config.quant)
  assert all(np.asarray(p["qmax"]).dtype == np.int16 for p in _points_of(all16))
  one8 = with_bits(all16, lambda n: 8 if n == names[0] else 16, config.quant)
  assert [np.asarray(p["qmax"]).dtype for p in _points_of(one8)].count(np.int8) == 1
  cost = {names[0]: 0.1, names[1]: 0.3, names[2]: 0.2}

  def score(q):           # a stand-in metric with known per-point costs (the real one: sensitivity_workdir)
    int8 = [n for n, p in zip(names, _points_of(q)) if np.asarray(p["qmax"]).dtype == np.int8]
    return {"minFDE_k6": 1.0 + sum(cost.get(n, 0.01) for n in int8)}

  result = sensitivity(score, quant, config.quant, mode="only", layers=names[:3])
  assert [r["layer"] for r in result["rows"]] == [names[1], names[2], names[0]]
  assert [r["cost"] for r in result["rows"]] == pytest.approx([0.3, 0.2, 0.1])
  assert suggest_int16(result, top=2) == [names[1], names[2]]
  leave_one = sensitivity(score, quant, config.quant, mode="all_but", layers=names[:3])
  assert [r["layer"] for r in leave_one["rows"]] == [names[1], names[2], names[0]]
  assert group(names, 1) == ["decoder", "encoder"]
  by_part = sensitivity(score, quant, config.quant, layers=["decoder", "encoder"])
  decoder = next(r for r in by_part["rows"] if r["layer"] == "decoder")
  assert decoder["points"] == [n for n in names if n.startswith("decoder/")]
  assert decoder["cost"] == pytest.approx(sum(cost.get(n, 0.01) for n in decoder["points"]))


def test_one_stage_registry_for_the_loader_and_the_trainer():
  """densetnt_jax.load and the trainer's validation take a stage's predict function from one map; the model
  stages share one compiled function per model (calibration and every QAT validation compile once)."""
  from densetnt_jax.model import build_model
  from densetnt_jax.train.predict import STAGE_PREDICT, check_stage_state, stage_predict_fn
  from densetnt_jax.workdir import STAGES
  assert tuple(STAGE_PREDICT) == STAGES
  with pytest.raises(ValueError, match="unknown stage 'fp32'"):
    stage_predict_fn("fp32")
  with pytest.raises(ValueError, match="integer program"):
    stage_predict_fn("int")
  with pytest.raises(ValueError, match="predicts with the model"):
    stage_predict_fn("qat")
  model = build_model(load_config("tiny"))
  assert stage_predict_fn("calibration", model=model) is stage_predict_fn("qat", model=build_model(load_config("tiny")))
  with pytest.raises(ValueError, match="fake-quant model"):
    check_stage_state("qat", params={})
  with pytest.raises(ValueError, match="takes no quant state"):
    check_stage_state("float", params={}, quant={})
  with pytest.raises(ValueError, match="integer program"):
    densetnt_jax.api.Predictor(load_config("tiny"), stage="int")
