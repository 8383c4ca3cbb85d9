"""Per-layer quantization sensitivity (beyond HAT; the vendor's precision guide: all-int16, all-int8, then move
the ops that cost most to int16). Each quantization point of a calibrated quant state is set to int8 alone
(every other point int16: `mode="only"`) or to int16 alone (every other point int8: `mode="all_but"`), its
scale re-derived from its own observer for that width, and the fake-quant model is scored on val.

Why int16 and not float for "the others": the fake-quant model has no per-point float switch, and an int16 point
whose scale comes from the same MSE observer has a step ~256x finer than int8 (measured: all-int16 is within
noise of float on the demo model, see the README), so it stands in for float while using the exact code path
the program runs. The sorted costs give the int16 suggestion: the points whose int8 quantization costs most,
as globs for `config.quant.int16`.
"""
from __future__ import annotations

import fnmatch
import time
from typing import Callable

import jax.numpy as jnp

from densetnt_jax.data.loader import open_split
from densetnt_jax.model import build_model
from densetnt_jax.quant import arith as A
from densetnt_jax.quant import observers as O
from densetnt_jax.train import loop
from densetnt_jax.train.checkpoint import restore_stage
from densetnt_jax.train.predict import stage_predict_fn
from densetnt_jax.workdir import MissingStageError

MODES = ("only", "all_but")
METRIC = "minFDE_k6"


def points(quant_state: dict, prefix: tuple = ()) -> list[str]:
  """Every quantization point's path, in pytree (sorted key) order."""
  if "qmax" in quant_state:
    return ["/".join(prefix)]
  out = []
  for k, v in sorted(quant_state.items()):
    out += points(v, prefix + (k,))
  return out


def point_bits(point: dict) -> int:
  return int(jnp.iinfo(jnp.asarray(point["qmax"]).dtype).bits)


def with_bits(quant_state: dict, bits_of: Callable[[str], int], quant_config, prefix: tuple = ()) -> dict:
  """The state with each point at `bits_of(path)` bits and its scale re-derived from its observer (the
  calibration's method); points already at that width keep their scale (e.g. QAT-frozen ones)."""
  if "qmax" in quant_state:
    name, bits = "/".join(prefix), bits_of("/".join(prefix))
    if bits == point_bits(quant_state):
      return dict(quant_state)
    if "observer" not in quant_state:
      raise KeyError(f"point {name!r} has no observer: sensitivity needs a calibrated quant state")
    st = O.ObserverState(**{k: jnp.asarray(v) for k, v in quant_state["observer"].items()})
    scale = O.scale_from(st, bits=bits, method=str(quant_config.get("observer", "mse")),
                         percentile=float(quant_config.get("percentile", 99.99)))
    qmax = jnp.asarray(A.qrange(bits)[1], jnp.int8 if bits == 8 else jnp.int16)
    return dict(quant_state, qmax=qmax, scale=jnp.asarray(scale, jnp.float32))
  return {k: with_bits(v, bits_of, quant_config, prefix + (k,)) for k, v in quant_state.items()}


def in_unit(name: str, unit: str) -> bool:
  """A point belongs to a unit: the point itself, or a module prefix of its path."""
  return name == unit or name.startswith(unit + "/")


def group(names: list[str], depth: int) -> list[str]:
  """Units of at most `depth` path components (module prefixes), in order: one evaluation per unit."""
  return list(dict.fromkeys("/".join(n.split("/")[:depth]) for n in names))


