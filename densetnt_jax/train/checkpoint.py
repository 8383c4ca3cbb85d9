"""Checkpoints of a run: orbax managers for the latest and the best states, and helpers to read them back
(`load_stage_input`: the checkpoint a stage after float starts from). Where they lie: `densetnt_jax.workdir`.

`params` and `quant` (the fake-quant scales) are items of their own, so evaluation and inference restore them
with no optimizer and no template (`restore_params`, `restore_stage`). `meta` is JSON: {"step", "epoch",
"steps_per_epoch", "stage"} (+ val metrics for best).
"""
from __future__ import annotations

import glob
import json
import logging as std_logging
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from densetnt_jax.workdir import STAGE_INPUT, MissingStageError, checkpoint_dir, run_hint

CORRUPT_SUFFIX = "_corrupt"              # {stage}/checkpoints_corrupt/{step}: latest steps that did not restore
BEST_METRIC = "val/minFDE_k6"           # lower is better


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


class CheckpointError(ValueError):
  """A checkpoint that does not restore (damaged, empty or missing files): `path` (its step directory),
  `step` and `why` (the cause in a line)."""

  def __init__(self, message: str, path: str, step: int, why: str = ""):
    super().__init__(message)
    self.path, self.step, self.why = path, step, why


class StaleCheckpointError(CheckpointError):
  """A workdir checkpoint whose variable tree is not the current model's."""


WHY_MAX_CHARS = 300
_JSON_FILES = ("_CHECKPOINT_METADATA", "*/_METADATA", "*/_sharding", "*/metadata", "*/array_metadatas/*")


def step_path(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(os.fspath(manager.directory), str(step))


def _why(error: BaseException, path: str) -> str:
  """Orbax's or tensorstore's error as one short line, naming the damaged file where it can be told (orbax's
  JSONDecodeError names none)."""
  if isinstance(error, json.JSONDecodeError):
    for pattern in _JSON_FILES:
      for file in sorted(glob.glob(os.path.join(path, pattern))):
        try:
          with open(file) as f:
            json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
          problem = "empty" if os.path.getsize(file) == 0 else f"not JSON: {e}"
          return f"{os.path.relpath(file, path)} is {problem}"
  text = str(error).split(" [tensorstore_spec=")[0].replace(path + os.sep, "")
  text = " ".join(text.split())
  text = f"{type(error).__name__}: {text}"
  return text if len(text) <= WHY_MAX_CHARS else text[:WHY_MAX_CHARS - 3] + "..."


def _check_meta(meta, keys=("step",)) -> None:
  """Raises ValueError unless `meta` is a dict with these integer keys (the loop reads them)."""
  if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in keys):
    raise ValueError(f"meta/metadata is {str(meta)[:80]!r}, not a dict with integer {list(keys)}")


