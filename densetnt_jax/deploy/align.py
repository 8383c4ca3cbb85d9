"""QAT model vs integer program on the same batches (HAT's align_bpu validation): per quantized op, the share of
identical integer codes and the largest difference in LSB, plus the end metrics of both.

The fake-quant model exposes each op's output codes in its `intermediates` collection and the interpreter
returns them with `return_codes=True`, both keyed by the op's path in the model tree
(`encoder/traj_subgraph/layer_0/dense`); the board's data pipeline is batch 30, no shuffle.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import sys

import jax
import numpy as np

from densetnt_jax.data.loader import open_split
from densetnt_jax.data.scene import model_inputs
from densetnt_jax.deploy import runner
from densetnt_jax.metrics import TABLE_METRICS as METRICS
from densetnt_jax.metrics import Agreement, evaluate
from densetnt_jax.model import DenseTNT, build_model
from densetnt_jax.progress import progress_bar
from densetnt_jax.quant import codes_by_name, run_program
from densetnt_jax.train.checkpoint import restore_stage
from densetnt_jax.train.step import variables
from densetnt_jax.workdir import MissingStageError, deployed_paths, load_program

BOARD_BATCH = 30        # HAT's align_bpu data pipeline: batch 30, no shuffle


@functools.partial(jax.jit, static_argnames=("model",))
def _fake_quant_with_codes(params, quant, inputs: dict, *, model):
  """The fake-quant predict and every op's output codes (its `intermediates`); one compile per model."""
  pred, state = model.apply(variables(params, quant), inputs, method=DenseTNT.predict, mutable=["intermediates"])
  return pred, state.get("intermediates", {})


def align(config, params, quant, program, dataset, *, num_batches: int = -1, batch_size: int = BOARD_BATCH,
          progress: bool = False, artifact=None, int_onnx=None) -> dict:
  """Runs the fake-quant model (params + quant) and the integer `program` on the first `num_batches`
  (-1: all) batches of `dataset` in order. Returns {"layers": [{"layer", "identical", "max_lsb",
  "elements"}] (program order), "fake_quant": metrics, "int": metrics, "num_sequences", "missing": [...]}.

  artifact: the program read back from the compiled file (`deploy.runner.load`): its predictions must equal
  the interpreter's bit for bit ("artifact": {batches, differing: [field, ...]}). int_onnx: an onnxruntime
  session of the integer ONNX export: its five outputs and per-op codes against the interpreter's
  ("int_onnx": the export's comparison and its failures under config.export)."""
  model = build_model(config)

  stats: dict[str, Agreement] = {}
  order: list[str] = []
  missing: set[str] = set()
  n_batches = dataset.num_batches(batch_size, drop_remainder=False)
  if num_batches > 0:
    n_batches = min(n_batches, num_batches)
  artifact_batches, artifact_differs = 0, set()

  def predict(batch):
    """Both sides' predictions; the per-op codes (and the artifact's predictions) compared on the way."""
    nonlocal artifact_batches
    inputs = model_inputs(batch)
    pred_fq, inter = jax.device_get(_fake_quant_with_codes(params, quant, inputs, model=model))
    pred_int, codes = jax.device_get(run_program(program, inputs, return_codes=True))
    if artifact is not None:
      pred_art = jax.device_get(run_program(artifact, inputs))
      artifact_batches += 1
      artifact_differs.update(f for f, a, b in zip(pred_int._fields, pred_int, pred_art)
                              if np.asarray(a).tobytes() != np.asarray(b).tobytes())
    codes_fq, codes_int = codes_by_name(inter), dict(codes)
    for k in codes_fq:
      if k not in codes_int:
        missing.add(f"{k} (fake-quant only)")
    for k in codes_int:
      if k not in codes_fq:
        missing.add(f"{k} (program only)")
        continue
      a, b = codes_fq[k], codes_int[k]
      if a.shape != b.shape:
        raise ValueError(f"layer {k}: fake-quant codes have shape {a.shape}, the program's {b.shape}")
      if k not in stats:
        stats[k] = Agreement(1.0)        # codes: one LSB is 1
        order.append(k)
      stats[k].add(a, b)
    return {"fake_quant": (pred_fq.trajs_BxKxFx2, pred_fq.probs_BxK),
            "int": (pred_int.trajs_BxKxFx2, pred_int.probs_BxK)}

  accs = evaluate(predict, progress_bar(dataset.batches(batch_size), total=n_batches, desc="align",
                                        disable=not progress, unit="batch"),
                  ks=(6, 1), miss_threshold=config.eval.miss_threshold, max_batches=n_batches)
  rank = {name: i for i, name in enumerate(program.code_ops())}
  order.sort(key=lambda k: rank.get(k, len(rank)))            # program (execution) order
  layers = [{"layer": k, "identical": r["identical"], "max_lsb": int(r["max_lsb"]), "elements": r["elements"]}
            for k, r in ((k, stats[k].result()) for k in order)]
  result = {"layers": layers, "fake_quant": accs["fake_quant"].result(), "int": accs["int"].result(),
            "num_sequences": accs["int"].num_sequences, "num_batches": n_batches, "batch_size": batch_size,
            "missing": sorted(missing)}
  if artifact is not None:
    result["artifact"] = {"batches": artifact_batches, "differing": sorted(artifact_differs)}
  if int_onnx is not None:
    from densetnt_jax.deploy import onnx_check      # onnx is optional (the [onnx] extra): only with an export
    # a second pass over the same batches (the loader is cheap) rather than holding the whole split in memory
    batches = (model_inputs(b) for b in itertools.islice(dataset.batches(batch_size), n_batches))
    res = onnx_check.compare_batches(int_onnx, batches, onnx_check.int_reference(program),
                                     complete=onnx_check.complete_int(program))
    res["failures"] = onnx_check.failures("int", res, config)
    result["int_onnx"] = res
  return result


