"""Checkpoints of a run: orbax managers for the latest and the best states, and helpers to read them back.

Layout of a workdir (one per experiment; the stages float/calibration/qat/int share it):
  {workdir}/config.json                    the config of the last run (`load_config`)
  {workdir}/{stage}/checkpoints/{step}/    the last `keep_checkpoints` states: items params, opt_state, meta
                                           (+ quant for qat)
  {workdir}/{stage}/best/{step}/           the state with the lowest val minFDE_k6: items params, meta (+ quant)
  {workdir}/{stage}/metrics.jsonl          one JSON object per log line (train/*, val/*)
  {workdir}/calibration/best/0/            the calibrated model: params (the float best's), quant, meta
  {workdir}/int/program/                   the integer program (`densetnt_jax.quant.load_program`)

`params` and `quant` (the fake-quant scales) are items of their own, so evaluation and inference restore them
with no optimizer and no template (`restore_params`, `restore_stage`). `meta` is JSON: {"step", "epoch",
"steps_per_epoch", "stage"} (+ val metrics for best).
"""
from __future__ import annotations

import json
import logging as std_logging
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
BEST_METRIC = "val/minFDE_k6"           # lower is better
STAGES = ("float", "calibration", "qat", "int")


def checkpoint_dir(workdir, stage: str = "float", which: str = "latest") -> str:
  if which not in ("latest", "best"):
    raise ValueError(f"which must be 'latest' or 'best'; got {which!r}")
  return os.path.join(os.path.abspath(str(workdir)), stage, LATEST_DIR if which == "latest" else BEST_DIR)


def _handlers(with_opt_state: bool) -> dict:
  handlers = {"params": ocp.StandardCheckpointHandler(), "quant": ocp.StandardCheckpointHandler(),
              "meta": ocp.JsonCheckpointHandler()}
  if with_opt_state:
    handlers["opt_state"] = ocp.StandardCheckpointHandler()
  return handlers


def latest_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  """The rolling manager: keeps the last `keep` saves (params, opt_state, meta)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
  return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers(True))


def best_manager(directory: str) -> ocp.CheckpointManager:
  """Keeps the one save with the lowest `BEST_METRIC` (params, meta). Synchronous: two managers saving
  asynchronously at once break orbax's multi-process commit (seen with 2 processes: "ArrayMetadata Store
  contains metadata from just one process"), so wait on the latest manager before saving here."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda m: float(m[BEST_METRIC]), best_mode="min",
      keep_checkpoints_without_metrics=False, create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers(False))


def single_manager(directory: str) -> ocp.CheckpointManager:
  """A synchronous manager of one checkpoint (params, quant, meta): the calibration stage's result."""
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers(False))


def save(manager: ocp.CheckpointManager, step: int, *, params, meta: dict, opt_state=None, quant=None,
         metrics: dict | None = None) -> None:
  """Saves one step (asynchronously; `manager.wait_until_finished()` before reading it back)."""
  items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
  if opt_state is not None:
    items["opt_state"] = ocp.args.StandardSave(opt_state)
  if quant is not None:
    items["quant"] = ocp.args.StandardSave(quant)
  manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)


class StaleCheckpointError(ValueError):
  """A workdir checkpoint whose variable tree is not the current model's."""


