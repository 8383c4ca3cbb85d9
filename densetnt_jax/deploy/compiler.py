"""Compiles a workdir's integer program into the deployable artifact (bin/compile_perf.py): refuses a program that
fails `checker` on `config.target`, writes `model.dtnt` (`artifact`), verifies it bit for bit against the
interpreter (reloaded here, and in a fresh process that imports only `runner`), then prints the cost estimate and
the measured latency (`perf`) and writes them with the verification to `perf.json`.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax

from densetnt_jax.deploy import artifact, checker, runner
from densetnt_jax.deploy.checker import TargetSpec
from densetnt_jax.deploy.perf import HAT_J6E_REFERENCE, estimate, format_perf, measure_interpreter, synthetic_inputs
from densetnt_jax.quant.interpreter import run_program
from densetnt_jax.quant.program import Program
from densetnt_jax.workdir import ARTIFACT_NAME, artifact_path, load_program


def verify_artifact(program: Program, path: str, *, batch: int = 1, fresh_check: bool = True) -> tuple[bool, dict]:
  """The artifact at `path` reloaded (and, with fresh_check, run in a fresh process) vs the interpreter on
  synthetic inputs of `batch` rows: (bit-exact everywhere, {check: bit-exact}); prints one line per check."""
  loaded = runner.load(path)
  inputs = synthetic_inputs(program, batch, seed=1)
  expected = jax.block_until_ready(run_program(program, inputs))
  got = run_program(loaded, inputs)
  same = all(runner.same_bits(a, b) for a, b in zip(expected, got))
  verification = dict(reloaded_bit_exact=same)
  print(f"reloaded artifact vs interpreter (batch {batch}): {'bit-exact' if same else 'DIFFERS'}")
  if fresh_check:
    bad = runner.verify_fresh_process(path, inputs, expected)
    verification["fresh_process_bit_exact"] = not bad
    print(f"fresh process (imports densetnt_jax.deploy.runner only) vs interpreter (batch {batch}): "
          + ("bit-exact" if not bad else f"DIFFERS in {bad}"))
    same = same and not bad
  return same, verification


def run(config, workdir: str, out_dir: str | None = None, reps: int = 5, measure: bool = True,
        fresh_check: bool = True, per_layer: bool = True, verify_batch: int = 1) -> int:
  """bin/compile_perf.py: check the workdir's int program against config.target, compile it to
  `<out_dir>/model.dtnt` (default `<workdir>/deploy`), verify the artifact (reload, and optionally a fresh
  process, bit for bit against the interpreter), print the perf table, write `perf.json`. 0 on success."""
  spec = TargetSpec.from_config(config.target)
  program = load_program(workdir)
  report = checker.check_program(program, spec)
  if not report.ok:
    print("\n".join(str(v) for v in report.violations))
    print(f"refusing to compile: the program does not fit target {spec.name} (bin/model_checker.py for the table)")
    return 1
  path = os.path.join(out_dir, ARTIFACT_NAME) if out_dir else artifact_path(workdir)
  out_dir = os.path.dirname(path)
  written = artifact.write(program, path, info=dict(target=spec.name, workdir=str(workdir)), target=spec)
  print(f"checked against {spec.name}: PASS; wrote {path}: {written['nbytes']} bytes, "
        f"sha256 {written['sha256'][:16]}...")
  same, verification = verify_artifact(program, path, batch=verify_batch, fresh_check=fresh_check)

  summaries = [estimate(program, spec, b) for b in spec.perf_batches]
  measured = [measure_interpreter(program, b, reps) for b in spec.perf_batches] if measure else []
  print(format_perf(program, spec, summaries, measured, per_layer))
  doc = dict(artifact=dict(written, path=path), target=dataclasses.asdict(spec), verification=verification,
             estimate=[s.as_dict() for s in summaries], measured_interpreter=measured, reference=HAT_J6E_REFERENCE)
  with open(os.path.join(out_dir, "perf.json"), "w") as f:
    json.dump(doc, f, indent=1)
  print(f"wrote {os.path.join(out_dir, 'perf.json')}")
  return 0 if same else 1
