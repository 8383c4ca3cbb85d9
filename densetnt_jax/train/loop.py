"""The training loop of the float and QAT stages: `train_and_evaluate(config, workdir, stage=...)`, data parallel
over every device of every host. (The calibration and int stages train nothing: densetnt_jax.train.stages.)

One jitted pure step (`densetnt_jax.train.step.train_step`) on a `Mesh` with a `data` axis: the global batch is
sharded on it, params and optimizer state are replicated. Each process reads only its rows of each global
batch. Resume is exact: the data order of step s is (epoch s // steps_per_epoch, batch s % steps_per_epoch)
of a shuffle seeded by (config.seed, epoch), and no randomness is carried in host state (the step takes no
key: the model has no dropout; a step that needs one gets `jax.random.fold_in(key, step)`), so a killed run
resumed from its latest checkpoint ends with the same parameters as an uninterrupted run. A latest checkpoint
that does not restore (damaged files) is reported and the run resumes from the newest intact one
(`checkpoint.restore_newest_intact`).

QAT is the same loop on the fake-quant model: it starts from the calibration checkpoint's params and carries its
quant state (activation scales) in the train state, unchanged (the model gets it as a non-mutable collection),
with the `config.qat` optimizer (`stage_train_config`).

Non-finite values stop the run (`NonFiniteLossError`, naming the step) before they reach a checkpoint: each
step's `finite` flag (loss and updated params) is read one step behind, and all of them before any save.
"""
from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from densetnt_jax.data.loader import ArgoverseDataset, open_split
from densetnt_jax.data.scene import Scene, model_inputs
from densetnt_jax.metrics import evaluate
from densetnt_jax.model import build_model
from densetnt_jax.progress import progress_bar, show
from densetnt_jax.train import checkpoint as ckpt
from densetnt_jax.train.predict import stage_predict_fn
from densetnt_jax.train.step import init_train_state, make_optimizer, train_step
from densetnt_jax.workdir import checkpoint_dir

TRAIN_LABEL_FIELDS = ("future_Fx2", "goal_index", "has_future")


class NonFiniteLossError(FloatingPointError):
  """The loss (or the updated parameters) stopped being finite at `step`."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def train_inputs(scene: Scene) -> dict[str, np.ndarray]:
  """The model inputs plus the labels the loss reads."""
  return dict(model_inputs(scene), **{k: getattr(scene, k) for k in TRAIN_LABEL_FIELDS})


def make_mesh() -> Mesh:
  """All devices of all processes on one `data` axis."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(local_Bx___: dict, mesh: Mesh) -> dict:
  """This process's rows -> global arrays sharded on `data` (rows of process i follow those of i-1)."""
  sharding = NamedSharding(mesh, P("data"))
  count = jax.process_count()
  return {k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count,) + v.shape[1:])
          for k, v in local_Bx___.items()}


def replicate(tree, mesh: Mesh):
  """A host pytree (identical on every process) -> global arrays replicated on every device."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, jax.device_get(tree))


def gather(x) -> np.ndarray:
  """A global batch-sharded array or this process's numpy rows -> the whole batch on every process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_batch_sizes(train_config) -> None:
  devices, processes = jax.device_count(), jax.process_count()
  for name in ("batch_size", "eval_batch_size"):
    size = int(train_config[name])
    if size < 1 or size % devices:
      raise ValueError(f"config.train.{name}={size} does not divide over {devices} devices "
                       f"({processes} processes); use a multiple of {devices}")


def _finite_tree(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_train_fn(model, optimizer, loss_config, mesh: Mesh):
  """jit(train_step) with replicated state and a `finite` flag (loss and new params) in the metrics."""
  def fn(state, batch):
    state, metrics = train_step(state, batch, model=model, optimizer=optimizer, loss_config=loss_config)
    metrics = dict(metrics)
    metrics["finite"] = jnp.isfinite(metrics["loss"]) & _finite_tree(state.params)
    return state, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(fn, out_shardings=(replicated, replicated), donate_argnums=0)


@functools.lru_cache(maxsize=8)
def optimizer_and_train_fn(model, train_config: ml_collections.FrozenConfigDict, steps_per_epoch: int,
                           loss_config: ml_collections.FrozenConfigDict, mesh: Mesh):
  """(optimizer, make_train_fn(...)), cached per (model, settings, mesh): a resumed run, or several runs in one
  process (tests, notebooks), reuse the compiled step instead of recompiling it (~10 s on 2 cores, fake-quant)."""
  optimizer = make_optimizer(train_config, steps_per_epoch)
  return optimizer, make_train_fn(model, optimizer, loss_config, mesh)


def evaluate_split(predict_fn, params, dataset: ArgoverseDataset, eval_config, batch_size: int, mesh: Mesh, *,
                   max_batches: int = -1, prefetch: int = 4, quant=None) -> dict[str, float]:
  """minADE/minFDE/MR/brier-minFDE at K=6 and K=1 over a split (`metrics.evaluate`: padding rows and rows
  without a future excluded) of a stage's `predict_fn(params, inputs, quant) -> Prediction`
  (`densetnt_jax.train.predict.stage_predict_fn`), data parallel on `mesh`; every process returns the same
  numbers. `quant`: the fake-quant scales (None: float)."""
  def predict(scene):
    pred = predict_fn(params, shard_batch(model_inputs(scene), mesh), quant)
    return {"model": (pred.trajs_BxKxFx2, pred.probs_BxK)}

  batches = dataset.batches(batch_size, drop_remainder=False, prefetch=prefetch,
                            process_index=jax.process_index(), process_count=jax.process_count())
  acc = evaluate(predict, batches, ks=(6, 1), miss_threshold=eval_config.miss_threshold,
                 max_batches=max_batches, gather=gather)["model"]
  if acc.num_sequences == 0:
    raise ValueError(f"{dataset.path}: no scene with a future to evaluate on (is it a test split?)")
  return acc.result()


class MetricsLog:
  """metrics.jsonl (and TensorBoard) of one stage, written by process 0 only."""

  def __init__(self, stage_dir: str, tensorboard: bool, resume_step: int):
    self.active = jax.process_index() == 0
    self.path = os.path.join(stage_dir, "metrics.jsonl")
    self.tb = None
    if not self.active:
      return
    os.makedirs(stage_dir, exist_ok=True)
    if os.path.exists(self.path):          # a resumed run drops what the killed run logged after its checkpoint
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(stage_dir, "tb"))

  def write(self, step: int, values: dict) -> None:
    if not self.active:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    if self.tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          self.tb.add_scalar(k, v, step)
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


