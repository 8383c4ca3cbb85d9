"""Damaged checkpoints: a latest step that does not restore is reported (directory, step, why) and the resume
falls back to the newest intact step; none intact is an error that moves nothing; a damaged best checkpoint is
an error naming its path and step and what to do (not orbax's bare JSONDecodeError).

Checkpoints of a small tree saved with `checkpoint.save` (no model, no training): steps 2, 4, 6 of a latest
manager and a best checkpoint at step 4.
"""
import glob
import logging
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from densetnt_jax.train import checkpoint as ckpt

STEPS = (2, 4, 6)


def _params(step: int) -> dict:
  return {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3) + step, "bias": jnp.full((3,), float(step))}}


OPT_STATE = {"mu": jnp.zeros(3), "count": jnp.asarray(0, jnp.int32)}


def _meta(step: int) -> dict:
  return {"step": step, "epoch": 0, "steps_per_epoch": 10, "stage": "float"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  """A workdir with float/checkpoints/{2,4,6} and float/best/4."""
  workdir = tmp_path_factory.mktemp("checkpoints")
  latest = ckpt.latest_manager(ckpt.checkpoint_dir(workdir, "float", "latest"), keep=3)
  for step in STEPS:
    ckpt.save(latest, step, params=_params(step), opt_state=OPT_STATE, meta=_meta(step))
  latest.wait_until_finished()
  latest.close()
  best = ckpt.best_manager(ckpt.checkpoint_dir(workdir, "float", "best"))
  ckpt.save(best, 4, params=_params(4), meta=dict(_meta(4), **{ckpt.BEST_METRIC: 1.5}),
            metrics={ckpt.BEST_METRIC: 1.5})
  best.close()
  return workdir


@pytest.fixture
def workdir(pristine, tmp_path):
  shutil.copytree(pristine, tmp_path / "run")
  return tmp_path / "run"


def _empty(path):
  open(path, "w").close()


def _truncate_arrays(step_dir):
  for path in glob.glob(os.path.join(step_dir, "params", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _remove_arrays(step_dir):
  for path in glob.glob(os.path.join(step_dir, "params", "**", "d", "*"), recursive=True):
    os.remove(path)


DAMAGE = {
    "empty _METADATA": (lambda d: _empty(os.path.join(d, "params", "_METADATA")), "params/_METADATA is empty"),
    "garbage _METADATA": (lambda d: open(os.path.join(d, "params", "_METADATA"), "w").write("{not json"),
                          "params/_METADATA is not JSON"),
    "truncated array files": (_truncate_arrays, "ValueError"),
    "missing array files": (_remove_arrays, "NOT_FOUND"),
    "missing meta item": (lambda d: shutil.rmtree(os.path.join(d, "meta")), "meta"),
}


def _restore_latest(workdir):
  manager = ckpt.latest_manager(ckpt.checkpoint_dir(workdir, "float", "latest"), keep=3)
  try:
    return ckpt.restore_newest_intact(manager, _params(0), OPT_STATE), manager
  finally:
    manager.close()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_step_falls_back_to_the_newest_intact_one(workdir, damage, caplog):
  directory = ckpt.checkpoint_dir(workdir, "float", "latest")
  corrupt, why = DAMAGE[damage]
  corrupt(os.path.join(directory, "6"))
  with caplog.at_level(logging.WARNING):
    (params, _, meta), manager = _restore_latest(workdir)
  assert meta["step"] == 4
  np.testing.assert_array_equal(np.asarray(params["dense"]["kernel"]), np.asarray(_params(4)["dense"]["kernel"]))
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "does not restore" in r.getMessage()]
  assert len(warnings) == 1, warnings                      # one line: directory, step, why, where it resumes
  assert f"checkpoint step 6 does not restore in {directory}" in warnings[0]
  assert why in warnings[0] and "resuming from step 4" in warnings[0]
  assert sorted(os.listdir(directory)) == ["2", "4"]       # the damaged step is kept aside, not deleted
  assert os.listdir(directory + ckpt.CORRUPT_SUFFIX) == ["6"]


def test_the_resumed_run_saves_the_damaged_step_again(workdir):
  directory = ckpt.checkpoint_dir(workdir, "float", "latest")
  _empty(os.path.join(directory, "6", "params", "_METADATA"))
  manager = ckpt.latest_manager(directory, keep=3)
  assert ckpt.restore_newest_intact(manager, _params(0), OPT_STATE)[-1]["step"] == 4
  for step in (5, 6):
    ckpt.save(manager, step, params=_params(step), opt_state=OPT_STATE, meta=_meta(step))
  manager.wait_until_finished()
  assert list(manager.all_steps()) == [4, 5, 6]
  assert ckpt.restore_newest_intact(manager, _params(0), OPT_STATE)[-1]["step"] == 6
  manager.close()


def test_no_intact_step_is_an_error_and_moves_nothing(workdir):
  directory = ckpt.checkpoint_dir(workdir, "float", "latest")
  for step in STEPS:
    _empty(os.path.join(directory, str(step), "params", "_METADATA"))
  with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint in .* restores \(steps \[6, 4, 2\]; step 6: "
                     r"params/_METADATA is empty\): restore the directory from a copy") as e:
    _restore_latest(workdir)
  assert e.value.path == directory and e.value.step == 6
  assert sorted(os.listdir(directory)) == ["2", "4", "6"] and not os.path.exists(directory + ckpt.CORRUPT_SUFFIX)


def test_a_checkpoint_of_another_model_is_refused_without_falling_back(workdir):
  manager = ckpt.latest_manager(ckpt.checkpoint_dir(workdir, "float", "latest"), keep=3)
  other = {"dense": {"kernel": jnp.zeros((2, 3))}}                   # no bias: another variable tree
  with pytest.raises(ckpt.StaleCheckpointError, match="holds another model's variables"):
    ckpt.restore_newest_intact(manager, other, OPT_STATE)
  manager.close()
  assert sorted(os.listdir(ckpt.checkpoint_dir(workdir, "float", "latest"))) == ["2", "4", "6"]


def test_a_damaged_best_checkpoint_names_its_path_step_and_what_to_do(workdir):
  import densetnt_jax
  best = os.path.join(ckpt.checkpoint_dir(workdir, "float", "best"), "4")
  _empty(os.path.join(best, "params", "_METADATA"))
  with pytest.raises(ckpt.CheckpointError) as e:
    ckpt.restore_params(workdir)
  message = str(e.value)
  assert message.startswith(f"checkpoint {best} (step 4) does not restore: params/_METADATA is empty; ")
  assert "--which=latest" in message and e.value.path == best and e.value.step == 4
  with pytest.raises(ckpt.CheckpointError, match="params/_METADATA is empty"):   # no silent use of latest
    densetnt_jax.load(workdir, "float", config=load_config("tiny"))
  params = ckpt.restore_params(workdir, which="latest")                        # what the message offers
  np.testing.assert_array_equal(np.asarray(params["dense"]["bias"]), np.full(3, 6.0))
