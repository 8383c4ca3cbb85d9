"""Forward time of each primitive at DenseTNT sizes: float, fake-quant (QAT forward), fake-quant forward +
backward, integer kernel. Batch 8: goals 8 x 2048 x 128, polylines 8 x 96 x 128, hidden 128.

  .venv/bin/python benchmarks/bench_quant_ops.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from densetnt_jax.quant import arith as A
from densetnt_jax.quant import fakequant as F

B, G, P, H = 8, 2048, 96, 128


def timeit(fn, *args, reps=5):
  jax.block_until_ready(fn(*args))
  t = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t) / reps * 1e3


def main():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, G, H)), jnp.float32)
  kv = jnp.asarray(rng.standard_normal((B, P, H)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((H, H)) * 0.1, jnp.float32)
  b = jnp.zeros((H,), jnp.float32)
  g, beta = jnp.ones((H,)), jnp.zeros((H,))
  logits = jnp.asarray(rng.standard_normal((B, G)) * 3, jnp.float32)
  mask = jnp.asarray(rng.random((B, G)) < 0.8)
  s8 = A.activation_scale(4.0, 8)
  s16 = A.activation_scale(4.0, 16)
  sp = A.activation_scale(1.0, 8)
  alpha = 1 / np.sqrt(H)

  cases = {
      "dense 8x2048x128 @128 (int8)": (
          lambda x: x @ w + b,
          lambda x: F.dense(x, w, b, s8, s8),
          lambda q: A.dense(q, A.dense_params(w, b, s8, s8), 8), x, s8, 8),
      "dense (int16 in/out)": (
          lambda x: x @ w + b,
          lambda x: F.dense(x, w, b, s16, s16, x_bits=16, y_bits=16),
          lambda q: A.dense(q, A.dense_params(w, b, s16, s16, 16), 16, 16), x, s16, 16),
      "layernorm 8x2048x128": (
          lambda x: A.float_layernorm(x, g, beta),
          lambda x: F.layernorm(x, g, beta, s8, s8),
          lambda q: A.layernorm(q, A.layernorm_params(g, beta, s8, s8), 8), x, s8, 8),
      "softmax 8x2048 (int16 in, masked)": (
          lambda x: A.float_softmax(x, mask),
          lambda x: F.softmax(x, s16, sp, mask, x_bits=16),
          lambda q: A.softmax(q, A.softmax_params(s16, sp), mask), logits, s16, 16),
      "matmul 8x2048x128 @ (8x96x128)^T": (
          lambda x: jnp.einsum("bgh,bph->bgp", x, kv) * alpha,
          lambda x: F.matmul(x, kv, s8, s8, s8, transpose_b=True, alpha=alpha),
          lambda q: A.matmul(q, A.quantize(kv, s8, 8), A.matmul_params(s8, s8, s8, H, alpha=alpha), 8,
                             transpose_b=True), x, s8, 8),
      "masked max over 96 (8x96x128)": (
          lambda x: A.masked_max(x, mask[:, :P, None], -2),
          lambda x: F.masked_max(x, mask[:, :P, None], s8),
          lambda q: A.masked_max(q, mask[:, :P, None]), kv, s8, 8),
  }
  print(f"{'op':40s} {'float':>8s} {'fq fwd':>8s} {'fq f+b':>8s} {'int':>8s}  (ms, CPU, jit)")
  for name, (f_float, f_fq, f_int, arg, s, bits) in cases.items():
    q = A.quantize(arg, s, bits)
    t_float = timeit(jax.jit(f_float), arg)
    t_fq = timeit(jax.jit(f_fq), arg)
    t_grad = timeit(jax.jit(jax.grad(lambda a: jnp.sum(f_fq(a)))), arg)
    t_int = timeit(jax.jit(f_int), q)
    print(f"{name:40s} {t_float:8.2f} {t_fq:8.2f} {t_grad:8.2f} {t_int:8.2f}")


if __name__ == "__main__":
  main()