TRAINED_STAGES = ("float", "qat")


def stage_train_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The optimizer/schedule settings of a trained stage: `config.train` (float), or `config.train` with the
  `config.qat` section on top (QAT: AdamW, its own learning rate, weight decay, epochs and step decay)."""
  if stage == "float":
    return config.train
  if stage != "qat":
    raise ValueError(f"stage {stage!r} trains nothing; trained stages: {TRAINED_STAGES}")
  t = ml_collections.ConfigDict(config.train.to_dict())
  for k, v in config.qat.items():
    t[k] = v
  return t


def _resume(latest, state, steps_per_epoch: int, mesh):
  """(step, state) from the newest intact checkpoint of `latest`, or (0, state) for a fresh run."""
  restored = ckpt.restore_newest_intact(latest, state.params, state.opt_state, state.quant)
  if restored is None:
    return 0, state
  params, opt_state, meta = restored[0], restored[1], restored[-1]
  if meta["steps_per_epoch"] != steps_per_epoch:
    raise ValueError(f"{latest.directory} was trained with {meta['steps_per_epoch']} steps per epoch, the "
                     f"config and data give {steps_per_epoch}: resuming would change the schedule; use a "
                     "new --workdir")
  step = int(meta["step"])
  state = state.replace(step=replicate(np.asarray(step, np.asarray(state.step).dtype), mesh),
                        params=params, opt_state=opt_state, quant=restored[2] if len(restored) == 4 else None)
  logging.info("resumed from %s at step %d", latest.directory, step)
  return step, state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stage: str = "float",
                       params=None, quant=None, train_config: ml_collections.ConfigDict | None = None,
                       stop_after_steps: int | None = None) -> dict:
  """Trains a stage from its start, or resumes from `{workdir}/{stage}/checkpoints`; returns the final metrics.

  float starts from random params; qat from `params` and `quant` (default: the calibration checkpoint,
  `checkpoint.load_stage_input`), its quant state carried unchanged. `train_config` defaults to
  `stage_train_config(config, stage)`. `stop_after_steps` stops right after that global step without a
  final checkpoint or evaluation, as a kill would (tests of exact resume; a later call resumes from the
  latest checkpoint).
  """
  if stage not in TRAINED_STAGES:
    raise ValueError(f"stage {stage!r} is not trained: calibration and int are conversions "
                     "(densetnt_jax.train.stages.run_stage); trained stages: float, qat")
  ckpt.quiet_orbax_logging()
  t = train_config if train_config is not None else stage_train_config(config, stage)
  workdir = os.path.abspath(str(workdir))
  if stage == "qat" and params is None:
    params, quant = ckpt.load_stage_input(workdir, "qat")
  if stage == "qat" and quant is None:
    raise ValueError("the qat stage needs the calibration's quant state (quant=...)")
  stage_dir = os.path.join(workdir, stage)
  check_batch_sizes(t)
  train_ds = open_split(config.data, config.data.train_split)
  val_ds = open_split(config.data, config.data.val_split)
  steps_per_epoch = len(train_ds) // t.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{train_ds.path}: {len(train_ds)} scenes, fewer than one batch of {t.batch_size}")
  total_steps = t.epochs * steps_per_epoch
  if jax.process_index() == 0:
    diff = ckpt.save_config(config, workdir)
    if diff:
      logging.warning("%s/config.json changed since the last run (old, new): %s", workdir, diff)

  mesh = make_mesh()
  model = build_model(config)
  optimizer, train_fn = optimizer_and_train_fn(model, ml_collections.FrozenConfigDict(t), steps_per_epoch,
                                               ml_collections.FrozenConfigDict(config.loss), mesh)
  example = train_inputs(train_ds.make_batch([0]))
  state = init_train_state(model, optimizer, jax.random.key(config.seed), example, params=params, quant=quant)
  state = replicate(state, mesh)

  latest = ckpt.latest_manager(checkpoint_dir(workdir, stage, "latest"), t.keep_checkpoints)
  best = ckpt.best_manager(checkpoint_dir(workdir, stage, "best"))
  try:
    step, state = _resume(latest, state, steps_per_epoch, mesh)
  except BaseException:          # the run stops before its loop: the managers' threads must not outlive it
    latest.close()
    best.close()
    raise
  log = MetricsLog(stage_dir, bool(t.tensorboard), step)
  predict_fn = stage_predict_fn(stage, model=model, mesh=mesh)
  final: dict = {}

  def check(pending: list, upto: int) -> None:
    """Raises on the first non-finite step among pending[:upto] (fetching them), drops them."""
    for s, metrics in pending[:upto]:
      if not bool(metrics["finite"]):
        epoch, batch = divmod(s - 1, steps_per_epoch)
        raise NonFiniteLossError(
            f"non-finite loss or parameters at training step {s} (epoch {epoch}, batch {batch}; "
            f"loss={float(metrics['loss'])}); the last good checkpoint is step {latest.latest_step()} in "
            f"{latest.directory}; lower config.train.learning_rate or check the data", s)
    del pending[:upto]

  bar = progress_bar(total=total_steps, initial=step, desc=f"train {stage}", unit="step",
                     disable=jax.process_index() != 0, dynamic_ncols=True)
  try:
    pending, window, window_start, wait_s = [], [], time.perf_counter(), 0.0
    for epoch in range(step // steps_per_epoch, t.epochs):
      batches = train_ds.batches(
          t.batch_size, shuffle=True, seed=config.seed, epoch=epoch, drop_remainder=True,
          start_batch=step - epoch * steps_per_epoch, prefetch=config.data.prefetch,
          process_index=jax.process_index(), process_count=jax.process_count())
      while True:
        t0 = time.perf_counter()
        scene = next(batches, None)
        if scene is None:
          break
        batch = shard_batch(train_inputs(scene), mesh)
        wait_s += time.perf_counter() - t0
        state, metrics = train_fn(state, batch)
        step += 1
        pending.append((step, metrics))
        window.append(metrics)
        check(pending, len(pending) - 1)      # one step behind: the device keeps a step queued
        bar.update(1)
        epoch_end = step % steps_per_epoch == 0

        if step % t.log_every_steps == 0 or epoch_end:
          check(pending, len(pending))
          fetched = jax.device_get(window)
          elapsed = time.perf_counter() - window_start
          values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "finite"}
          values = {f"train/{k}": v for k, v in values.items()}
          values.update({"epoch": epoch, "scenes_per_s": len(window) * t.batch_size / elapsed,
                         "steps_per_s": len(window) / elapsed, "data_wait_fraction": wait_s / elapsed})
          log.write(step, values)
          show(bar, loss=f"{values['train/loss']:.3f}", scenes_s=f"{values['scenes_per_s']:.1f}")
          final.update(values)
          window, window_start, wait_s = [], time.perf_counter(), 0.0

        val = None
        if epoch_end and ((epoch + 1) % t.eval_every_epochs == 0 or step == total_steps):
          val = evaluate_split(predict_fn, state.params, val_ds, config.eval, t.eval_batch_size, mesh,
                               max_batches=t.eval_max_batches, prefetch=config.data.prefetch, quant=state.quant)
          val = {f"val/{k}": v for k, v in val.items()}
          log.write(step, {"epoch": epoch, **val})
          logging.info("step %d epoch %d: %s", step, epoch, val)
          final.update(val)
          window_start = time.perf_counter()   # evaluation time is not training time
        if step % t.checkpoint_every_steps == 0 or epoch_end:
          check(pending, len(pending))         # never save a non-finite state
          meta = {"step": step, "epoch": epoch, "steps_per_epoch": steps_per_epoch, "stage": stage}
          ckpt.save(latest, step, params=state.params, opt_state=state.opt_state, quant=state.quant, meta=meta)
          if val is not None and step not in best.all_steps():
            latest.wait_until_finished()
            ckpt.save(best, step, params=state.params, quant=state.quant, meta=dict(meta, **val), metrics=val)
        if stop_after_steps is not None and step >= stop_after_steps:
          check(pending, len(pending))
          return {"step": step, "stopped": True}
    check(pending, len(pending))
    if not any(k.startswith("val/") for k in final):   # resumed a finished run: report its metrics again
      final.update({f"val/{k}": v for k, v in evaluate_split(
          predict_fn, state.params, val_ds, config.eval, t.eval_batch_size, mesh,
          max_batches=t.eval_max_batches, prefetch=config.data.prefetch, quant=state.quant).items()})
  finally:
    bar.close()
    latest.wait_until_finished()
    best.wait_until_finished()
    latest.close()
    best.close()
    log.close()
  final["step"] = step
  return final
