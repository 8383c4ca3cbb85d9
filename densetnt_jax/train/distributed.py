"""Several hosts: `jax.distributed.initialize()` from the cluster's environment or from explicit flags.

Call `initialize` before anything touches a JAX device. Auto-detected (initialize() with no arguments, JAX
reads the environment): SLURM with more than one task, Cloud TPU VMs and TPU pods (GCE or GKE), Kubernetes
JobSets that set JAX_COORDINATOR_ADDRESS, Open MPI. Anywhere else give all three of coordinator_address,
num_processes and process_id (e.g. `bin/train.py --coordinator_address=host0:1234 --num_processes=2
--process_id=0` on the first host). Neither: a single process, nothing to do.
"""
from __future__ import annotations

import glob
import importlib.util
import os

import jax
from absl import logging


def detected_cluster() -> str | None:
  """The name of the multi-process environment this process runs in, or None."""
  env = os.environ
  if all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                             "SLURM_LOCALID")) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES") or env.get(
      "MEGASCALE_COORDINATOR_ADDRESS"):
    return "gke-tpu"
  if importlib.util.find_spec("libtpu") is not None and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
    return "cloud-tpu"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "jax-env"
  if "OMPI_MCA_orte_hnp_uri" in env:
    return "openmpi"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the processes of a multi-host run; returns whether `jax.distributed` was initialized."""
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError("give all of --coordinator_address, --num_processes and --process_id, or none of them "
                       f"(got coordinator_address={coordinator_address}, num_processes={num_processes}, "
                       f"process_id={process_id})")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} is outside [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                               process_id=int(process_id))
  else:
    cluster = detected_cluster()
    if cluster is None:
      return False
    logging.info("multi-process environment detected (%s): jax.distributed.initialize()", cluster)
    jax.distributed.initialize()
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True
