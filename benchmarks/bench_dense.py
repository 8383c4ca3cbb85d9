"""DenseTNT's additions on this machine, beside today's network in the same run: train and inference
throughput with and without the dense goal stage, and the host's mode selection per scene (NMS vs the goal-set
optimiser) at batch 64.

  python benchmarks/bench_dense.py [--reps 5]

Full config (configs/argo.py) with random but valid inputs (bench_model.random_batch). "today" is HAT's decoder
(model.dense_seeds = 0, no lane scoring, NMS); "dense" the config's defaults (dense stage, lane scoring, fde). Inference times
the whole predict step (encoder, goal scoring, top-k, completion, selection). Selection: `finish_prediction`
alone on 150 top-k goals per scene. Best of clean runs, as bench_model (runs disturbed by other processes are
discarded and counted).
"""
import argparse
import functools
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model import _config, _contended, best_time, random_batch   # noqa: E402

from densetnt_jax.data.scene import MODEL_INPUT_FIELDS   # noqa: E402
from densetnt_jax.model import build_model   # noqa: E402
from densetnt_jax.postprocess import PostprocessSettings, finish_prediction   # noqa: E402
from densetnt_jax.train.step import DEFAULT_CHUNK, init_train_state, make_optimizer, predict_step, train_step  # noqa: E402


def model_rates(config, train_batch: int, predict_batch: int, reps: int) -> dict:
  model = build_model(config)
  optimizer = make_optimizer(config.train, steps_per_epoch=1000)
  state = init_train_state(model, optimizer, jax.random.key(config.seed), random_batch(config, 2))
  step = functools.partial(train_step, model=model, optimizer=optimizer, loss_config=config.loss,
                           chunk_size=DEFAULT_CHUNK)
  batch = jax.device_put(random_batch(config, train_batch))
  compiled = jax.jit(step).lower(state, batch).compile()
  t_train, c1, _ = best_time(lambda s, x: compiled(s, x)[1]["loss"], state, batch, reps=reps)
  predict = jax.jit(functools.partial(predict_step, model=model, chunk_size=DEFAULT_CHUNK))
  inputs = jax.device_put({k: v for k, v in random_batch(config, predict_batch).items() if k in MODEL_INPUT_FIELDS})
  t_pred, c2, _ = best_time(predict, state.params, inputs, reps=reps)
  return dict(train=train_batch / t_train, predict=predict_batch / t_pred, clean=min(c1, c2))


def selection_ms(settings: PostprocessSettings, b: int, n: int, reps: int) -> tuple[float, int]:
  rng = np.random.default_rng(0)
  goals = jax.device_put(rng.uniform(-40, 40, size=(b, n, 2)).astype(np.float32))
  logp = jax.nn.log_softmax(jax.device_put(rng.normal(scale=2.0, size=(b, n)).astype(np.float32)))
  trajs = jax.device_put(np.zeros((b, n, 30, 2), np.float32))
  valid = jax.device_put(np.ones((b, n), bool))
  fn = jax.jit(lambda g, lp, v, t: finish_prediction(lp, g, lp, v, t, settings=settings).probs_BxK)
  t, clean, _ = best_time(fn, goals, logp, valid, trajs, reps=reps)
  return t * 1e3, clean


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train-batch", type=int, default=32)
  parser.add_argument("--predict-batch", type=int, default=64)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  dense = _config()
  today = _config()
  today.model.dense_seeds, today.model.lane_scoring = 0, False
  today.postprocess.selection, today.postprocess.endpoint = "nms", "model"
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; dense stage: {dense.model.dense_seeds} seeds, "
        f"{dense.model.dense_points} points, selection {dense.postprocess.selection}")
  rates = {name: model_rates(c, args.train_batch, args.predict_batch, args.reps)
           for name, c in (("today (no dense, NMS)", today), ("dense", dense))}
  for name, r in rates.items():
    print(f"{name:24s} train batch {args.train_batch}: {r['train']:6.1f} scenes/s   inference batch "
          f"{args.predict_batch}: {r['predict']:6.1f} scenes/s{_contended(r['clean'], args.reps)}")
  base, new = rates["today (no dense, NMS)"], rates["dense"]
  print(f"dense / today: train {new['train'] / base['train']:.2f}x, inference {new['predict'] / base['predict']:.2f}x")
  b, n = args.predict_batch, dense.model.top_k
  for sel in ("nms", "mr", "fde"):
    ms, clean = selection_ms(PostprocessSettings(selection=sel), b, n, args.reps)
    print(f"selection {sel:3s} (batch {b}, {n} goals): {ms:7.2f} ms/batch, {1e3 * ms / b:7.1f} us/scene"
          f"{_contended(clean, args.reps)}")


if __name__ == "__main__":
  main()
