"""Runs one stage of DenseTNT's pipeline (HAT's `tools/train.py --stage ...`) in a workdir; each stage starts
from the previous one's best checkpoint, and the trained stages (float, qat) resume from their latest one.

  python bin/train.py --stage=float --config=configs/argo.py [--config.train.batch_size=32] [--workdir=runs/x]
  python bin/train.py --stage=calibration --config=configs/argo.py   # float best -> activation scales
  python bin/train.py --stage=qat --config=configs/argo.py           # fake-quant fine-tuning (config.qat)
  python bin/train.py --stage=int --config=configs/argo.py           # -> WORKDIR/int/program, interpreter eval
  # several hosts without a detected cluster (SLURM, TPU pods and GKE are detected), on each host i:
  python bin/train.py --stage=float --config=configs/argo.py --coordinator_address=host0:1234 \
      --num_processes=N --process_id=i
"""
from absl import app, flags
from ml_collections import config_flags

from densetnt_jax import cli
from densetnt_jax.train import checkpoint, distributed

flags.DEFINE_enum("stage", "float", ["float", "calibration", "qat", "int"], "Training stage.")
config_flags.DEFINE_config_file("config", "configs/argo.py", "Config file (`path.py:variant`).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and config.json go here (default: config.workdir).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host without a detected cluster).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  checkpoint.quiet_orbax_logging()
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from densetnt_jax.train.stages import run_stage  # after initialize: touches no device

  config = FLAGS.config
  metrics = run_stage(config, FLAGS.workdir or config.workdir, FLAGS.stage)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