def check(result: dict, *, min_identical: float, max_lsb: int, max_metric_diff: float) -> list[str]:
  """The reasons `result` fails the bars (empty: it passes)."""
  failures = []
  for row in result["layers"]:
    if row["identical"] < min_identical or row["max_lsb"] > max_lsb:
      failures.append(f"{row['layer']}: {100 * row['identical']:.3f}% identical codes (bar "
                      f"{100 * min_identical:.3f}%), max {row['max_lsb']} LSB (bar {max_lsb})")
  for m in result["missing"]:
    failures.append(f"codes of one side only: {m}")
  if not result["layers"]:
    failures.append("no layer codes to compare (neither side returned integer codes)")
  if "artifact" in result and result["artifact"]["differing"]:
    failures.append("compiled artifact vs interpreter: " + ", ".join(result["artifact"]["differing"]) + " differ")
  if "int_onnx" in result:
    failures += [f"int ONNX vs interpreter: {f}" for f in result["int_onnx"]["failures"]]
  for k in METRICS:
    a, b = result["fake_quant"].get(k), result["int"].get(k)
    if a is not None and b is not None and abs(a - b) > max_metric_diff:
      failures.append(f"end metric {k}: fake-quant {a:.4f} vs int {b:.4f} (bar |diff| <= {max_metric_diff})")
  return failures


