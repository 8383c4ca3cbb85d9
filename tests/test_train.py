"""Float training loop: a step learns, kill-and-resume is exact, 2 devices and 2 processes equal 1, a non-finite
loss stops the run at its step, bin/train.py rejects a mistyped override.

Data: 12 real train and 8 real val scenes packed into tmp; config tiny, batch 4 -> 3 steps per epoch, 2 epochs,
a checkpoint every 2 steps and at each epoch end. The multi-device runs start first, as subprocesses, and run
while the in-process tests do.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, load_config, pack_real_subset, tiny_config
from densetnt_jax.model import build_model
from densetnt_jax.train import loop
from densetnt_jax.train.checkpoint import latest_manager, load_config as load_run_config
from densetnt_jax.train.checkpoint import restore_params
from densetnt_jax.train.step import init_train_state, make_optimizer, train_step
from densetnt_jax.workdir import checkpoint_dir

NUM_TRAIN, NUM_VAL = 12, 8
STEPS = 6
# Adam's eps = 1e-3 (not 1e-8) in the runs compared across device counts: some parameters have an exactly zero
# gradient (softmax-invariant biases: attention key bias, goal score bias), and with eps 1e-8 Adam turns their
# ~1e-9 float noise, which depends on the reduction order, into +-lr steps (measured: 5e-4 after 6 steps).
OVERRIDES = {"train.epochs": 2, "train.checkpoint_every_steps": 2, "train.eps": 1e-3, "data.prefetch": 2}
SUBPROCESS_TIMEOUT_S = 300


def _config(lmdb_dir):
  return tiny_config(lmdb_dir, OVERRIDES)


def _cli(lmdb_dir, workdir, *extra):
  return ([sys.executable, str(ROOT / "bin" / "train.py"), "--stage=float",
           f"--config={ROOT / 'configs' / 'argo.py'}:tiny", f"--config.data.lmdb_dir={lmdb_dir}",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()] + list(extra))


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait(proc: subprocess.Popen, what: str) -> None:
  try:
    out, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  assert proc.returncode == 0, f"{what} failed (rc {proc.returncode}):\n{out[-4000:]}"


def _jsonl(workdir):
  with open(os.path.join(workdir, "float", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _losses(workdir):
  return {r["step"]: r["train/loss"] for r in _jsonl(workdir) if "train/loss" in r}


def _assert_trees_close(a, b, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def lmdb_dir(argo_dir, tmp_path_factory):
  """The first 12 train and 8 val CSVs of the real sample, packed."""
  return pack_real_subset(argo_dir, tmp_path_factory.mktemp("train_data"), NUM_TRAIN, NUM_VAL,
                          load_config("tiny").data)


@pytest.fixture(scope="module")
def parallel_runs(lmdb_dir, tmp_path_factory):
  """Starts a 2-device run and a 2-process jax.distributed run (1 device each) in the background."""
  root = tmp_path_factory.mktemp("parallel")
  two_devices = subprocess.Popen(_cli(lmdb_dir, root / "two_devices"), env=_env(2), cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  address = f"--coordinator_address=127.0.0.1:{_free_port()}"
  processes = [subprocess.Popen(_cli(lmdb_dir, root / "two_processes", address, "--num_processes=2",
                                     f"--process_id={i}"), env=_env(1), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  runs = {"two_devices": (root / "two_devices", [two_devices]),
          "two_processes": (root / "two_processes", processes)}
  yield runs
  for _, procs in runs.values():
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()


@pytest.fixture(scope="module")
def reference(lmdb_dir, parallel_runs, tmp_path_factory):
  """An uninterrupted single-device run of all 6 steps: (workdir, final metrics, latest params)."""
  workdir = tmp_path_factory.mktemp("reference")
  metrics = loop.train_and_evaluate(_config(lmdb_dir), workdir)
  return workdir, metrics, restore_params(workdir, which="latest")


def test_one_step_is_finite_and_a_few_lower_the_loss(lmdb_dir):
  config = _config(lmdb_dir)
  config.train.warmup_epochs = 0
  config.train.learning_rate = 1e-2
  config.train.eps = 1e-8
  ds = loop.open_split(config.data, "train")
  batch = loop.train_inputs(ds.make_batch(np.arange(4)))
  model = build_model(config)
  optimizer = make_optimizer(config.train, steps_per_epoch=100)
  state = init_train_state(model, optimizer, jax.random.key(0), batch)
  step = jax.jit(lambda s, b: train_step(s, b, model=model, optimizer=optimizer, loss_config=config.loss))
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses[0]) and losses[0] > 0
  assert int(state.step) == 8
  assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.97 * losses[0], losses


def test_reference_run_logs_checkpoints_and_config(reference, lmdb_dir):
  workdir, metrics, params = reference
  assert metrics["step"] == STEPS
  for k in (6, 1):
    for name in ("minADE", "minFDE", "MR", "brier_minFDE"):
      assert np.isfinite(metrics[f"val/{name}_k{k}"])
  assert metrics["val/num_sequences"] == NUM_VAL
  rows = _jsonl(workdir)
  assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
  val = {r["step"]: r["val/minFDE_k6"] for r in rows if "val/minFDE_k6" in r}
  assert sorted(val) == [3, 6]                          # every epoch end
  best, meta = restore_params(workdir, which="best", with_meta=True)
  assert meta["step"] == min(val, key=val.get) and meta["val/minFDE_k6"] == min(val.values())
  manager = latest_manager(checkpoint_dir(workdir), keep=3)
  assert list(manager.all_steps()) == [3, 4, 6]         # saved 2, 3, 4, 6; the last 3 kept
  manager.close()
  assert load_run_config(workdir).to_dict() == _config(lmdb_dir).to_dict()
  assert jax.tree.structure(best) == jax.tree.structure(params)


def test_kill_and_resume_equals_uninterrupted(reference, lmdb_dir, tmp_path):
  ref_dir, _, ref_params = reference
  config = _config(lmdb_dir)
  # Killed after step 5: the last checkpoint is step 4 (epoch 1, batch 0); step 5 is redone on resume.
  assert loop.train_and_evaluate(config, tmp_path, stop_after_steps=5) == {"step": 5, "stopped": True}
  params, meta = restore_params(tmp_path, which="latest", with_meta=True)
  assert meta["step"] == 4
  metrics = loop.train_and_evaluate(config, tmp_path)
  assert metrics["step"] == STEPS
  for x, y in zip(jax.tree.leaves(restore_params(tmp_path, which="latest")), jax.tree.leaves(ref_params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert [r["step"] for r in _jsonl(tmp_path)] == [r["step"] for r in _jsonl(ref_dir)]  # step 5 logged once
  assert _losses(tmp_path) == _losses(ref_dir)


def test_resuming_a_workdir_of_another_model_says_so(reference, lmdb_dir, tmp_path):
  """A checkpoint written by another model structure (here: one more subgraph layer) is refused
  with StaleCheckpointError naming the directory, not orbax's tree dump."""
  import shutil
  from densetnt_jax.train.checkpoint import StaleCheckpointError
  ref_dir, _, _ = reference
  shutil.copytree(os.path.join(ref_dir, "float"), tmp_path / "float")
  config = _config(lmdb_dir)
  config.model.depth = config.model.depth + 1             # one more subgraph layer: another variable tree
  with pytest.raises(StaleCheckpointError, match="holds another model's variables"):
    loop.train_and_evaluate(config, tmp_path)


