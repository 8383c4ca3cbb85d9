"""Per-layer quantization sensitivity of a calibrated model: the val metric when only one quantization point is
int8 (others int16, `--mode=only`) or only one is int16 (others int8, `--mode=all_but`), sorted, and the int16
suggestion it implies (the points whose int8 quantization costs most, for config.quant.int16).

  python bin/sensitivity.py --config=configs/argo.py [--workdir=runs/argo] [--mode=only] [--num-batches=4] \
      [--layers='decoder/*'] [--group-depth=3] [--suggest=5]

Each evaluation compiles the fake-quant model anew (code widths are static under jit): on 2 CPU cores ~10-30 s
per point for the tiny config, more for the full one; --group-depth or --layers bound the count.
"""
import json
import os

from absl import flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.eval.sensitivity import MODES, covered, format_sensitivity, sensitivity_workdir, suggest_int16

flags.DEFINE_string("workdir", None, "Workdir holding the calibration checkpoint (default: config.workdir).")
flags.DEFINE_enum("stage", "calibration", ["calibration", "qat"], "Whose params and observers to use.")
flags.DEFINE_enum("mode", "only", list(MODES), "only: one point int8, others int16; all_but: one int16, others int8.")
flags.DEFINE_integer("num_batches", 4, "Val batches per evaluation (each point is one evaluation).")
flags.DEFINE_integer("batch_size", None, "Val batch size (default: config.train.eval_batch_size).")
flags.DEFINE_list("layers", None, "Only the points matching these globs (default: all).")
flags.DEFINE_integer("group_depth", 0, "Evaluate per module prefix of this many path components (0: per point).")
flags.DEFINE_integer("suggest", 5, "How many int16 candidates to suggest.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cfg = FLAGS.config
  workdir = FLAGS.workdir or cfg.workdir
  result = sensitivity_workdir(cfg, workdir, stage=FLAGS.stage, mode=FLAGS.mode, num_batches=FLAGS.num_batches,
                               batch_size=FLAGS.batch_size, layers=FLAGS.layers, group_depth=FLAGS.group_depth,
                               progress=lambda line: print(line, flush=True))
  int16 = tuple(cfg.quant.get("int16", ()) or ())
  print()
  print(format_sensitivity(result, int16))
  suggestion = suggest_int16(result, top=FLAGS.suggest)
  print(f"\nint16 suggestion (largest int8 cost first): {suggestion}")
  new = [s for s in suggestion if not covered(s, int16)]
  if new:
    print(f"not yet int16 in the config: {new}; add them to config.quant.int16 (globs), e.g. "
          f"--config.quant.int16=\"{tuple(list(int16) + new)}\"")
  result["suggest_int16"] = suggestion
  path = os.path.join(workdir, f"sensitivity_{FLAGS.mode}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
