"""Whole workflows as library calls (what `make demo` and `make real` run), each step resumable and importable
from a notebook:

  from densetnt_jax import pipelines
  config = pipelines.config_from("configs/argo.py:demo")   # or any get_config() ConfigDict
  datasets = pipelines.prepare_demo_data(config)           # one step of the demo, or all of it:
  pipelines.run_demo(config)

`run_demo(config)` (`make demo`): the synthetic city (official Argoverse 1.1 formats) packed to LMDB, loader
statistics and a few scenes drawn; the float model trained, evaluated beside constant velocity and its
predictions drawn; calibration, QAT and the integer program, each evaluated on val; the model checker's verdict
against config.target, the compiled artifact with its performance table, the float / QDQ / int ONNX exports each
checked in onnxruntime; align_bpu (QAT vs int, and the artifact and int ONNX vs the interpreter) on a few board
batches and the table of all four stages; last, the pictures in WORKDIR/pictures.

`run_real(config)` (`make real`): the real-traffic data set (`data/real_layout.py`: the Argoverse 1.1 sample +
the 2,924-scene archive), packed; the four stages; every stage evaluated on real val (and `val_large`) beside
constant velocity; the deployment checks on real data (model checker, compiled artifact, int ONNX
bit-exactness, align_bpu); last, the pictures.

A second run of either reuses what the first wrote.
"""
from __future__ import annotations

import glob
import os
import time

import numpy as np

from densetnt_jax.api import load as load_predictor
from densetnt_jax.data.loader import ArgoverseDataset, open_split
from densetnt_jax.data.pack import pack_split, split_lmdb_path
from densetnt_jax.data.real_layout import make_real_layout
from densetnt_jax.data.synthetic import write_synthetic_city
from densetnt_jax.deploy import align, checker, compiler
from densetnt_jax.eval.evaluate import evaluate, format_table
from densetnt_jax.eval.infer import render_predictions
from densetnt_jax.eval.infer import write_pictures as _write_pictures
from densetnt_jax.eval.visualize import save_scene_png
from densetnt_jax.train import stages as train_stages
from densetnt_jax.train.loop import train_and_evaluate
from densetnt_jax.metrics import TABLE_METRICS as METRICS
from densetnt_jax.workdir import STAGES
from densetnt_jax.workdir import config_from as config_from   # the notebook's way in: pipelines.config_from(...)



def step(title: str) -> None:
  print(f"\n=== {title} ===", flush=True)


# --- the demo (`make demo`, bin/demo.py) ---

def run_demo(config, *, num_train: int = 2000, num_val: int = 400, train: bool = True, quant: bool = True,
             deploy: bool = True, export_batches: int = 2, align_batches: int = 4) -> dict:
  """`make demo`: data, loader statistics; then (`train`) float trained, evaluated, drawn; (`quant`) the quantized
  stages, (`deploy`) the deployment steps, align_bpu and the table of all stages; the pictures. Returns
  {"datasets", "results" (one eval result per stage run), "status" ({check: exit status}), "pictures"}."""
  out = dict(datasets=prepare_demo_data(config, num_train=num_train, num_val=num_val), results=[], status={},
             pictures=[])
  describe_data(out["datasets"], config)
  if not train:
    return out
  workdir = config.workdir
  out["results"].append(run_and_evaluate(config, workdir, "float"))
  draw_predictions(config, workdir, out["datasets"]["val"])
  if quant:
    for stage in STAGES[1:]:
      out["results"].append(run_and_evaluate(config, workdir, stage))
    if deploy:
      out["status"] = deploy_program(config, workdir, export_stages=("float", "qat", "int"),
                                     export_batches=export_batches, checker_table=False)
    out["status"]["align"] = align_check(config, workdir, num_batches=align_batches)
    step("all stages on val")
    print(format_table(out["results"], keys=METRICS))
  out["pictures"] = write_pictures(config, workdir)   # what a person reads first (the last step of make real too)
  return out


