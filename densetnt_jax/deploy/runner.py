"""Standalone runner of a compiled artifact: loads the file and runs it with the integer interpreter.

Imports jax, numpy, jsonschema and the program / interpreter / postprocess / checker / workdir modules only: no
flax, optax, orbax, model or training code, so a deployment host needs the artifact and this package's runtime,
nothing else (the artifact records the target it is checked against at load). The kernels are the interpreter's
(`run_program`), so results equal the interpreter's bit for bit.

  python -m densetnt_jax.deploy.runner ARTIFACT --inputs DIR --outputs DIR [--verbose]

DIR holds one `<field>.npy` per program input (trajs_TxVxC.npy, traj_vector_mask_TxV.npy, ...: the names
after `inputs/`), loaded with allow_pickle=False; every Prediction field is written as `<field>.npy`.
A bad artifact (`artifact.ArtifactError`: corrupt, forged, unsigned while DENSETNT_ARTIFACT_KEY is set, not
fitting its target) or bad inputs print one line `error: ...` and exit 2; --verbose shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from densetnt_jax.deploy import artifact
from densetnt_jax.quant.interpreter import run_program
from densetnt_jax.quant.program import Program


class Runner:
  """A loaded artifact: `Runner(path)(inputs)` -> Prediction (jax arrays); `.program`, `.header`."""

  def __init__(self, path: str):
    self.path = path
    self.program, self.header = artifact.read(path)

  @property
  def input_fields(self) -> list[str]:
    return [n.split("/", 1)[1] for n in self.program.inputs]

  def __call__(self, inputs: dict):
    return run_program(self.program, inputs)


def load(path: str) -> Program:
  """The program of an artifact file, after every check `artifact.read` makes (integrity, signature, schema,
  a trace of every op, the checker)."""
  return artifact.read(path)[0]


def check_inputs(program: Program, inputs: dict) -> None:
  """A ValueError naming the first input whose dtype or shape (any batch) is not the program's: the CLI's
  one-line error, not one from inside a jitted kernel."""
  batch = None
  for name, (shape, dtype) in program.inputs.items():
    field = name.split("/", 1)[1]
    if field not in inputs:
      raise ValueError(f"input {field!r} is missing; the program reads "
                       f"{[n.split('/', 1)[1] for n in program.inputs]}")
    x = np.asarray(inputs[field])
    batch = x.shape[0] if batch is None and x.ndim else batch
    want = tuple(batch if d is None else d for d in shape)
    if str(x.dtype) != dtype or tuple(x.shape) != want:
      raise ValueError(f"input {field!r} is {x.dtype}{list(x.shape)}; the program takes {dtype}{list(want)} "
                       "(the batch first, the same in every input)")


def load_inputs(directory: str, fields: list[str]) -> dict[str, np.ndarray]:
  """{field: array} of DIR/<field>.npy (allow_pickle=False: an object array is a ValueError, not code)."""
  missing = [f for f in fields if not os.path.isfile(os.path.join(directory, f"{f}.npy"))]
  if missing:
    raise FileNotFoundError(f"{directory} lacks " + ", ".join(f"{f}.npy" for f in missing))
  out = {}
  for f in fields:
    path = os.path.join(directory, f"{f}.npy")
    try:
      out[f] = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
      raise ValueError(f"{path}: not a readable plain .npy array ({type(e).__name__}: {e})") from None
  return out


def save_outputs(prediction, directory: str) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  for field, value in prediction._asdict().items():
    np.save(os.path.join(directory, f"{field}.npy"), np.asarray(value), allow_pickle=False)
  return list(prediction._fields)


TRAINING_SIDE = ("flax", "optax", "orbax")


def training_modules() -> list[str]:
  """Loaded modules a deployment host should not need: flax / optax / orbax, the model and the training code."""
  return sorted(m for m in sys.modules if m.split(".")[0] in TRAINING_SIDE
                or m.startswith(("densetnt_jax.model.densetnt", "densetnt_jax.train")))


def same_bits(a, b) -> bool:
  """Bit-for-bit equality (dtype, shape and every byte: -0.0 != 0.0, NaN payloads count)."""
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def verify_fresh_process(path: str, inputs: dict, reference, timeout: float = 600) -> list[str]:
  """Runs the artifact in a new Python process (`python -m densetnt_jax.deploy.runner`) on `inputs` and compares
  its outputs with `reference` (a Prediction); returns the fields that differ in any bit ([] = bit-exact)."""
  with tempfile.TemporaryDirectory() as tmp:
    in_dir, out_dir = os.path.join(tmp, "inputs"), os.path.join(tmp, "outputs")
    os.makedirs(in_dir)
    for field, value in inputs.items():
      np.save(os.path.join(in_dir, f"{field}.npy"), np.asarray(value), allow_pickle=False)
    proc = subprocess.run([sys.executable, "-m", "densetnt_jax.deploy.runner", path, "--inputs", in_dir,
                           "--outputs", out_dir], capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
      raise RuntimeError(f"the runner process failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return [f for f, v in reference._asdict().items()
            if not same_bits(np.load(os.path.join(out_dir, f"{f}.npy"), allow_pickle=False), v)]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("artifact")
  parser.add_argument("--inputs", required=True, help="directory of <field>.npy inputs")
  parser.add_argument("--outputs", required=True, help="directory the Prediction fields are written to")
  parser.add_argument("--verbose", action="store_true", help="a traceback with an error, not one line")
  args = parser.parse_args(argv)
  try:
    runner = Runner(args.artifact)
    inputs = load_inputs(args.inputs, runner.input_fields)
    check_inputs(runner.program, inputs)
  except (artifact.ArtifactError, FileNotFoundError, ValueError) as e:   # ArtifactError is a ValueError
    if args.verbose:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  start = time.perf_counter()
  pred = jax.block_until_ready(runner(inputs))
  seconds = time.perf_counter() - start
  fields = save_outputs(pred, args.outputs)
  batch = next(iter(inputs.values())).shape[0]
  print(f"ran {args.artifact} ({len(runner.program.ops)} ops) on batch {batch} in {seconds:.2f} s "
        f"(compile included); wrote {len(fields)} outputs to {args.outputs}; training-side modules loaded: "
        + (", ".join(training_modules()) or "none"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
