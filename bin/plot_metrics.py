"""Training curves and the stage bars of a workdir (densetnt_jax.eval.curves.plot_metrics): train loss and val
minFDE_k6 / MR_k6 over steps from every `<stage>/metrics.jsonl`, and the K=6 metrics of every
`eval_<stage>.json` beside constant velocity.

  python bin/plot_metrics.py runs/demo [--out=runs/demo/plots]
"""
from absl import app, flags

from densetnt_jax import cli
from densetnt_jax.eval.curves import plot_metrics

flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/plots).")
flags.DEFINE_integer("dpi", 100, "PNG resolution.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("expected one argument, the workdir: bin/plot_metrics.py WORKDIR [--out=DIR]")
  for path in plot_metrics(argv[1], FLAGS.out, dpi=FLAGS.dpi):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  cli.run(main)