def format_align_table(result: dict, max_rows: int | None = None) -> str:
  """Per-layer table (% identical, max |diff| LSB, elements), then both end metrics."""
  rows = result["layers"]
  width = max([len(r["layer"]) for r in rows] + [5]) + 2
  head = "layer".ljust(width) + f"{'identical %':>14}{'max LSB':>10}{'elements':>14}"
  lines = [head, "-" * len(head)]
  shown = rows if max_rows is None else sorted(rows, key=lambda r: (r["identical"], -r["max_lsb"]))[:max_rows]
  for r in shown:
    lines.append(r["layer"].ljust(width) + f"{100 * r['identical']:14.4f}{r['max_lsb']:10d}{r['elements']:14d}")
  if max_rows is not None and len(rows) > max_rows:
    lines.append(f"... {len(rows) - max_rows} more layers (the {max_rows} least aligned shown)")
  total = sum(r["elements"] for r in rows)
  same = sum(r["identical"] * r["elements"] for r in rows)
  lines.append(f"all {len(rows)} layers: {100 * same / max(total, 1):.4f}% identical, max "
               f"{max([r['max_lsb'] for r in rows] + [0])} LSB")
  lines.append("")
  lines.append("".ljust(14) + "".join(k.rjust(12) for k in METRICS))
  for name in ("fake_quant", "int"):
    lines.append(name.ljust(14) + "".join(f"{result[name].get(k, float('nan')):12.4f}" for k in METRICS))
  lines.append(f"({result['num_sequences']} sequences in {result['num_batches']} batches of {result['batch_size']})")
  if "artifact" in result:
    a = result["artifact"]
    lines.append(f"compiled artifact vs interpreter: {a['batches']} batches, "
                 + ("bit-identical" if not a["differing"] else "DIFFERS in " + ", ".join(a["differing"])))
  if "int_onnx" in result:
    r = result["int_onnx"]
    same = min(o["identical"] for o in r["outputs"].values())
    lines.append(f"int ONNX (onnxruntime) vs interpreter: {len(r['outputs'])} outputs, lowest identical "
                 f"share {100 * same:.4f}%, " + ("within config.export" if not r["failures"] else
                                                 f"{len(r['failures'])} failures"))
  for name, what in (("artifact", "compiled artifact"), ("int_onnx", "int ONNX")):
    if name not in result and result.get(f"{name}_absent"):
      lines.append(f"{what}: not checked, {result[f'{name}_absent']}")
  return "\n".join(lines)


def align_workdir(config, workdir, *, num_batches: int = -1, batch_size: int = BOARD_BATCH, split=None,
                  progress: bool = True) -> dict:
  """`align` of a workdir's qat best and int program on its val split."""
  try:
    params, quant, _ = restore_stage(workdir, "qat", "best")
  except FileNotFoundError as e:
    raise MissingStageError(f"align needs the qat checkpoint: {e}") from e
  program = load_program(workdir)
  dataset = open_split(config.data, split or config.data.val_split)
  artifact_path, onnx_path = deployed_paths(workdir)
  artifact = int_onnx = None
  absent = {}
  if os.path.isfile(artifact_path):
    artifact = runner.load(artifact_path)
  else:
    absent["artifact_absent"] = f"no {artifact_path} (bin/compile_perf.py writes it)"
  if os.path.isfile(onnx_path):
    from densetnt_jax.deploy import onnx_check      # onnx is optional (the [onnx] extra): only with an export
    int_onnx = onnx_check.make_session(onnx_path)
  else:
    absent["int_onnx_absent"] = f"no {onnx_path} (bin/export_onnx.py --stage=int writes it)"
  result = align(config, params, quant, program, dataset, num_batches=num_batches, batch_size=batch_size,
                 progress=progress, artifact=artifact, int_onnx=int_onnx)
  return dict(result, **absent)


def run(config, workdir, *, num_batches: int = -1, batch_size: int = BOARD_BATCH, max_rows: int | None = None,
        progress: bool = True) -> int:
  """bin/align_bpu_validation.py: prints the table, writes {workdir}/align_bpu_validation.json (with the
  failures) and returns the exit status: 0 when every bar of config.quant holds, else 1."""
  result = align_workdir(config, workdir, num_batches=num_batches, batch_size=batch_size, progress=progress)
  print(format_align_table(result, max_rows=max_rows))
  q = config.quant
  failures = check(result, min_identical=q.align_min_identical, max_lsb=q.align_max_lsb,
                   max_metric_diff=q.align_max_metric_diff)
  result["failures"] = failures
  path = os.path.join(str(workdir), "align_bpu_validation.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  if failures:
    print(f"\nFAILED ({len(failures)}):\n  " + "\n  ".join(failures), file=sys.stderr)
    print(f"wrote {path}")
    return 1
  print(f"\nPASSED: every layer >= {100 * q.align_min_identical:.3f}% identical codes and <= {q.align_max_lsb} LSB; "
        f"end metrics within {q.align_max_metric_diff}; wrote {path}")
  return 0
