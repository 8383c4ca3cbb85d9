"""Performance estimate of an integer program on a target (`config.target`), and the interpreter's measured
latency on this machine (printed beside it by `format_perf`). `compiler.run` (bin/compile_perf.py) compiles the
artifact and reports both.

Per layer at batch B: MACs (dense: rows x K x N; matmul: output elements x K), element-wise integer work
(requant, layernorm, softmax, adds, pooling: output elements x a per-kind op count), parameter bytes (the
op's constants as stored), activation bytes in and out (at their code width). Latency =
max(MACs / (peak MAC/s x efficiency, x int16_throughput when an operand is int16) + element ops / vector
rate, bytes / DRAM bandwidth) + a per-layer overhead. Reshapes and size-preserving indexing are views
(free); host ops (the float log-softmax) are listed but not counted on-chip. Every activation is assumed to
travel through DRAM (no on-chip fusion): a conservative, bandwidth-heavy model.

Peak activation memory: a liveness walk over the op list (a buffer is freed after its last reader; views share
their source's buffer; program inputs count, outputs live to the end).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from densetnt_jax.deploy.checker import TargetSpec, tensor_bytes
from densetnt_jax.quant.interpreter import run_program
from densetnt_jax.quant.ops import elements, op_def
from densetnt_jax.quant.program import Program

# HAT's published DenseTNT figure on J6E (batch 30), printed beside our estimate
HAT_J6E_REFERENCE = dict(batch=30, latency_ms=11.30, fps=144.7, source="HAT DenseTNT (J6E, batch 30)")
@dataclasses.dataclass
class LayerPerf:
  name: str
  kind: str
  bits: int
  int16: bool                   # a MAC operand is int16
  macs: int
  element_ops: int
  param_bytes: int
  act_bytes: int                # activations read + written
  compute_us: float
  memory_us: float
  latency_us: float             # on-chip estimate (0 for views and host ops)
  where: str                    # "chip", "view", "host"

  @property
  def bound(self) -> str:
    if self.where != "chip":
      return self.where
    return "compute" if self.compute_us >= self.memory_us else "memory"


def _tensors(program: Program) -> dict:
  """{tensor: (shape, bits, dtype)} of the program inputs and every op output."""
  t = {n: (s, 0, d) for n, (s, d) in program.inputs.items()}
  t.update({o.name: (o.shape, o.bits, o.dtype) for o in program.ops})
  return t


def layer_perf(program: Program, spec: TargetSpec, batch: int) -> list[LayerPerf]:
  tensors = _tensors(program)
  mac_rate = spec.peak_int8_tops * 1e12 / 2 * spec.mac_efficiency       # TOPS count a MAC as 2 ops
  out = []
  for o in program.ops:
    in_bytes = sum(tensor_bytes(*tensors[i], batch) for i in o.inputs)
    out_bytes = tensor_bytes(o.shape, o.bits, o.dtype, batch)
    params = sum(int(np.asarray(v).nbytes) for v in o.consts.values())
    d = op_def(o.kind)     # MACs and element ops per op kind: the op table's cost entries (assumptions there)
    macs = d.macs(o, tensors, batch) if d.macs is not None else 0
    work = d.work(o, tensors, batch) if d.work is not None else elements(o.shape, batch)
    elem = work * d.element_ops
    int16 = any(tensors[i][1] > 8 for i in o.inputs) and macs > 0
    where = "host" if o.kind in spec.host_ops else "view" if d.is_view(o, tensors) else "chip"
    compute = (macs / (mac_rate * (spec.int16_throughput if int16 else 1.0)) + elem / (spec.vector_gops * 1e9)) * 1e6
    memory = (in_bytes + out_bytes + params) / (spec.dram_gb_per_s * 1e9) * 1e6
    latency = max(compute, memory) + spec.op_overhead_us if where == "chip" else 0.0
    out.append(LayerPerf(o.name, o.kind, o.bits, int16, macs, elem, params, in_bytes + out_bytes, compute, memory,
                         latency, where))
  return out


def peak_activation_bytes(program: Program, batch: int) -> tuple[int, str]:
  """(peak bytes of live activations, the op at the peak) walking the op list once."""
  tensors = _tensors(program)
  buffer_of = {n: n for n in program.inputs}
  size = {n: tensor_bytes(*tensors[n], batch) for n in program.inputs}
  last_read = {}
  for i, o in enumerate(program.ops):
    for x in o.inputs:
      last_read[x] = i
  for role, name in program.outputs.items():
    last_read[name] = len(program.ops)
  for i, o in enumerate(program.ops):                 # a view keeps its source buffer alive as long as it lives
    if op_def(o.kind).is_view(o, tensors):
      buffer_of[o.name] = buffer_of[o.inputs[0]]
    else:
      buffer_of[o.name] = o.name
      size[o.name] = tensor_bytes(o.shape, o.bits, o.dtype, batch)
  buffer_end = {}
  for t, b in buffer_of.items():
    buffer_end[b] = max(buffer_end.get(b, -1), last_read.get(t, -1))
  live = set(program.inputs)
  peak, at = sum(size[b] for b in live), "inputs"
  for i, o in enumerate(program.ops):
    live.add(buffer_of[o.name])                       # inputs and output both live during the op
    now = sum(size[b] for b in live)
    if now > peak:
      peak, at = now, o.name
    live = {b for b in live if buffer_end[b] > i}
  return peak, at


@dataclasses.dataclass
class PerfSummary:
  batch: int
  macs: int
  element_ops: int
  param_bytes: int
  act_bytes: int
  peak_activation_bytes: int
  peak_at: str
  latency_ms: float
  layers: list

  @property
  def fps(self) -> float:
    """Batches per second at this latency, one batch at a time (no pipelining across cores)."""
    return 1e3 / self.latency_ms

  def as_dict(self, with_layers: bool = True) -> dict:
    d = dict(batch=self.batch, macs=self.macs, element_ops=self.element_ops, param_bytes=self.param_bytes,
             act_bytes=self.act_bytes, peak_activation_bytes=self.peak_activation_bytes, peak_at=self.peak_at,
             latency_ms=self.latency_ms, fps=self.fps, scenes_per_s=self.batch * self.fps)
    if with_layers:
      d["layers"] = [dict(dataclasses.asdict(l), bound=l.bound) for l in self.layers]
    return d


def estimate(program: Program, spec: TargetSpec, batch: int) -> PerfSummary:
  layers = layer_perf(program, spec, batch)
  peak, at = peak_activation_bytes(program, batch)
  return PerfSummary(batch, sum(l.macs for l in layers), sum(l.element_ops for l in layers),
                     sum(l.param_bytes for l in layers), sum(l.act_bytes for l in layers if l.where == "chip"),
                     peak, at, sum(l.latency_us for l in layers) / 1e3, layers)


# ------------------------------------------------------------------------------------------- measured
def synthetic_inputs(program: Program, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Inputs of the program's shapes: floats ~ N(0, 10) (metres), masks True with probability 0.8."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, (shape, dtype) in program.inputs.items():
    full = (batch,) + tuple(shape[1:])
    if dtype == "bool":
      out[name.split("/", 1)[1]] = rng.random(full) < 0.8
    else:
      out[name.split("/", 1)[1]] = (rng.normal(size=full) * 10).astype(dtype)
  return out


def measure_interpreter(program: Program, batch: int, reps: int = 5, seed: int = 0) -> dict:
  """The jitted interpreter's wall time on this machine: compile (first call), then the best of `reps` runs."""
  inputs = synthetic_inputs(program, batch, seed)
  start = time.perf_counter()
  jax.block_until_ready(run_program(program, inputs))
  first = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(run_program(program, inputs))
    times.append(time.perf_counter() - start)
  return dict(batch=batch, best_ms=min(times) * 1e3, median_ms=float(np.median(times)) * 1e3,
              first_call_s=first, reps=reps)