def prepare_demo_data(config, *, num_train: int = 2000, num_val: int = 400,
                      num_workers: int = 2) -> dict[str, ArgoverseDataset]:
  """The synthetic city in config.data.src_dir (written again unless it holds exactly num_train / num_val
  scenes), packed into config.data.lmdb_dir: {"train": dataset, "val": dataset}."""
  src = config.data.src_dir
  have = {s: len(glob.glob(os.path.join(src, s, "data", "*.csv"))) for s in ("train", "val")}
  step(f"synthetic city -> {src}")
  if have != {"train": num_train, "val": num_val}:
    summary = write_synthetic_city(src, num_train=num_train, num_val=num_val, seed=config.seed)
    print({k: v for k, v in summary.items() if not isinstance(v, dict)})
  else:
    print(f"already there: {have}")
  datasets = {}
  for mode in ("train", "val"):
    step(f"pack {mode} -> {split_lmdb_path(config.data.lmdb_dir, mode)}")
    print(pack_split(src, mode, config.data.lmdb_dir, config.data, num_workers=num_workers).format())
    datasets[mode] = open_split(config.data, mode)
  return datasets


def describe_data(datasets: dict[str, ArgoverseDataset], config, *, batch_size: int = 64,
                  num_scenes: int = 3) -> list[str]:
  """Tracks, lanes and goal candidates per scene and the loader's rate over one shuffled pass of train (full
  batches); the first `num_scenes` val scenes drawn into WORKDIR/scenes: their paths."""
  step("load batches")
  start, n = time.perf_counter(), 0
  tracks, lanes, goals = [], [], []
  for batch in datasets["train"].batches(batch_size, shuffle=True, seed=config.seed, drop_remainder=True):
    n += len(batch.seq_id)
    tracks.append(batch.traj_mask_T.sum(1))
    lanes.append(batch.lane_mask_L.sum(1))
    goals.append(batch.goal_mask_G.sum(1))
  rate = n / (time.perf_counter() - start)
  for name, v in (("tracks", tracks), ("lanes", lanes), ("goal candidates", goals)):
    v = np.concatenate(v)
    print(f"{name:>16} per scene: mean {v.mean():7.1f}  max {v.max():5d}")
  print(f"{n} train scenes in batches of {batch_size} at {rate:.0f} scenes/s")
  out, paths = os.path.join(config.workdir, "scenes"), []
  for i in range(num_scenes):
    scene = datasets["val"][i]
    paths.append(os.path.join(out, f"{int(scene.seq_id)}.png"))
    save_scene_png(paths[-1], scene, title=f"synthetic seq {int(scene.seq_id)}", view="full")
    print(f"wrote {paths[-1]}")
  return paths


def draw_predictions(config, workdir: str, dataset: ArgoverseDataset, *, stage: str = "float",
                     num: int = 6) -> list[str]:
  """The stage's predictions on the first `num` scenes of `dataset`, drawn into WORKDIR/infer: the paths."""
  step("inference visualization")
  predictor = load_predictor(workdir, stage, config=config)
  paths = render_predictions(predictor, dataset, os.path.join(workdir, "infer"), num=num)
  print(f"wrote {len(paths)} PNGs to {os.path.dirname(paths[0])}")
  return paths


# --- steps both workflows share ---

def run_stage(config, workdir: str, stage: str) -> float:
  """One stage (float resumes from its latest checkpoint; the others rerun from the previous stage's best):
  its seconds."""
  step(f"{stage} -> {workdir}/{stage}")
  start = time.perf_counter()
  if stage == "float":
    train_and_evaluate(config, workdir, stage="float")
  else:
    train_stages.run_stage(config, workdir, stage)
  seconds = time.perf_counter() - start
  print(f"{stage}: {seconds:.0f} s")
  return seconds


def run_stages(config, workdir: str, stages: tuple = STAGES) -> dict[str, float]:
  """Each stage in order (`run_stage`): {stage: seconds}."""
  return {stage: run_stage(config, workdir, stage) for stage in stages}


def run_and_evaluate(config, workdir: str, stage: str) -> dict:
  """`run_stage`, then the stage evaluated on the config's val split (bin/eval.py's code path), its table
  printed beside constant velocity: the eval result."""
  run_stage(config, workdir, stage)
  result = evaluate(config, workdir, stage=stage)
  print(format_table([result]))
  return result


def stage_tables(config, workdir: str, splits: tuple, stages: tuple = STAGES) -> dict[str, list]:
  """{split: [result per stage]}: every stage evaluated on every split (bin/eval.py's code path), each table
  printed beside constant velocity."""
  tables = {}
  for split in splits:
    step(f"all stages on {split}")
    tables[split] = [evaluate(config, workdir, stage=s, split=split, progress=False) for s in stages]
    print(format_table(tables[split]))
  return tables