def restore_into(manager: ocp.CheckpointManager, step: int, params_target, opt_state_target,
                 quant_target=None):
  """(params, opt_state, meta) of `step`, with the shapes, dtypes and shardings of the targets; with a
  `quant_target`, (params, opt_state, quant, meta)."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  items = dict(params=ocp.args.StandardRestore(abstract(params_target)),
               opt_state=ocp.args.StandardRestore(abstract(opt_state_target)), meta=ocp.args.JsonRestore())
  if quant_target is not None:
    items["quant"] = ocp.args.StandardRestore(abstract(quant_target))
  try:
    out = manager.restore(int(step), args=ocp.args.Composite(**items))
  except ValueError as e:
    if "tree structures do not match" not in str(e):
      raise
    raise StaleCheckpointError(
        f"the checkpoint at step {step} in {manager.directory} holds another model's variables (written by an "
        "older version or another config): start a new --workdir or remove this one (make clean for the "
        f"demo). Orbax: {str(e).splitlines()[0]}") from None
  if quant_target is not None:
    return out["params"], out["opt_state"], out["quant"], out["meta"]
  return out["params"], out["opt_state"], out["meta"]


def _read_only(directory: str, which: str, stage: str = "float") -> ocp.CheckpointManager:
  if not os.path.isdir(directory):
    run = f"python bin/train.py --stage={stage} --config=configs/argo.py --workdir=..."
    trained = stage in ("float", "qat")
    hint = (f"the stage has no {'validated ' if trained else ''}checkpoint yet (run it: {run}"
            f"{'; or use which=latest' if trained else ''})" if which == "best" else f"run the stage first: {run}")
    raise FileNotFoundError(f"no checkpoints in {directory}: {hint}")
  options = ocp.CheckpointManagerOptions(create=False, save_root_metadata=False)
  return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers(which == "latest"))


def restore_stage(workdir, stage: str = "float", which: str = "best", step: int | None = None
                  ) -> tuple[dict, dict | None, dict]:
  """(params, quant or None, meta) of a stage's checkpoint, on the first local device, without a template.

  `which="best"`: the lowest val minFDE_k6 (calibration: its one checkpoint); `"latest"`: the last save;
  `step` picks one save explicitly. Restores onto one device whatever mesh the run trained on.
  """
  quiet_orbax_logging()
  directory = checkpoint_dir(workdir, stage, which)
  manager = _read_only(directory, which, stage)
  try:
    if step is None:
      step = manager.best_step() if which == "best" else manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(f"no checkpoint{'' if step is None else f' at step {step}'} in {directory} "
                              f"(saved steps: {list(manager.all_steps())})")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(item: str):
      tree = manager.item_metadata(step)[item]
      tree = getattr(tree, "tree", tree)
      return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=device),
                          tree)

    items = dict(params=ocp.args.StandardRestore(target("params")), meta=ocp.args.JsonRestore())
    has_quant = os.path.isdir(os.path.join(directory, str(step), "quant"))
    if has_quant:
      items["quant"] = ocp.args.StandardRestore(target("quant"))
    out = manager.restore(step, args=ocp.args.Composite(**items))
  finally:
    manager.close()
  return out["params"], (out["quant"] if has_quant else None), out["meta"]


def restore_params(workdir, stage: str = "float", which: str = "best", step: int | None = None,
                   with_meta: bool = False):
  """The params of a run (a nested dict of jax arrays on the first local device), without an optimizer
  (see `restore_stage`). `with_meta=True` returns (params, meta)."""
  params, _, meta = restore_stage(workdir, stage, which, step)
  return (params, meta) if with_meta else params


class _DropOrbaxInfo(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logging() -> None:
  """Orbax logs each save in ~50 INFO lines through absl; keep only its warnings and errors."""
  logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
    logger.addFilter(_DropOrbaxInfo())


def save_config(config: ml_collections.ConfigDict, workdir) -> dict:
  """Writes `{workdir}/config.json`; returns {key: (old, new)} for keys that differ from the one there."""
  path = os.path.join(str(workdir), "config.json")
  new = json.loads(config.to_json_best_effort(sort_keys=True))
  diff = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    old_flat = _flat(old)
    diff = {k: (old_flat.get(k), v) for k, v in _flat(new).items() if old_flat.get(k) != v}
  os.makedirs(str(workdir), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(new, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return diff


def load_config(workdir) -> ml_collections.ConfigDict:
  """The config a run was trained with (`{workdir}/config.json`), as a ConfigDict."""
  path = os.path.join(str(workdir), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir (bin/train.py --workdir)?")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def _tuples(tree):
  """JSON arrays back to the tuples the config file wrote (a ConfigDict field keeps its first type)."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
