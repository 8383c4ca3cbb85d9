"""Integer-program interpreter latency vs the float forward (predict: 2048 goals scored, top 150 completed, NMS)
at the same batch on this CPU; bar: interpreter <= 2x float.

  python benchmarks/bench_interpreter.py [--batch 32] [--reps 5]

Full config (configs/argo.py), random params, random but valid inputs (bench_model.random_batch), activation
scales calibrated on two such batches. Float is timed both whole-batch and in the train loop's micro-batches
(predict_step, chunk 8), the interpreter (mode "ops", its default: one jitted kernel per op) whole-batch and
as 8-scene calls; the ratio is best against best. The one-jit runner (mode "fused") is printed for reference. Timings are the best of several clean runs
(bench_model.best_time: runs during which other processes used > 5% of a core are discarded).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
BAR = 2.0


def _load(name: str, path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()

  from densetnt_jax.model import DenseTNT, build_model
  from densetnt_jax.quant import calibrate, convert, init_quant_state, run_program
  from densetnt_jax.train.step import predict_step

  bench = _load("bench_model", ROOT / "benchmarks" / "bench_model.py")
  config = bench._config()
  model = build_model(config)
  batch = bench.random_batch(config, args.batch, seed=1)
  inputs = {k: v for k, v in batch.items() if k not in ("future_Fx2", "goal_index", "has_future")}
  params = jax.jit(lambda k, x: model.init(k, x, method=DenseTNT.predict))(jax.random.key(0), inputs)["params"]
  start = time.perf_counter()
  quant = init_quant_state(model, params, inputs, config.quant)
  calib = [bench.random_batch(config, 8, seed=s) for s in (2, 3)]
  quant = calibrate(model, params, quant, calib, config.quant)
  program = convert(model, params, quant, inputs, config)
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; batch {args.batch}, full config; "
        f"calibrate + convert {time.perf_counter() - start:.1f} s, {len(program.ops)} program ops")

  float_whole = jax.jit(lambda p, x: model.apply({"params": p}, x, method=DenseTNT.predict))
  float_chunked = jax.jit(lambda p, x: predict_step(p, x, model=model))
  t_whole, c1, d1 = bench.best_time(float_whole, params, inputs, reps=args.reps)
  t_chunk, c2, d2 = bench.best_time(float_chunked, params, inputs, reps=args.reps)
  t_int, c3, d3 = bench.best_time(lambda x: run_program(program, x), inputs, reps=args.reps)
  t_fused, c5, d5 = bench.best_time(lambda x: run_program(program, x, mode="fused"), inputs, reps=args.reps)
  chunks = [{k: v[i:i + 8] for k, v in inputs.items()} for i in range(0, args.batch, 8)]
  t_int8, c4, d4 = bench.best_time(lambda xs: [run_program(program, x) for x in xs], chunks, reps=args.reps)
  t_float, t_interp = min(t_whole, t_chunk), min(t_int, t_int8)
  b = args.batch
  print(f"float forward, whole batch      {1e3 * t_whole:8.1f} ms  {b / t_whole:7.1f} scenes/s  "
        f"({c1} clean runs, {d1} discarded)")
  print(f"float forward, chunks of 8      {1e3 * t_chunk:8.1f} ms  {b / t_chunk:7.1f} scenes/s  "
        f"({c2} clean runs, {d2} discarded)")
  print(f"integer interpreter, whole      {1e3 * t_int:8.1f} ms  {b / t_int:7.1f} scenes/s  "
        f"({c3} clean runs, {d3} discarded)")
  print(f"integer interpreter, calls of 8 {1e3 * t_int8:8.1f} ms  {b / t_int8:7.1f} scenes/s  "
        f"({c4} clean runs, {d4} discarded)")
  print(f"integer interpreter, one jit    {1e3 * t_fused:8.1f} ms  {b / t_fused:7.1f} scenes/s  "
        f"({c5} clean runs, {d5} discarded; mode='fused', not counted in the ratio)")
  ratio = t_interp / t_float
  print(f"interpreter / float = {ratio:.2f}x (bar <= {BAR:.0f}x): {'OK' if ratio <= BAR else 'OVER THE BAR'}")


if __name__ == "__main__":
  main()
