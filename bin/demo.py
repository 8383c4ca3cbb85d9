"""The project's main job on the embedded default data (what `make demo` runs).

Writes the synthetic city (official Argoverse 1.1 formats), packs train/val to LMDB, renders a few scenes,
trains the float model (`configs/argo.py:demo`), evaluates it beside the constant-velocity baseline and
renders its predictions; then the quantization stages (calibration, QAT, conversion to the integer program),
each evaluated on val; then deployment: the model checker's verdict against config.target, the compiled
artifact with its performance table, the float / QDQ / int ONNX exports each checked in onnxruntime; the
align_bpu check (QAT vs int, and the artifact and int ONNX vs the interpreter) on a few board batches, and the
table of all four stages; last, the pictures (WORKDIR/pictures: training curves, stage bars, the worst val
scenes, float vs int, a contact sheet). Every step resumes: a second run reuses what the first one wrote.

  python bin/demo.py [--config=configs/argo.py:demo] [--config.train.epochs=...] [--quant=False]
"""
import glob
import os
import time

import numpy as np
from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.data.loader import ArgoverseDataset
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.synthetic import write_synthetic_city
from densetnt_jax.eval.visualize import save_scene_png
from densetnt_jax.pipelines import step, write_pictures

flags.DEFINE_integer("num_train", 2000, "Synthetic train scenes.")
flags.DEFINE_integer("num_val", 400, "Synthetic val scenes.")
flags.DEFINE_bool("train", True, "Also train and evaluate (False: data steps only).")
flags.DEFINE_bool("quant", True, "Also run calibration, QAT and int after float.")
flags.DEFINE_bool("deploy", True, "Also check, compile and export (ONNX) the integer program after int.")
flags.DEFINE_integer("export_batches", 2, "Val batches each ONNX export is compared on.")
flags.DEFINE_integer("align_batches", 4, "Val batches (of 30) the align_bpu check compares.")
config_flags.DEFINE_config_file("config", "configs/argo.py:demo", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def prepare_data(cfg) -> dict:
  src = cfg.data.src_dir
  have = {s: len(glob.glob(os.path.join(src, s, "data", "*.csv"))) for s in ("train", "val")}
  step(f"synthetic city -> {src}")
  if have != {"train": FLAGS.num_train, "val": FLAGS.num_val}:
    summary = write_synthetic_city(src, num_train=FLAGS.num_train, num_val=FLAGS.num_val, seed=cfg.seed)
    print({k: v for k, v in summary.items() if not isinstance(v, dict)})
  else:
    print(f"already there: {have}")
  datasets = {}
  for mode in ("train", "val"):
    step(f"pack {mode} -> {split_lmdb_path(cfg.data.lmdb_dir, mode)}")
    print(pack_split(src, mode, cfg.data.lmdb_dir, cfg.data, num_workers=2).format())
    datasets[mode] = ArgoverseDataset(split_lmdb_path(cfg.data.lmdb_dir, mode), cfg.data)
  return datasets


def describe(datasets, cfg) -> None:
  step("load batches")
  ds = datasets["train"]
  start, n = time.perf_counter(), 0
  tracks, lanes, goals = [], [], []
  for batch in ds.batches(64, shuffle=True, seed=cfg.seed, drop_remainder=True):
    n += len(batch.seq_id)
    tracks.append(batch.traj_mask_T.sum(1))
    lanes.append(batch.lane_mask_L.sum(1))
    goals.append(batch.goal_mask_G.sum(1))
  rate = n / (time.perf_counter() - start)
  for name, v in (("tracks", tracks), ("lanes", lanes), ("goal candidates", goals)):
    v = np.concatenate(v)
    print(f"{name:>16} per scene: mean {v.mean():7.1f}  max {v.max():5d}")
  print(f"{n} train scenes in batches of 64 at {rate:.0f} scenes/s")
  out = os.path.join(cfg.workdir, "scenes")
  for i in range(3):
    scene = datasets["val"][i]
    path = os.path.join(out, f"{int(scene.seq_id)}.png")
    save_scene_png(path, scene, title=f"synthetic seq {int(scene.seq_id)}", view="full")
    print(f"wrote {path}")


def main(argv):
  del argv
  cfg = FLAGS.config
  datasets = prepare_data(cfg)
  describe(datasets, cfg)
  if not FLAGS.train:
    return
  import densetnt_jax
  from densetnt_jax.eval.evaluate import evaluate, format_table
  from densetnt_jax.eval.infer import render_predictions
  from densetnt_jax.train.loop import train_and_evaluate
  step(f"train float -> {cfg.workdir}")
  train_and_evaluate(cfg, cfg.workdir, stage="float")
  step("evaluate float on val")
  result = evaluate(cfg, cfg.workdir, stage="float")
  print(format_table([result]))
  step("inference visualization")
  predictor = densetnt_jax.load(cfg.workdir, "float", config=cfg)
  paths = render_predictions(predictor, datasets["val"], os.path.join(cfg.workdir, "infer"), num=6)
  print(f"wrote {len(paths)} PNGs to {os.path.dirname(paths[0])}")
  if FLAGS.quant:
    quantization_stages(cfg, [result])
  write_pictures(cfg, cfg.workdir)   # the pictures a person reads first (the last step of make real too)


def quantization_stages(cfg, results: list) -> None:
  """calibration -> qat -> int, each evaluated; align_bpu on a few batches; the table of all stages."""
  from densetnt_jax.eval.align import run as align_run
  from densetnt_jax.eval.evaluate import evaluate, format_table
  from densetnt_jax.train.stages import run_stage
  for stage in ("calibration", "qat", "int"):
    step(f"{stage} -> {cfg.workdir}/{stage}")
    start = time.perf_counter()
    run_stage(cfg, cfg.workdir, stage)
    print(f"{stage}: {time.perf_counter() - start:.0f} s")
    results.append(evaluate(cfg, cfg.workdir, stage=stage))
    print(format_table(results[-1:]))
  if FLAGS.deploy:
    deployment(cfg)
  step(f"align_bpu validation (qat vs int, {FLAGS.align_batches} batches of 30)")
  status = align_run(cfg, cfg.workdir, num_batches=FLAGS.align_batches, max_rows=8)
  if status:
    print("align_bpu validation FAILED (see above)")
  step("all stages on val")
  print(format_table(results, keys=("minADE_k6", "minFDE_k6", "MR_k6", "minADE_k1", "minFDE_k1", "MR_k1")))


def deployment(cfg) -> None:
  """bin/model_checker.py (verdict), bin/compile_perf.py (artifact + perf table), bin/export_onnx.py x 3."""
  from densetnt_jax.deploy import checker, onnx_export, perf
  from densetnt_jax.train.stages import load_program
  step(f"model checker (target {cfg.target.name})")
  report = checker.check_program(load_program(cfg.workdir), checker.TargetSpec.from_config(cfg.target))
  print("\n".join(checker.format_report(report).splitlines()[-2:]))
  step("compile + performance estimate")
  perf.run(cfg, cfg.workdir, per_layer=False)
  for stage in ("float", "qat", "int"):
    step(f"export ONNX ({stage}) and check it in onnxruntime")
    onnx_export.run(cfg, cfg.workdir, stage, num_batches=FLAGS.export_batches)


if __name__ == "__main__":
  cli.run(main)