# ------------------------------------------------------------------------------------------------ table
def format_perf(program: Program, spec: TargetSpec, summaries: list[PerfSummary], measured: list[dict] | None = None,
                per_layer: bool = True) -> str:
  """Per-layer table (MACs and bytes per scene, estimated us at each batch), then totals and the reference."""
  one = estimate(program, spec, 1)
  lines = []
  if per_layer:
    head = (f"{'layer':<46} {'kind':<15} {'bits':>4} {'MMAC/scene':>10} {'params B':>9} {'act KB/scene':>12} "
            + " ".join(f"{'us@' + str(s.batch):>9}" for s in summaries) + f" {'bound@' + str(summaries[-1].batch):>8}")
    lines += [head, "-" * len(head)]
    for i, l in enumerate(one.layers):
      if l.where == "view":
        continue
      lat = " ".join(f"{s.layers[i].latency_us:>9.1f}" for s in summaries)
      lines.append(f"{l.name[:46]:<46} {l.kind:<15} {l.bits or '-':>4} {l.macs / 1e6:>10.2f} {l.param_bytes:>9} "
                   f"{l.act_bytes / 1024:>12.1f} {lat} {summaries[-1].layers[i].bound:>8}")
    lines.append("-" * len(head))
  chip = [l for l in one.layers if l.where == "chip"]
  lines.append(f"{len(chip)} on-chip layers ({sum(l.int16 for l in chip)} with int16 MACs), "
               f"{sum(l.where == 'view' for l in one.layers)} views, "
               f"{sum(l.where == 'host' for l in one.layers)} host op(s)")
  lines.append(f"MACs per scene {one.macs / 1e6:.1f} M; element-wise ops per scene {one.element_ops / 1e6:.1f} M; "
               f"parameters {one.param_bytes} bytes ({one.param_bytes / 1024:.1f} KiB)")
  lines.append(f"target {spec.name}: {spec.peak_int8_tops:g} int8 TOPS x {spec.mac_efficiency:g} efficiency "
               f"(int16 MACs x {spec.int16_throughput:g}), {spec.dram_gb_per_s:g} GB/s DRAM, "
               f"{spec.op_overhead_us:g} us per layer")
  for s in summaries:
    lines.append(f"batch {s.batch:>3}: {s.macs / 1e9:.3f} GMAC, activations moved {s.act_bytes / 2**20:.1f} MiB, peak "
                 f"activation memory {s.peak_activation_bytes / 2**20:.2f} MiB (at {s.peak_at}); estimated "
                 f"{s.latency_ms:.2f} ms ({s.batch * s.fps:.0f} scenes/s)")
  ref = HAT_J6E_REFERENCE
  lines.append(f"reference: {ref['source']}: {ref['latency_ms']:.2f} ms, {ref['fps']} FPS (as published)")
  for m in measured or []:
    lines.append(f"measured here (jitted interpreter, this CPU) batch {m['batch']:>3}: best {m['best_ms']:.1f} ms, "
                 f"median {m['median_ms']:.1f} ms of {m['reps']} runs")
  return "\n".join(lines)