def restore_into(manager: ocp.CheckpointManager, step: int, params_target, opt_state_target,
                 quant_target=None):
  """(params, opt_state, meta) of `step`, with the shapes, dtypes and shardings of the targets; with a
  `quant_target`, (params, opt_state, quant, meta). A step that does not restore raises CheckpointError
  (StaleCheckpointError when it holds another model's variables)."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  items = dict(params=ocp.args.StandardRestore(abstract(params_target)),
               opt_state=ocp.args.StandardRestore(abstract(opt_state_target)), meta=ocp.args.JsonRestore())
  if quant_target is not None:
    items["quant"] = ocp.args.StandardRestore(abstract(quant_target))
  path = step_path(manager, step)
  try:
    out = manager.restore(int(step), args=ocp.args.Composite(**items))
    _check_meta(out["meta"], ("step", "steps_per_epoch"))
  except Exception as e:    # noqa: BLE001: orbax and tensorstore raise many types for damaged files
    if isinstance(e, ValueError) and "tree structures do not match" in str(e):
      raise StaleCheckpointError(
          f"the checkpoint at step {step} in {manager.directory} holds another model's variables (written by an "
          "older version or another config): start a new --workdir or remove this one (make clean for the "
          f"demo). Orbax: {str(e).splitlines()[0]}", path, int(step)) from None
    why = _why(e, path)
    raise CheckpointError(f"checkpoint {path} (step {step}) does not restore: {why}", path, int(step), why) from e
  if quant_target is not None:
    return out["params"], out["opt_state"], out["quant"], out["meta"]
  return out["params"], out["opt_state"], out["meta"]


def restore_newest_intact(manager: ocp.CheckpointManager, params_target, opt_state_target, quant_target=None):
  """`restore_into` of the newest step that restores, or None when there is no step.

  Newer steps that fail are reported in one warning line (directory, steps, why) and, once an older one has
  restored, moved to `{directory}_corrupt/` so the resumed run can save those steps again (the files are kept
  for a look, nothing is deleted). If no step restores, CheckpointError lists them and nothing is moved: a
  re-run does not silently start over.
  """
  failed: list[CheckpointError] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = restore_into(manager, step, params_target, opt_state_target, quant_target)
    except StaleCheckpointError:
      raise
    except CheckpointError as e:
      failed.append(e)
      continue
    if failed:
      steps = [e.step for e in failed]
      moved = _set_aside(manager, steps)
      which = f"step {steps[0]} does" if len(steps) == 1 else f"steps {', '.join(map(str, steps))} do"
      logging.warning("checkpoint %s not restore in %s (step %d: %s); resuming from step %d, the newest intact "
                      "one (the damaged steps moved to %s)", which, manager.directory, steps[0], failed[0].why,
                      step, moved)
    return restored
  if failed:
    steps = [e.step for e in failed]
    raise CheckpointError(
        f"no checkpoint in {manager.directory} restores (steps {steps}; step {steps[0]}: {failed[0].why}): "
        f"restore the directory from a copy, or move it away to train this stage from the start",
        os.fspath(manager.directory), steps[0], failed[0].why)
  return None


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> str:
  """Moves the step directories to `{directory}_corrupt/{step}[-n]` (process 0; every process waits) and
  reloads the manager's step list. -> the destination directory."""
  dest_root = os.fspath(manager.directory) + CORRUPT_SUFFIX
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    for step in steps:
      dest, n = os.path.join(dest_root, str(step)), 0
      while os.path.exists(dest):
        n += 1
        dest = os.path.join(dest_root, f"{step}-{n}")
      shutil.move(step_path(manager, step), dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside damaged checkpoints {steps}")
  manager.reload()
  return dest_root


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
    path = step_path(manager, step)
    try:
      params, quant, meta = _restore_without_template(manager, step, path)
    except Exception as e:    # noqa: BLE001: orbax and tensorstore raise many types for damaged files
      why = _why(e, path)
      raise CheckpointError(f"checkpoint {path} (step {step}) does not restore: {why}; "
                            f"{_restore_hint(stage, which)}", path, int(step), why) from e
  finally:
    manager.close()
  return params, quant, meta


def load_stage_input(workdir, stage: str) -> tuple[dict, dict | None]:
  """(params, quant or None) of the checkpoint `stage` starts from: the best of the previous stage."""
  if stage not in STAGE_INPUT:
    raise ValueError(f"stage {stage!r} has no input checkpoint; stages with one: {list(STAGE_INPUT)}")
  prev = STAGE_INPUT[stage]
  try:
    params, quant, meta = restore_stage(workdir, prev, "best")
  except FileNotFoundError as e:
    raise MissingStageError(
        f"--stage={stage} starts from the {prev} stage's best checkpoint, and there is none in "
        f"{checkpoint_dir(workdir, prev, 'best')}: run --stage={prev} first:\n  "
        f"{run_hint(prev, workdir)}") from e
  if prev != "float" and quant is None:
    raise MissingStageError(f"{checkpoint_dir(workdir, prev, 'best')} (step {meta.get('step')}) has no "
                            f"quant state: it was not written by --stage={prev}; run --stage={prev} again")
  logging.info("--stage=%s starts from %s step %s", stage, checkpoint_dir(workdir, prev, "best"),
               meta.get("step"))
  return params, quant


def _restore_without_template(manager: ocp.CheckpointManager, step: int, path: str):
  """(params, quant or None, meta) of `step` on the first local device, shapes from the saved metadata."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def target(item: str):
    tree = manager.item_metadata(step)[item]
    tree = getattr(tree, "tree", tree)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=device), tree)

  items = dict(params=ocp.args.StandardRestore(target("params")), meta=ocp.args.JsonRestore())
  has_quant = os.path.isdir(os.path.join(path, "quant"))
  if has_quant:
    items["quant"] = ocp.args.StandardRestore(target("quant"))
  out = manager.restore(step, args=ocp.args.Composite(**items))
  _check_meta(out["meta"])
  return out["params"], (out["quant"] if has_quant else None), out["meta"]


def _restore_hint(stage: str, which: str) -> str:
  """What to do about a damaged checkpoint of a stage."""
  if stage == "calibration":
    return "re-run --stage=calibration (it rewrites its one checkpoint) or restore the files from a copy"
  if which == "best":
    return ("restore the files from a copy, or use the last saved state instead (bin/eval.py --which=latest; "
            "densetnt_jax.load(..., which='latest'))")
  return "restore the files from a copy, or pick an older step (step=...; its steps are listed in the directory)"


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
