"""A run's workdir: where each stage leaves its result, and the integer program read back without the trainer.

Layout (one workdir per experiment; the stages float/calibration/qat/int share it):
  {workdir}/config.json                    the config of the last run (`train.checkpoint.load_config`)
  {workdir}/{stage}/checkpoints/{step}/    the last `keep_checkpoints` states: items params, opt_state, meta
                                           (+ quant for qat)
  {workdir}/{stage}/best/{step}/           the state with the lowest val minFDE_k6: items params, meta (+ quant)
  {workdir}/{stage}/metrics.jsonl          one JSON object per log line (train/*, val/*)
  {workdir}/calibration/best/0/            the calibrated model: params (the float best's), quant, meta
  {workdir}/int/program/                   the integer program (`load_program`)
  {workdir}/deploy/model.dtnt              the compiled artifact (bin/compile_perf.py)
  {workdir}/export/densetnt_int.onnx       the integer ONNX export (bin/export_onnx.py --stage=int)

Imports the program reader only (jax and numpy; no flax, no orbax): deploy and eval find a program here, and
the checkpoints are read by `densetnt_jax.train.checkpoint`.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib

from densetnt_jax.quant.program import load_program as _load_program

PROJECT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "argo.py"   # absent on a deployment host

STAGES = ("float", "calibration", "qat", "int")
STAGE_INPUT = {"calibration": "float", "qat": "calibration", "int": "qat"}   # stage -> the stage it starts from
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
PROGRAM_DIR = "program"
ARTIFACT_NAME = "model.dtnt"


class MissingStageError(FileNotFoundError):
  """A stage's input (the previous stage's checkpoint or program) is not in the workdir."""


def run_hint(stage: str, workdir) -> str:
  """The command that writes a stage's result into `workdir`."""
  return f"python bin/train.py --stage={stage} --config=... --workdir={workdir}"


def checkpoint_dir(workdir, stage: str = "float", which: str = "latest") -> str:
  if which not in ("latest", "best"):
    raise ValueError(f"which must be 'latest' or 'best'; got {which!r}")
  return os.path.join(os.path.abspath(str(workdir)), stage, LATEST_DIR if which == "latest" else BEST_DIR)


def program_dir(workdir) -> str:
  return os.path.join(os.path.abspath(str(workdir)), "int", PROGRAM_DIR)


def config_from(spec: str):
  """"configs/argo.py:demo,target=int8" -> its ConfigDict, as `--config=` reads it (a notebook's way in)."""
  path, _, variant = str(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location("densetnt_config", path)
  if module_spec is None:
    raise FileNotFoundError(f"config file {path!r} is not a .py file; give one like configs/argo.py[:demo]")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def load_program(workdir):
  """The int stage's program, or a MissingStageError saying to run it."""
  path = program_dir(workdir)
  if not os.path.isdir(path):
    raise MissingStageError(f"no integer program in {path}: run --stage=int first:\n  {run_hint('int', workdir)}")
  return _load_program(path)


def artifact_path(workdir) -> str:
  """Where bin/compile_perf.py writes the compiled artifact."""
  return os.path.join(str(workdir), "deploy", ARTIFACT_NAME)


def onnx_path(workdir, stage: str) -> str:
  """Where bin/export_onnx.py writes a stage's ONNX export."""
  return os.path.join(str(workdir), "export", f"densetnt_{stage}.onnx")


def deployed_paths(workdir) -> tuple[str, str]:
  """(compiled artifact, integer ONNX) of a workdir."""
  return artifact_path(workdir), onnx_path(workdir, "int")