def sensitivity(score: Callable[[dict], dict], quant_state: dict, quant_config, *, mode: str = "only",
                layers: list[str] | None = None, progress: Callable[[str], None] | None = None) -> dict:
  """`score(quant_state) -> metrics` for the reference (all int16 for "only", all int8 for "all_but") and once
  per unit of `layers` (points or module prefixes of points; default: every point). Returns {"mode",
  "reference": metrics, "all_int8", "all_int16", "rows": [{"layer", "points" (its members), "metrics", "cost"}] sorted by
  cost (metric increase due to int8 at that unit), highest first}."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
  names = points(quant_state)
  layers = names if layers is None else layers
  members = {l: [n for n in names if in_unit(n, l)] for l in layers}
  unknown = [l for l, m in members.items() if not m]
  if unknown:
    raise KeyError(f"not quantization points (nor module prefixes of any): {unknown}; the points are {names}")
  results = {}
  for ref_bits in (16, 8):
    start = time.perf_counter()
    results[ref_bits] = score(with_bits(quant_state, lambda n, b=ref_bits: b, quant_config))
    if progress:
      progress(f"all int{ref_bits}: {METRIC} {results[ref_bits][METRIC]:.4f} ({time.perf_counter() - start:.0f} s)")
  ref_bits, layer_bits = (16, 8) if mode == "only" else (8, 16)
  reference = results[ref_bits]
  rows = []
  for i, layer in enumerate(layers):
    start = time.perf_counter()
    m = score(with_bits(quant_state, lambda n: layer_bits if in_unit(n, layer) else ref_bits, quant_config))
    delta = m[METRIC] - reference[METRIC]
    cost = delta if mode == "only" else -delta       # what int8 at this point costs
    rows.append({"layer": layer, "points": members[layer], "metrics": m, "cost": cost})
    if progress:
      progress(f"[{i + 1}/{len(layers)}] {layer}: {METRIC} {m[METRIC]:.4f}, cost {cost:+.4f} "
               f"({time.perf_counter() - start:.0f} s)")
  rows.sort(key=lambda r: -r["cost"])
  return {"mode": mode, "metric": METRIC, "reference": reference, "all_int8": results[8],
          "all_int16": results[16], "rows": rows}


def suggest_int16(result: dict, *, top: int = 5, min_cost: float = 0.0) -> list[str]:
  """The points whose int8 quantization costs most (at most `top`, cost > `min_cost`): int16 candidates."""
  return [r["layer"] for r in result["rows"][:top] if r["cost"] > min_cost]


def covered(layer: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(layer, p) for p in patterns)


def format_sensitivity(result: dict, int16_patterns=(), max_rows: int | None = None) -> str:
  """Sorted table: cost of int8 at each point, the metric, and whether config.quant.int16 already covers it."""
  rows = result["rows"] if max_rows is None else result["rows"][:max_rows]
  width = max([len(r["layer"]) for r in rows] + [5]) + 2
  ref = "all int16" if result["mode"] == "only" else "all int8"
  what = ("only this point int8, others int16" if result["mode"] == "only"
          else "only this point int16, others int8")
  lines = [f"mode {result['mode']!r}: {what}; cost = increase of val {result['metric']} due to int8 at the point",
           f"all int16: {result['all_int16'][METRIC]:.4f}   all int8: {result['all_int8'][METRIC]:.4f}   "
           f"(reference: {ref})", ""]
  head = "layer".ljust(width) + f"{'cost':>10}{METRIC:>12}{'MR_k6':>10}  configured"
  lines += [head, "-" * len(head)]
  for r in rows:
    hits = [covered(n, int16_patterns) for n in r.get("points", [r["layer"]])]
    conf = "int16" if all(hits) else "mixed" if any(hits) else "int8"
    lines.append(r["layer"].ljust(width) + f"{r['cost']:+10.4f}{r['metrics'][METRIC]:12.4f}"
                 f"{r['metrics'].get('MR_k6', float('nan')):10.4f}  {conf}")
  if max_rows is not None and len(result["rows"]) > max_rows:
    lines.append(f"... {len(result['rows']) - max_rows} more points")
  return "\n".join(lines)


def score_fn(config, params, dataset, *, num_batches: int, batch_size: int) -> Callable[[dict], dict]:
  """quant_state -> val metrics of the fake-quant model on the first `num_batches` batches."""
  model = build_model(config)
  mesh = loop.make_mesh()
  predict = stage_predict_fn("calibration", model=model, mesh=mesh)
  params = loop.replicate(params, mesh)

  def score(quant_state):
    return loop.evaluate_split(predict, params, dataset, config.eval, batch_size, mesh, max_batches=num_batches,
                         prefetch=config.data.prefetch, quant=loop.replicate(quant_state, mesh))

  return score


def sensitivity_workdir(config, workdir, *, stage: str = "calibration", mode: str = "only",
                        num_batches: int = 4, batch_size: int | None = None, layers=None, group_depth: int = 0,
                        progress=None) -> dict:
  """`sensitivity` of a workdir's calibration (or qat) checkpoint on its val split: per point matching the
  `layers` globs (default: all), or per module prefix of `group_depth` components (fewer evaluations: each
  one compiles the fake-quant model anew, since code widths are static)."""
  try:
    params, quant, _ = restore_stage(workdir, stage, "best")
  except FileNotFoundError as e:
    raise MissingStageError(f"sensitivity reads the {stage} checkpoint: {e}") from e
  if quant is None:
    raise MissingStageError(f"the {stage} checkpoint has no quant state; use --stage=calibration or qat")
  dataset = open_split(config.data, config.data.val_split)
  patterns = layers
  names = points(quant)
  if patterns:
    names = [n for n in names if covered(n, patterns)]
    if not names:
      raise KeyError(f"no quantization point matches {patterns}")
  if group_depth:
    names = group(names, group_depth)
  score = score_fn(config, params, dataset, num_batches=num_batches,
                   batch_size=batch_size or config.train.eval_batch_size)
  return sensitivity(score, quant, config.quant, mode=mode, layers=names, progress=progress)
