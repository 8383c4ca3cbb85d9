"""Shared fixtures: the real Argoverse 1.1 sample (../shared/data/argoverse1) and the project config."""
import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGO = pathlib.Path(os.environ.get("ARGOVERSE1_SHARED", ROOT.parent / "shared" / "data" / "argoverse1"))


def load_config(variant: str = ""):
  spec = importlib.util.spec_from_file_location("argo_config", ROOT / "configs" / "argo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def tiny_config(lmdb_dir, overrides: dict):
  """`configs/argo.py:tiny` reading `lmdb_dir`, with {"section.name": value} overrides."""
  c = load_config("tiny")
  c.data.lmdb_dir = str(lmdb_dir)
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


@pytest.fixture(scope="session")
def argo_dir() -> pathlib.Path:
  """The real data. Missing data is an error, not a skip: CI always has shared/ beside the checkout."""
  if not (ARGO / "map_files").is_dir():
    raise FileNotFoundError(f"real Argoverse sample not found at {ARGO}; set ARGOVERSE1_SHARED")
  return ARGO


@pytest.fixture(scope="session")
def config():
  return load_config()