def write_pictures(config, workdir: str) -> list[str]:
  """WORKDIR/pictures (`eval.infer.write_pictures`): training curves, stage bars, the worst val scenes, float
  vs int, a contact sheet."""
  step(f"pictures -> {workdir}/pictures")
  paths = _write_pictures(config, workdir)
  print("\n".join(f"wrote {p}" for p in paths))
  return paths


def check_target(config, workdir: str, *, table: bool = True) -> int:
  """bin/model_checker.py: the int program against config.target, its report printed (`table`=False: only the
  summary and the verdict lines); 0 when it fits, else 1."""
  step(f"model checker (target {config.target.name})")
  return checker.run(config, workdir, table=table)


def deploy_program(config, workdir: str, *, export_stages: tuple = ("int",), export_batches: int = 2,
                   checker_table: bool = True) -> dict[str, int]:
  """Model checker, compile + perf estimate (WORKDIR/deploy), each of `export_stages` exported to ONNX and
  checked in onnxruntime on `export_batches` val batches: {check: exit status}."""
  from densetnt_jax.deploy import onnx_check     # onnx is the optional [onnx] extra: imported when deploying
  status = dict(checker=check_target(config, workdir, table=checker_table))
  step("compile + performance estimate")
  status["compile"] = compiler.run(config, workdir, per_layer=False)
  for stage in export_stages:
    step(f"export ONNX ({stage}) and check it in onnxruntime")
    status[f"{stage}_onnx"] = onnx_check.run(config, workdir, stage, num_batches=export_batches)
  return status


def align_check(config, workdir: str, *, num_batches: int = -1) -> int:
  """bin/align_bpu_validation.py on `num_batches` val batches of 30 (-1: all): 0 when every bar holds."""
  batches = "all val batches" if num_batches < 0 else f"{num_batches} batches"
  step(f"align_bpu validation (qat vs int, and the artifact and int ONNX vs the interpreter; {batches} of 30)")
  status = align.run(config, workdir, num_batches=num_batches, max_rows=8)
  if status:
    print("align_bpu validation FAILED (see above)")
  return status


def deployment_checks(config, workdir: str, *, align_batches: int = -1, export_batches: int = 2) -> dict[str, int]:
  """Model checker, compile + perf, int ONNX (bit-exact vs the interpreter), align_bpu: {check: exit status}."""
  status = deploy_program(config, workdir, export_stages=("int",), export_batches=export_batches)
  status["align"] = align_check(config, workdir, num_batches=align_batches)
  return status


# --- real traffic (`make real`, bin/real.py) ---

def prepare_real_data(config, *, sample_dir: str, archive: str, heldout: int = 400, num_workers: int = 2,
                      splits: tuple = ("train", "val", "val_large")) -> dict[str, int]:
  """The real layout in config.data.src_dir (archive extracted once, symlinks) packed into config.data.lmdb_dir."""
  step(f"real layout -> {config.data.src_dir}")
  counts = make_real_layout(sample_dir, archive, config.data.src_dir, heldout=heldout, seed=config.seed)
  print(", ".join(f"{s} {n}" for s, n in counts.items()))
  for split in splits:
    step(f"pack {split} -> {config.data.lmdb_dir}")
    summary = pack_split(config.data.src_dir, split, config.data.lmdb_dir, config.data, num_workers=num_workers)
    print(summary.format())
  return counts


def run_real(config, *, sample_dir: str, archive: str, heldout: int = 400, large_split: str = "val_large",
             deploy: bool = True) -> dict:
  """`make real`: data, the four stages, their tables on real val (and `large_split`), deployment checks,
  pictures."""
  start = time.perf_counter()
  prepare_real_data(config, sample_dir=sample_dir, archive=archive, heldout=heldout)
  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)
  seconds = run_stages(config, workdir)
  tables = stage_tables(config, workdir, (config.data.val_split, large_split))
  status = deployment_checks(config, workdir) if deploy else {}
  pictures = write_pictures(config, workdir)
  step(f"done in {(time.perf_counter() - start) / 60:.1f} min")
  for split, results in tables.items():
    print(f"\n{split}:\n{format_table(results)}")
  if status:
    print("deployment checks: " + ", ".join(f"{k} {'ok' if v == 0 else 'FAILED'}" for k, v in status.items()))
  return dict(seconds=seconds, tables=tables, status=status, pictures=pictures)
