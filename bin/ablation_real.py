"""The README's real-traffic ablation: today's network (HAT's sparse goals + NMS), each DenseTNT addition on its
own, and all together, float and int, on real val (99) and val_large (499), beside constant velocity.

  python bin/ablation_real.py [--train] [--splits=val,val_large] [--runs=runs]      # or: make ablation

Each trained variant is a workdir (configs/argo.py:real with the variant's overrides; "all" is the config as
it is, `make real`'s runs/real); `--train` runs its missing stages (float, calibration, QAT, int: 15-20 min
per variant on 2 cores). Every variant trains with the same schedule; its validation (which picks the best
checkpoint) uses the variant's own post-processing.
Post-processing rows (endpoint, selection) reuse a variant's checkpoints and program with other
`config.postprocess` settings: the host epilogue, nothing on the accelerator changes. The best checkpoint of
each variant was chosen on val (99 scenes), so val_large (the 400 held-out archive scenes + those 99) is the
cleaner yardstick for comparing rows.
"""
import json
import os
import pathlib

from absl import app, flags

from densetnt_jax import cli
from densetnt_jax.workdir import config_from

ROOT = pathlib.Path(__file__).resolve().parents[1]

# trained variants: workdir under --runs, model overrides, the post-processing their validation used
VARIANTS = {
    "hat": dict(workdir="real_hat", dense_seeds=0, lane_scoring=False, selection="nms", endpoint="model"),
    "dense": dict(workdir="real_dense", dense_seeds=150, lane_scoring=False, selection="nms", endpoint="model"),
    "lane": dict(workdir="real_lane", dense_seeds=0, lane_scoring=True, selection="nms", endpoint="model"),
    "all": dict(workdir="real"),
}
# table rows: (name, variant, selection, endpoint)
ROWS = (
    ("today: sparse goals, NMS (HAT)", "hat", "nms", "model"),
    ("+ endpoint shift", "hat", "nms", "shift"),
    ("+ endpoint snap", "hat", "nms", "snap"),
    ("+ selection mr", "hat", "mr", "model"),
    ("+ selection fde", "hat", "fde", "model"),
    ("+ endpoint shift, selection mr", "hat", "mr", "shift"),
    ("+ endpoint shift, selection fde", "hat", "fde", "shift"),
    ("+ dense goals", "dense", "nms", "model"),
    ("+ dense goals, endpoint shift, selection fde", "dense", "fde", "shift"),
    ("+ dense goals, endpoint shift, selection mr", "dense", "mr", "shift"),
    ("+ lane scoring", "lane", "nms", "model"),
    ("+ lane scoring, endpoint shift, selection fde", "lane", "fde", "shift"),
    ("+ lane scoring, endpoint shift, selection mr", "lane", "mr", "shift"),
    ("all: dense, lane, fde, shift (default)", "all", "fde", "shift"),
    ("all, selection mr", "all", "mr", "shift"),
)
KEYS = ("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minADE_k1", "minFDE_k1", "MR_k1")

flags.DEFINE_bool("train", False, "Train the variants' missing stages first.")
flags.DEFINE_list("splits", ["val", "val_large"], "Splits of the table ('' trains only).")
flags.DEFINE_string("runs", "runs", "Directory of the variants' workdirs and ablation_real.json.")
flags.DEFINE_list("stages", ["float", "int"], "Stages in the table (a variant's missing one is left out).")
flags.DEFINE_list("variants", list(VARIANTS), "The variants trained and evaluated.")
flags.DEFINE_bool("redo", False, "Re-evaluate rows already in RUNS/ablation_real.json.")
flags.DEFINE_list("train_stages", ["float", "calibration", "qat", "int"], "The stages --train runs.")
FLAGS = flags.FLAGS


def has_stage(workdir: str, stage: str) -> bool:
  """The stage's output exists: its program (int) or its best checkpoint."""
  return os.path.exists(os.path.join(workdir, stage, "program" if stage == "int" else "best"))


def real_config(variant: str, selection: str | None = None, endpoint: str | None = None):
  c = config_from(f"{ROOT / 'configs' / 'argo.py'}:real")
  v = VARIANTS[variant]
  c.model.dense_seeds = v.get("dense_seeds", c.model.dense_seeds)
  c.model.lane_scoring = v.get("lane_scoring", c.model.lane_scoring)
  c.postprocess.selection = selection or v.get("selection", c.postprocess.selection)
  c.postprocess.endpoint = endpoint or v.get("endpoint", c.postprocess.endpoint)
  return c


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
  if unknown:
    raise app.UsageError(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
  import densetnt_jax
  from densetnt_jax.data.loader import ArgoverseDataset
  from densetnt_jax.data.pack import split_lmdb_path
  from densetnt_jax.eval.evaluate import evaluate_dataset
  from densetnt_jax.pipelines import run_stages
  from densetnt_jax.train.checkpoint import quiet_orbax_logging
  quiet_orbax_logging()
  workdir = {v: os.path.join(FLAGS.runs, spec["workdir"]) for v, spec in VARIANTS.items()}
  if FLAGS.train:
    wanted = FLAGS.train_stages
    for v in FLAGS.variants:
      missing = [s for s in wanted if s == "float" or not has_stage(workdir[v], s)]
      run_stages(real_config(v), workdir[v], tuple(missing))
  if not FLAGS.splits:
    return
  path = os.path.join(FLAGS.runs, "ablation_real.json")
  results = json.load(open(path)) if os.path.exists(path) else {}   # rows of variants not re-run are kept
  for split in FLAGS.splits:
    for name, variant, selection, endpoint in ROWS:
      if variant not in FLAGS.variants:
        continue
      config = real_config(variant, selection, endpoint)
      for stage in FLAGS.stages:
        if not has_stage(workdir[variant], stage):
          continue
        if f"{split}/{name}/{stage}" in results and not FLAGS.redo:
          continue
        predictor = densetnt_jax.load(workdir[variant], stage=stage, config=config)
        dataset = ArgoverseDataset(split_lmdb_path(config.data.lmdb_dir, split), config.data)
        r = evaluate_dataset(predictor, dataset, batch_size=config.train.eval_batch_size, progress=False)
        results[f"{split}/{name}/{stage}"] = r["model"]
        results[f"{split}/constant velocity/float"] = r["constant_velocity"]
        print(f"{split} {name} [{stage}]: " + ", ".join(f"{k} {r['model'][k]:.3f}" for k in KEYS), flush=True)
      with open(path, "w") as f:
        json.dump(results, f, indent=1)
  print(markdown_table(results, FLAGS.splits))
  print(f"wrote {path}")


def markdown_table(results: dict, splits: list) -> str:
  """The README's table: a row per (row, stage) present in `results`, constant velocity last, per split."""
  out = []
  for split in splits:
    out += [f"\n{split}:\n", "| | stage | " + " | ".join(KEYS) + " |", "| --- | --- |" + " ---: |" * len(KEYS)]
    for name in [r[0] for r in ROWS] + ["constant velocity"]:
      for stage in ("float", "int"):
        m = results.get(f"{split}/{name}/{stage}")
        if m:
          out.append(f"| {name} | {stage if name != 'constant velocity' else ''} | "
                     + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
  return "\n".join(out)


if __name__ == "__main__":
  cli.run(main)
