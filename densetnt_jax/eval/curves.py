"""Training curves and the stage table as pictures, from what training and evaluation already write.

`metrics_figure`: training loss and val minFDE_k6 / MR_k6 over steps from `WORKDIR/<stage>/metrics.jsonl`
for every stage present, the stages laid end to end in pipeline order (float, calibration, qat, int).
`eval_bars_figure`: the K=6 metrics of every `WORKDIR/eval_<stage>.json` beside constant velocity.
`plot_metrics(workdir)` writes both (bin/plot_metrics.py). Figures use a private Agg canvas (no pyplot).
"""
from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from densetnt_jax.workdir import STAGES

STAGE_COLORS = {"float": "#1f77b4", "calibration": "#9467bd", "qat": "#ff7f0e", "int": "#d62728"}
CV_COLOR = "#7f7f7f"
BAR_METRICS = ("minADE_k6", "minFDE_k6", "MR_k6", "brier_minFDE_k6")


def _figure(figsize, dpi) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def read_metrics(workdir: str) -> dict[str, list[dict]]:
  """{stage: records of `workdir/<stage>/metrics.jsonl` sorted by step} for the stages present; a step logged
  twice (a resumed run) keeps its last record per key set."""
  out = {}
  for stage in STAGES:
    path = os.path.join(str(workdir), stage, "metrics.jsonl")
    if not os.path.isfile(path):
      continue
    records = []
    with open(path) as f:
      for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
          continue
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n}: not JSON ({e}); a truncated last line? remove it and rerun") from None
    # The last record wins for the same (step, keys): a resumed run re-logs the steps after its checkpoint.
    unique = {(int(r.get("step", 0)), tuple(sorted(r))): r for r in records}
    out[stage] = sorted(unique.values(), key=lambda r: int(r.get("step", 0)))
  return out


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  rows = [(int(r.get("step", 0)), float(r[key])) for r in records if key in r and r[key] is not None]
  if not rows:
    return np.zeros(0, np.int64), np.zeros(0)
  steps, values = zip(*rows)
  return np.asarray(steps), np.asarray(values)


def stage_offsets(metrics: dict[str, list[dict]]) -> dict[str, int]:
  """Where each stage starts on the shared step axis: after the last step of the stages before it (calibration
  and int log one record at step 0, so they sit at the boundary)."""
  offsets, start = {}, 0
  for stage in STAGES:
    if stage in metrics:
      offsets[stage] = start
      start += max([int(r.get("step", 0)) for r in metrics[stage]] + [0])
  return offsets


def _smooth(values_N: np.ndarray, window: int) -> np.ndarray:
  """Trailing mean over `window` points (shorter at the start): a readable trend over noisy batch losses."""
  if len(values_N) == 0 or window <= 1:
    return values_N
  c = np.cumsum(np.concatenate([[0.0], values_N]))
  i = np.arange(1, len(values_N) + 1)
  lo = np.maximum(i - window, 0)
  return (c[i] - c[lo]) / (i - lo)


def metrics_figure(workdir: str | None = None, *, metrics: dict[str, list[dict]] | None = None, dpi: int = 100,
                   smooth: int = 10, title: str | None = None) -> Figure:
  """Three panels over the shared step axis: train/loss (thin raw, thick trailing mean), val/minFDE_k6 and
  val/MR_k6, one colour per stage, dotted lines at the stage boundaries."""
  metrics = read_metrics(workdir) if metrics is None else metrics
  if not metrics:
    raise FileNotFoundError(f"no <stage>/metrics.jsonl under {workdir}: train a stage first (bin/train.py)")
  offsets = stage_offsets(metrics)
  fig = _figure((11.0, 3.6), dpi)
  axes = fig.subplots(1, 3, sharex=True)
  panels = (("train/loss", "training loss"), ("val/minFDE_k6", "val minFDE_k6 (m)"), ("val/MR_k6", "val MR_k6"))
  for ax, (key, label) in zip(axes, panels):
    for stage, records in metrics.items():
      steps, values = _series(records, key)
      if not len(steps):
        continue
      x = steps + offsets[stage]
      color = STAGE_COLORS[stage]
      if key == "train/loss":
        ax.plot(x, values, color=color, lw=0.6, alpha=0.35)
        ax.plot(x, _smooth(values, smooth), color=color, lw=1.8, label=stage)
      elif len(steps) == 1:
        ax.plot(x, values, ls="", marker="D", markersize=6, color=color, label=stage)
      else:
        ax.plot(x, values, color=color, lw=1.6, marker="o", markersize=3, label=stage)
    for stage, start in offsets.items():
      if start > 0:
        ax.axvline(start, color="#999999", ls=":", lw=1)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("step (stages end to end)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  handles, labels = [], []
  for ax in axes:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  order = [labels.index(s) for s in STAGES if s in labels]
  fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside right upper", fontsize=9,
             frameon=False, title="stage")
  fig.suptitle(title or f"training curves: {workdir}", fontsize=10)
  return fig


