"""Whole workflows as library calls (what `make real` runs), each step resumable and importable from a notebook.

`run_real(config)`: the real-traffic data set (`data/real_layout.py`: the Argoverse 1.1 sample + the 2,924-scene
archive), packed; the float model trained; calibration, QAT and the integer program; every stage evaluated on
real val (and `val_large`) beside constant velocity; then the deployment checks on real data (model checker,
compiled artifact, int ONNX bit-exactness, align_bpu); last, the pictures in WORKDIR/pictures. A second run
reuses what the first wrote.
"""
from __future__ import annotations

import os
import time

STAGES = ("float", "calibration", "qat", "int")


def step(title: str) -> None:
  print(f"\n=== {title} ===", flush=True)


def prepare_real_data(config, *, sample_dir: str, archive: str, heldout: int = 400, num_workers: int = 2,
                      splits: tuple = ("train", "val", "val_large")) -> dict[str, int]:
  """The real layout in config.data.src_dir (archive extracted once, symlinks) packed into config.data.lmdb_dir."""
  from densetnt_jax.data.pack import pack_split
  from densetnt_jax.data.real_layout import make_real_layout
  step(f"real layout -> {config.data.src_dir}")
  counts = make_real_layout(sample_dir, archive, config.data.src_dir, heldout=heldout, seed=config.seed)
  print(", ".join(f"{s} {n}" for s, n in counts.items()))
  for split in splits:
    step(f"pack {split} -> {config.data.lmdb_dir}")
    summary = pack_split(config.data.src_dir, split, config.data.lmdb_dir, config.data, num_workers=num_workers)
    print(summary.format())
  return counts


def run_stages(config, workdir: str, stages: tuple = STAGES) -> dict[str, float]:
  """Each stage in order (float resumes from its latest checkpoint; the others rerun from the previous
  stage's best): {stage: seconds}."""
  from densetnt_jax.train.loop import train_and_evaluate
  from densetnt_jax.train.stages import run_stage
  seconds = {}
  for stage in stages:
    step(f"{stage} -> {workdir}/{stage}")
    start = time.perf_counter()
    if stage == "float":
      train_and_evaluate(config, workdir, stage="float")
    else:
      run_stage(config, workdir, stage)
    seconds[stage] = time.perf_counter() - start
    print(f"{stage}: {seconds[stage]:.0f} s")
  return seconds


def stage_tables(config, workdir: str, splits: tuple, stages: tuple = STAGES) -> dict[str, list]:
  """{split: [result per stage]}: every stage evaluated on every split (bin/eval.py's code path), each table
  printed beside constant velocity."""
  from densetnt_jax.eval.evaluate import evaluate, format_table
  tables = {}
  for split in splits:
    step(f"all stages on {split}")
    tables[split] = [evaluate(config, workdir, stage=s, split=split, progress=False) for s in stages]
    print(format_table(tables[split]))
  return tables


def write_pictures(config, workdir: str) -> list[str]:
  """WORKDIR/pictures (`eval.infer.write_pictures`): training curves, stage bars, the worst val scenes, float
  vs int, a contact sheet."""
  from densetnt_jax.eval.infer import write_pictures as _write
  step(f"pictures -> {workdir}/pictures")
  paths = _write(config, workdir)
  print("\n".join(f"wrote {p}" for p in paths))
  return paths


def deployment_checks(config, workdir: str, *, align_batches: int = -1, export_batches: int = 2) -> dict[str, int]:
  """Model checker, compile + perf, int ONNX (bit-exact vs the interpreter), align_bpu: {check: exit status}."""
  from densetnt_jax.deploy import checker, onnx_export, perf
  from densetnt_jax.eval.align import run as align_run
  status = {}
  step(f"model checker (target {config.target.name})")
  status["checker"] = checker.run(config, workdir)
  step("compile + performance estimate")
  status["compile"] = perf.run(config, workdir, per_layer=False)
  step("int ONNX vs the interpreter")
  status["int_onnx"] = onnx_export.run(config, workdir, "int", num_batches=export_batches)
  step("align_bpu validation (qat vs int, and the artifact and int ONNX vs the interpreter)")
  status["align"] = align_run(config, workdir, num_batches=align_batches, max_rows=8)
  return status


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
    from densetnt_jax.eval.evaluate import format_table
    print(f"\n{split}:\n{format_table(results)}")
  if status:
    print("deployment checks: " + ", ".join(f"{k} {'ok' if v == 0 else 'FAILED'}" for k, v in status.items()))
  return dict(seconds=seconds, tables=tables, status=status, pictures=pictures)
