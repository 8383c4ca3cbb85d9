"""The README's real-traffic ablation: today's network (HAT's sparse goals + NMS), each DenseTNT addition on its
own, and all together, float and int, on real val (99) and val_large (499), beside constant velocity.

  python bin/ablation_real.py [--train] [--splits val,val_large] [--runs runs]      # or: make ablation

Each trained variant is a workdir (configs/argo.py:real with the variant's overrides; "all" is the config as
it is, `make real`'s runs/real); `--train` runs its missing stages (float, calibration, QAT, int: 25-45 min
per variant on 2 cores). Every variant trains with the same schedule; its validation (which picks the best
checkpoint) uses the variant's own post-processing.
Post-processing rows (endpoint, selection) reuse a variant's checkpoints and program with other
`config.postprocess` settings: the host epilogue, nothing on the accelerator changes. The best checkpoint of
each variant was chosen on val (99 scenes), so val_large (the 400 held-out archive scenes + those 99) is the
cleaner yardstick for comparing rows.
"""
import argparse
import importlib.util
import json
import os
import pathlib

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
    ("+ dense goals", "dense", "nms", "model"),
    ("+ lane scoring", "lane", "nms", "model"),
    ("all: dense, lane, fde, shift (default)", "all", "fde", "shift"),
    ("all, selection mr", "all", "mr", "shift"),
)
KEYS = ("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6", "minADE_k1", "minFDE_k1", "MR_k1")


def real_config(variant: str, selection: str | None = None, endpoint: str | None = None):
  spec = importlib.util.spec_from_file_location("argo_config", ROOT / "configs" / "argo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("real")
  v = VARIANTS[variant]
  c.model.dense_seeds = v.get("dense_seeds", c.model.dense_seeds)
  c.model.lane_scoring = v.get("lane_scoring", c.model.lane_scoring)
  c.postprocess.selection = selection or v.get("selection", c.postprocess.selection)
  c.postprocess.endpoint = endpoint or v.get("endpoint", c.postprocess.endpoint)
  return c


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train", action="store_true", help="train the variants' missing stages first")
  parser.add_argument("--splits", default="val,val_large", help="'' trains only")
  parser.add_argument("--runs", default="runs")
  parser.add_argument("--stages", default="float,int", help="stages in the table (a missing one reads n/a)")
  parser.add_argument("--variants", default=",".join(VARIANTS), help="the variants --train trains")
  parser.add_argument("--train_stages", default="float,calibration,qat,int", help="the stages --train runs")
  args = parser.parse_args()
  from densetnt_jax.eval.evaluate import evaluate
  from densetnt_jax.pipelines import run_stages
  from densetnt_jax.train.checkpoint import quiet_orbax_logging
  quiet_orbax_logging()
  workdir = {v: os.path.join(args.runs, spec["workdir"]) for v, spec in VARIANTS.items()}
  if args.train:
    wanted = args.train_stages.split(",")
    for v in args.variants.split(","):
      missing = [s for s in wanted if s == "float" or not os.path.exists(
          os.path.join(workdir[v], s, "program" if s == "int" else "best"))]
      run_stages(real_config(v), workdir[v], tuple(missing))
  if not args.splits:
    return
  results = {}
  for split in args.splits.split(","):
    cv = None
    lines = [f"{split}: {'':40s}" + "".join(f"{k:>16s}" for k in KEYS)]
    for name, variant, selection, endpoint in ROWS:
      config = real_config(variant, selection, endpoint)
      for stage in args.stages.split(","):
        if not os.path.isdir(os.path.join(workdir[variant], stage)):
          lines.append(f"{name + ' [' + stage + ']':48s}" + "".join(f"{'n/a':>16s}" for _ in KEYS))
          continue
        r = evaluate(config, workdir[variant], stage=stage, split=split, progress=False)
        cv = r["constant_velocity"]
        results[f"{split}/{name}/{stage}"] = r["model"]
        lines.append(f"{name + ' [' + stage + ']':48s}" + "".join(f"{r['model'][k]:16.3f}" for k in KEYS))
        print(lines[-1], flush=True)
    lines.append(f"{'constant velocity':48s}" + "".join(f"{cv[k]:16.3f}" for k in KEYS))
    print("\n".join(lines), flush=True)
    results[f"{split}/constant_velocity"] = cv
  with open(os.path.join(args.runs, "ablation_real.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {os.path.join(args.runs, 'ablation_real.json')}")


if __name__ == "__main__":
  main()