@pytest.mark.parametrize("run", ["two_devices", "two_processes"])
def test_data_parallel_equals_one_device(run, parallel_runs, reference):
  ref_dir, _, ref_params = reference
  workdir, procs = parallel_runs[run]
  for i, proc in enumerate(procs):
    _wait(proc, f"{run} process {i}")
  _assert_trees_close(restore_params(workdir, which="latest"), ref_params, atol=1e-6)
  ref_losses = _losses(ref_dir)
  losses = _losses(workdir)
  assert sorted(losses) == sorted(ref_losses)
  np.testing.assert_allclose([losses[s] for s in ref_losses], list(ref_losses.values()), rtol=1e-6)


def test_nonfinite_loss_names_the_step_and_keeps_the_last_good_checkpoint(reference, lmdb_dir, tmp_path,
                                                                          monkeypatch):
  ref_dir = reference[0]
  calls, clean = [], loop.train_inputs

  def poisoned(scene):          # call 1 builds the init example; call s + 1 feeds training step s
    calls.append(1)
    inputs = clean(scene)
    if len(calls) == 5:
      inputs["future_Fx2"] = np.full_like(inputs["future_Fx2"], np.nan)
    return inputs

  monkeypatch.setattr(loop, "train_inputs", poisoned)
  with pytest.raises(loop.NonFiniteLossError, match="training step 4 ") as info:
    loop.train_and_evaluate(_config(lmdb_dir), tmp_path)
  assert info.value.step == 4 and isinstance(info.value, FloatingPointError)
  params, meta = restore_params(tmp_path, which="latest", with_meta=True)
  assert meta["step"] == 3                               # the failed step 4 was not saved
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  _assert_trees_close(params, restore_params(ref_dir, which="latest", step=3), atol=0)


def test_config_errors(lmdb_dir, tmp_path, monkeypatch):
  config = _config(lmdb_dir)
  with pytest.raises(FileNotFoundError, match="run --stage=calibration first"):
    loop.train_and_evaluate(config, tmp_path, stage="qat")
  with pytest.raises(ValueError, match="calibration and int are conversions"):
    loop.train_and_evaluate(config, tmp_path, stage="int")
  config.data.lmdb_dir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="argoverse_packer"):
    loop.train_and_evaluate(config, tmp_path)
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  with pytest.raises(ValueError, match="batch_size=4 does not divide over 8 devices"):
    loop.check_batch_sizes(_config(lmdb_dir).train)


def test_cli_rejects_a_mistyped_override_and_a_stage_without_its_input(lmdb_dir, tmp_path):
  typo = subprocess.run(_cli(lmdb_dir, tmp_path, "--config.train.batchsize=3"), env=_env(1), cwd=ROOT,
                        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
  assert typo.returncode != 0 and "batch_size" in typo.stderr
  qat = subprocess.run(_cli(lmdb_dir, tmp_path, "--stage=qat"), env=_env(1), cwd=ROOT, capture_output=True,
                       text=True, timeout=SUBPROCESS_TIMEOUT_S)
  assert qat.returncode != 0 and "run --stage=calibration first" in qat.stderr
  assert not os.path.exists(tmp_path / "float") and not os.path.exists(tmp_path / "qat")
