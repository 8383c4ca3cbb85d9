"""Inference pictures (densetnt_jax.eval.infer.run): one PNG per scene (the view fitted to the agent, GT,
predictions and likely goals; the goal heatmap; the 6 modes by rank with their probabilities; the min-FDE mode;
the 2 m miss circle), the same scene for several stages side by side, a contact sheet of N scenes.

  python bin/infer.py --config=configs/argo.py:demo --save-path runs/demo/infer --num 8 [--stage=int]
  python bin/infer.py --config=configs/argo.py:demo --save-path runs/demo/infer --stages=float,int --num 4
  python bin/infer.py --config=configs/argo.py:demo --save-path runs/demo/infer --grid 9 --select=worst
"""
from absl import app, flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.api import STAGES
from densetnt_jax.eval.infer import SELECTIONS, run
from densetnt_jax.eval.visualize import VIEWS

flags.DEFINE_string("save_path", None, "Output directory for the PNGs.", required=True)
flags.DEFINE_integer("num", 10, "Scenes drawn one PNG each (with --grid: only when given).")
flags.DEFINE_enum("stage", "float", list(STAGES), "Which stage's checkpoint (one stage).")
flags.DEFINE_list("stages", None, "Several stages (e.g. float,int): each scene drawn once per stage, side by "
                  "side on shared axes (overrides --stage).")
flags.DEFINE_integer("grid", 0, "Also write one PNG with this many scenes in a grid (the first stage's).")
flags.DEFINE_enum("select", "first", list(SELECTIONS), "Which scenes: the first, the worst by minFDE_k6 of the "
                  "first stage, or random (--seed).")
flags.DEFINE_integer("seed", 0, "Seed of --select=random.")
flags.DEFINE_enum("view", "fit", list(VIEWS), "fit: the agent, GT, predictions and likely goals with a margin; "
                  "full: the whole vectorized scene (50 m around the agent).")
flags.DEFINE_integer("max_scenes", -1, "--select=worst scores the first this many scenes (all when <= 0).")
flags.DEFINE_integer("batch_size", 16, "Prediction batch size.")
flags.DEFINE_integer("dpi", None, "PNG resolution (default: 100 for scenes, 90 for the grid).")
flags.DEFINE_string("workdir", None, "Training workdir (default: config.workdir).")
flags.DEFINE_string("split", None, "Packed split (default: config.data.val_split).")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Experiment config.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  stages = FLAGS.stages or [FLAGS.stage]
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise app.UsageError(f"--stages={','.join(stages)}: unknown {unknown}; expected some of {list(STAGES)}")
  num = FLAGS.num if (FLAGS.grid <= 0 or FLAGS["num"].present) else 0
  paths = run(FLAGS.config, FLAGS.workdir or FLAGS.config.workdir, FLAGS.save_path, stages=stages, num=num,
              grid=FLAGS.grid, select=FLAGS.select, seed=FLAGS.seed, view=FLAGS.view, split=FLAGS.split,
              batch_size=FLAGS.batch_size, max_scenes=FLAGS.max_scenes, dpi=FLAGS.dpi)
  print(f"wrote {len(paths)} PNGs to {FLAGS.save_path}")
  return 0


if __name__ == "__main__":
  cli.run(main)