def read_evals(workdir: str) -> list[dict]:
  """The `workdir/eval_<stage>.json` results present, in stage order."""
  out = []
  for stage in STAGES:
    path = os.path.join(str(workdir), f"eval_{stage}.json")
    if os.path.isfile(path):
      with open(path) as f:
        out.append(json.load(f))
  return out


def eval_bars_figure(workdir: str | None = None, *, results: list[dict] | None = None, dpi: int = 100,
                     metric_keys=BAR_METRICS, title: str | None = None) -> Figure:
  """One panel per K=6 metric, a bar per stage and one for constant velocity, values printed on the bars;
  the split (and lmdb) each result was computed on in the title, or in the bar labels when they differ."""
  results = read_evals(workdir) if results is None else results
  if not results:
    raise FileNotFoundError(f"no eval_<stage>.json in {workdir}: run bin/eval.py --stage=... first")
  splits = [r.get("split", "?") for r in results]
  same = len(set(splits)) == 1
  bars = [(r["stage"] if same else f"{r['stage']}\n({s})", r["model"], STAGE_COLORS.get(r["stage"], "k"))
          for r, s in zip(results, splits)]
  seen = set()
  for r, s in zip(results, splits):   # one constant-velocity bar per split
    if s not in seen:
      seen.add(s)
      bars.append(("const.\nvelocity" if same else f"const. vel.\n({s})", r["constant_velocity"], CV_COLOR))
  fig = _figure((2.6 * len(metric_keys) + 0.4, 3.4 + 0.15 * len(bars) * (not same)), dpi)
  axes = fig.subplots(1, len(metric_keys))
  x = np.arange(len(bars))
  for ax, key in zip(np.atleast_1d(axes), metric_keys):
    values = [m.get(key, np.nan) for _, m, _ in bars]
    rects = ax.bar(x, values, color=[c for _, _, c in bars], width=0.7)
    ax.bar_label(rects, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, [n for n, _, _ in bars], fontsize=7, rotation=0 if same else 30)
    ax.set_title(key + (" (fraction)" if key.startswith("MR") else " (m)"), fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
  if title is None:
    n = results[0].get("num_sequences", "?")
    where = results[0].get("lmdb_path")
    title = (f"K=6 metrics on {splits[0]} ({n} sequences" + (f", {where}" if where else "") + ")" if same
             else "K=6 metrics (the splits differ between stages: see the bar labels)")
  fig.suptitle(title, fontsize=9)
  return fig


def plot_metrics(workdir: str, out_dir: str | None = None, *, dpi: int = 100) -> list[str]:
  """Writes `out_dir/curves.png` (from the metrics.jsonl files) and `out_dir/eval_bars.png` (from the
  eval_<stage>.json files) for what `workdir` holds (out_dir defaults to `workdir/plots`); returns the paths.
  Raises FileNotFoundError when the workdir has neither."""
  out_dir = out_dir or os.path.join(str(workdir), "plots")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  if read_metrics(workdir):
    path = os.path.join(out_dir, "curves.png")
    metrics_figure(workdir, dpi=dpi).savefig(path, format="png")
    paths.append(path)
  if read_evals(workdir):
    path = os.path.join(out_dir, "eval_bars.png")
    eval_bars_figure(workdir, dpi=dpi).savefig(path, format="png")
    paths.append(path)
  if not paths:
    raise FileNotFoundError(f"{workdir} has no <stage>/metrics.jsonl and no eval_<stage>.json: train and "
                            "evaluate a stage first")
  return paths
