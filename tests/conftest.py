"""Shared fixtures: the real Argoverse 1.1 sample (../shared/data/argoverse1) and the project config."""
import os
import pathlib

import pytest

from densetnt_jax.workdir import config_from

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGO = pathlib.Path(os.environ.get("ARGOVERSE1_SHARED", ROOT.parent / "shared" / "data" / "argoverse1"))


def load_config(variant: str = ""):
  return config_from(f"{ROOT / 'configs' / 'argo.py'}:{variant}")


def tiny_config(lmdb_dir, overrides: dict):
  """`configs/argo.py:tiny` reading `lmdb_dir`, with {"section.name": value} overrides."""
  c = load_config("tiny")
  c.data.lmdb_dir = str(lmdb_dir)
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def pack_real_subset(argo_dir, root, num_train: int, num_val: int, data_config):
  """The first `num_train` train and `num_val` val CSVs of the real sample (symlinked under root/src, no copies)
  packed to root/lmdb; returns that LMDB dir. A scene that fails to pack is an error."""
  from densetnt_jax.data.pack import pack_split
  src = root / "src"
  for split, n in (("train", num_train), ("val", num_val)):
    (src / split / "data").mkdir(parents=True)
    for f in sorted((argo_dir / split / "data").glob("*.csv"))[:n]:
      os.symlink(f, src / split / "data" / f.name)
  os.symlink(argo_dir / "map_files", src / "map_files")
  for split in ("train", "val"):
    summary = pack_split(src, split, root / "lmdb", data_config, num_workers=1, progress=False)
    assert not summary.failed, summary.format()
  return root / "lmdb"


@pytest.fixture(scope="session")
def argo_dir() -> pathlib.Path:
  """The real data. Missing data is an error, not a skip: CI always has shared/ beside the checkout."""
  if not (ARGO / "map_files").is_dir():
    raise FileNotFoundError(f"real Argoverse sample not found at {ARGO}; set ARGOVERSE1_SHARED")
  return ARGO


@pytest.fixture(scope="session")
def config():
  return load_config()


def init_params(model, batch, seed: int = 0):
  """The model's params for `batch`'s shapes, through a jitted init (eager init of the dense decoder takes ~5x
  longer; the params are identical)."""
  import functools
  import jax
  return jax.jit(functools.partial(model.init, train=True))(jax.random.key(seed), batch)["params"]


def calibrated_tiny(config) -> dict:
  """{config, model, batches (3 random-but-valid batches of 4), params (random init), q0 (initial quant state),
  quant (calibrated on the batches, the config's int16 globs), program (convert at those)} of a tiny config."""
  import numpy as np
  from test_model import random_batch
  from densetnt_jax.model import build_model
  from densetnt_jax.quant import calibrate, convert, init_quant_state

  config.quant.calibration_batches = 3
  model = build_model(config)
  d = config.data
  rng = np.random.default_rng(0)
  batches = [random_batch(rng, 4, d.max_traj_num, d.max_lane_num, d.max_goals_num) for _ in range(3)]
  params = init_params(model, batches[0])
  q0 = init_quant_state(model, params, batches[0], config.quant)
  quant = calibrate(model, params, q0, iter(batches), config.quant)
  program = convert(model, params, quant, batches[0], config)
  return dict(config=config, model=model, batches=batches, params=params, q0=q0, quant=quant, program=program)


@pytest.fixture(scope="session")
def tiny_quant():
  """A calibrated tiny model and its integer program (`calibrated_tiny`), shared by the quantization and
  deployment tests: the tiny config's HAT decoder (sparse goals, NMS); `tiny_dense` has DenseTNT's dense stage
  and goal-set selection."""
  config = load_config("tiny")
  config.model.depth, config.model.goal_offset = 1, False
  return calibrated_tiny(config)


@pytest.fixture(scope="session")
def tiny_dense():
  """`tiny_quant` with DenseTNT's dense goal stage (4 seeds, 40 dense points), lane scoring with attention to
  the top 4 lanes, the goal-set optimiser and the endpoint shift: the same keys."""
  config = load_config("tiny")
  config.model.dense_seeds, config.model.lane_scoring = 4, True
  config.model.lane_top_k = 4
  config.postprocess.selection, config.postprocess.endpoint = "mr", "shift"
  return calibrated_tiny(config)
