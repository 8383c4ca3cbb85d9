"""DenseTNT on Argoverse 1.1, with the seed values of HAT's tutorial.

`--config=configs/argo.py[:VARIANT]`: VARIANT picks one choice per axis, comma-separated in any order, each
a bare name or AXIS=NAME (names are unique across axes); an axis left out takes its default (*):

  data    argo* | demo | sample | real   the scenes (raw files, LMDB) and the schedule tuned on them
  size    full* | tiny                   the model's widths and depths (tiny: with a schedule for tests)
  target  j6e*  | int8                   the deployment target the model checker and the cost model read

  configs/argo.py:demo          configs/argo.py:demo,target=int8     configs/argo.py:sample,tiny
  configs/argo.py:size=tiny     configs/argo.py:target=int8,data=demo   (= demo,target=int8)

The choices apply in the order data, size, target (tiny's schedule replaces the data's). The workdir is runs/ +
the non-default data and size names joined by "_" (runs/argo, runs/demo, runs/tiny, runs/sample_tiny). No
training stage reads the target, so every target of a data x size shares its workdir's stages: the deployment
steps re-check the int program against the target given and rewrite WORKDIR/deploy.

Each choice is a function below whose docstring gives its command and what it gives (`python configs/argo.py`
prints them all). Fields on top of a variant: `--config.train.epochs=3`.
"""
import os

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """`base_config()` with the variant's choices applied in AXES order (data, size, target)."""
  choice = parse_variant(variant)
  c = base_config()
  for axis, name in choice.items():
    AXES[axis][name](c)
  c.workdir = workdir_of(choice)
  return c


def parse_variant(variant: str) -> dict[str, str]:
  """"demo,target=int8" -> {"data": "demo", "size": "full", "target": "int8"}: every axis, defaults filled in."""
  chosen = {}
  for part in filter(None, (p.strip() for p in variant.split(","))):
    axis, eq, name = (s.strip() for s in part.rpartition("="))
    if not eq:
      axis = next((a for a, names in AXES.items() if name in names), None)
      if axis is None:
        raise ValueError(f"unknown config variant {name!r}; expected {_grammar()}")
    elif axis not in AXES:
      raise ValueError(f"unknown config variant axis {axis!r} in {part!r}; expected {_grammar()}")
    elif name not in AXES[axis]:
      raise ValueError(f"unknown config variant {name!r} for {axis}; expected {_grammar()}")
    if axis in chosen:
      raise ValueError(f"config variant {variant!r} picks {axis} twice ({chosen[axis]}, {name}); give one")
    chosen[axis] = name
  return {axis: chosen.get(axis, next(iter(names))) for axis, names in AXES.items()}


def workdir_of(choice: dict[str, str]) -> str:
  """runs/ + the non-default data and size names (runs/argo when both are defaults); the target shares it."""
  names = [name for axis, name in choice.items() if axis != "target" and name != next(iter(AXES[axis]))]
  return "runs/" + ("_".join(names) or "argo")


def base_config() -> ml_collections.ConfigDict:
  """Every axis at its default: data argo, size full, target j6e (workdir runs/argo)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = "runs/argo"

  # --- data: raw files, packed LMDB, vectorization settings (stored in the LMDB and checked on load) ---
  c.data = d = ml_collections.ConfigDict()
  d.src_dir = "data/argoverse1"          # official layout: {train,val,test_obs}/data/*.csv + map_files/
  d.lmdb_dir = "data/argoverse1_lmdb"    # holds {train,val,test}_lmdb
  d.train_split = "train"
  d.val_split = "val"
  d.obs_steps = 20                       # observed steps; the agent frame is centred at step obs_steps - 1
  d.pred_steps = 30
  d.max_distance = 50.0                  # metres around the agent for trajectories and lanes
  d.max_traj_num = 32
  d.max_lane_num = 64
  d.max_goals_num = 2048
  d.lane_points = 10                     # centerline points per lane polyline (9 vectors)
  d.lane_piece_max_length = 25.0         # longer lanes are split into pieces of at most this length (m)
  d.goal_spacing = 1.0                   # goal candidates every <= this many metres along centerlines
  d.heading_steps = 5                    # heading from the mean displacement over this many last steps
  d.max_abs_coordinate = 1e6             # |X|, |Y| of a CSV (m, city frame), checked in float64 before packing:
                                         # Argoverse cities span < 10 km; 1e38 would be inf in a float32 record
  d.skip_unusable_scenes = "train"       # scenes packed with no lane (so no goal candidate) within max_distance:
                                         # left out of the train_split ("train"), of every split ("all") or of
                                         # none ("none"); they carry no label (the loss masks them), while eval
                                         # and the leaderboard file need every sequence. 0 of the 3,366 real
                                         # scenes and 2,400 synthetic ones are such.
  d.num_workers = 2                      # loader prefetch threads
  d.prefetch = 4                         # batches queued ahead

  # --- model (HAT: Vectornet + Densetnt) ---
  c.model = m = ml_collections.ConfigDict()
  m.depth = 3
  m.traj_in_channels = 9
  m.lane_in_channels = 11
  m.hidden_size = 128
  m.num_heads = 1
  m.num_traj = 32                         # = data.max_traj_num
  m.target_graph_depth = 2
  m.pred_steps = 30
  m.top_k = 150
  m.goal_offset = False                  # optional goal offset regression head
  # DenseTNT's dense goal stage: a lattice grid (dense_spacing m, +-dense_radius steps: 5 x 5) around each of the
  # top dense_seeds sparse goals, de-duplicated, the first dense_points unique points scored with the sparse
  # ones under one softmax (DenseTNT: 150 seeds, 1 m, 2; on real val_large 468 unique points per scene on
  # average, 558 at the 90th percentile). 0 seeds: HAT's sparse-only decoder.
  m.dense_seeds = 150
  m.dense_points = 512
  m.dense_radius = 2
  m.dense_spacing = 1.0
  m.lane_scoring = True                  # DenseTNT's lane scoring as an auxiliary loss (training only) ...
  m.lane_top_k = 0                       # ... and, > 0, a second attention of every goal over the top-k lanes
                                         # (measured on real val_large, k=8: minFDE_k6 1.917 vs 1.895 without; off)

  c.postprocess = p = ml_collections.ConfigDict()
  p.threshold = 2.0                      # NMS radius; the miss threshold of selection="mr"
  p.pred_steps = 30
  p.mode_num = 6
  p.selection = "fde"                    # nms (HAT) | mr | fde: DenseTNT's goal-set optimisation (postprocess.py)
  p.endpoint = "shift"                   # model: as completed | snap: last point := goal (DenseTNT) | shift: the
                                         # trajectory moved onto its goal linearly in time
  p.opt_iterations = 6                   # mr / fde: best-swap rounds of the local search
  p.opt_restarts = 4                     # mr / fde: seeded random starting sets beside the greedy one
  p.opt_seed = 0
  p.mr_fde_weight = 0.05                 # mr: + this x E[FDE] / threshold, a tie-break between equal-MR sets
  p.opt_temperature = 1.0                # mr / fde: the distribution as exp(log p / T) (T > 1 flattens it)

  c.loss = l = ml_collections.ConfigDict()
  l.goal_weight = 1.0
  l.traj_weight = 1.0
  l.offset_weight = 1.0
  l.set_weight = 1.0                     # dense stage: cross-entropy over the whole goal set
  l.lane_weight = 1.0                    # lane scoring: cross-entropy over the lanes (model.lane_scoring)

  # --- float training (HAT seed: AdamW 1e-3, wd 0.01, cosine, 1 warm-up epoch, 30 epochs) ---
  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 64                      # global batch, split over all devices
  t.eval_batch_size = 64
  t.epochs = 30
  t.warmup_epochs = 1
  t.learning_rate = 1e-3
  t.b1 = 0.9
  t.b2 = 0.999
  t.eps = 1e-8
  t.weight_decay = 0.01
  t.log_every_steps = 50
  t.eval_every_epochs = 1
  t.checkpoint_every_steps = 1000
  t.keep_checkpoints = 3
  t.eval_max_batches = -1                # -1: the whole val split
  t.tensorboard = False

  # --- quantization (densetnt_jax.quant): code widths, calibration observer ---
  c.quant = q = ml_collections.ConfigDict()
  q.bits = 8                             # activations' default code width; weights are int8 per output channel
  q.int16 = (                            # module-path globs kept in int16 (HAT's mixed precision for DenseTNT)
      "*input_mask",                     # trajectory, lane and goal inputs: metres, int8 would step 0.4 m
      "encoder/traj_subgraph/layer_0/dense",  # bin/sensitivity.py: 0.116 of the 0.133 m int8 minFDE_k6 cost
      "decoder/goal_embed/*",            # the goal subgraph
      "decoder/goal_fuse*",              # goal x context fusion
      "*/scores",                        # attention score matmuls (they feed the mask adds)
      "*mask_add",                       # mask adds: -100 beside real scores
      "decoder/goal_score",              # the goal logits: they rank 2048 candidates
  )
  q.observer = "mse"                     # mse (HAT's default: absmax shrunk in 1% steps) | minmax | percentile
  q.percentile = 99.99
  q.calibration_batches = 10
  q.calibration_batch_size = 0           # 0: train.batch_size
  # bin/align_bpu_validation.py bars (QAT fake-quant vs the integer program, per layer and end metrics)
  q.align_min_identical = 0.999          # share of identical integer codes
  q.align_max_lsb = 1                    # largest |code difference|
  q.align_max_metric_diff = 0.01         # |fake-quant - int| of each end metric (m; MR as a fraction)

  # --- QAT (bin/train.py --stage=qat): the float loop on the fake-quant model from the calibration checkpoint,
  # with these settings on top of config.train (HAT's QAT: AdamW lr 1e-3, weight decay 0.05, step decay) ---
  c.qat = qt = ml_collections.ConfigDict()
  qt.learning_rate = 1e-3
  qt.weight_decay = 0.05
  qt.epochs = 10
  qt.warmup_epochs = 0
  qt.schedule = "step"                   # x decay_factor at each of decay_epochs
  qt.decay_epochs = (7,)                 # 1e-3 for 7 epochs, then 1e-4
  qt.decay_factor = 0.1

  c.eval = e = ml_collections.ConfigDict()
  e.miss_threshold = 2.0
  e.k = 6

  # --- deployment target (bin/model_checker.py, bin/compile_perf.py): what the integer program must fit and the
  # accelerator the latency estimate assumes. A J6E-class int8 BPU by default; the checker's rules and the perf
  # model read only this section. "assumption" marks numbers that are not published figures. ---
  c.target = tg = ml_collections.ConfigDict()
  tg.name = "j6e-class"
  # ops: on-chip compute kinds -> output code widths each supports (0: a bool mask); layout ops (copies,
  # gathers, top-k) run on-chip at any width; host ops run on the CPU in float (HAT: the post-process runs on
  # the host). dense_grid / dense_grid_mask: integer adds, multiplies, a division by a constant and compares.
  tg.op_bits = ml_collections.ConfigDict(dict(
      quantize=(8, 16), dense=(8, 16), layernorm=(8, 16), relu=(8, 16), masked_max=(8, 16),
      masked_fill=(8, 16), matmul=(8, 16), softmax=(8, 16), add=(8, 16), mask_add=(8, 16), concat=(8, 16),
      dense_grid=(8, 16), dense_grid_mask=(0,)))
  tg.layout_ops = ("reshape", "broadcast_to", "index", "concatenate", "tile", "moveaxis", "take_along_axis",
                   "top_k")
  tg.host_ops = ("log_softmax",)
  tg.weight_bits = 8                     # dense kernels: int8 per output channel (BPU conv/matmul weights)
  # integer datapath (checker rules)
  tg.accumulator_bits = 32               # signed int32 accumulators: |acc| <= 2^31 - 1 for every input in range
  tg.multiplier_bits = 16                # signed requant multipliers, |M| <= 2^15 - 1 (ours: [2^14, 2^15) or 0)
  tg.max_shift = 46                      # requant right shifts incl. per-row shifts in [0, 46] (arith.MAX_SHIFT)
  tg.max_lut_entries = 1024              # exp / reciprocal / rsqrt tables (ours: 513 / 65 / 97), assumption
  tg.lut_entry_bits = 16                 # unsigned table entries (ours: <= 2^15), assumption
  tg.max_tensor_bytes = 64 * 2**20       # one activation at check_batch (on-chip SRAM + DDR tiling), assumption
  tg.check_batch = 30                    # batch of the size rule: HAT's board batch
  # performance model (bin/compile_perf.py): latency = max(compute, bytes / bandwidth) + overhead per layer
  tg.peak_int8_tops = 80.0               # Horizon's published J6E figure (int8 dense TOPS = 2 x MAC/s)
  tg.int16_throughput = 0.25             # MACs with an int16 operand run at this fraction of int8, assumption
  tg.mac_efficiency = 0.3                # sustained / peak MAC rate for these narrow (128-wide) layers, assumption
  tg.vector_gops = 1000.0                # element-wise integer ops per second (/1e9): LN, softmax, add, assumption
  tg.dram_gb_per_s = 51.2                # LPDDR5 x64 at 6400 MT/s; every activation assumed to go through DDR
  tg.op_overhead_us = 5.0                # fixed cost per launched layer (DMA setup, sync), assumption
  tg.perf_batches = (1, 30)              # batches the estimate and the measured interpreter latency use

  # --- export (bin/export_onnx.py) ---
  c.export = ex = ml_collections.ConfigDict()
  ex.opset = 21                          # int16 QuantizeLinear/DequantizeLinear (QDQ export) need >= 21
  ex.num_batches = 4                     # val batches each export is run on in onnxruntime and compared
  ex.float_atol = 1e-4                   # float ONNX vs JAX
  ex.qdq_max_lsb = 64                    # QDQ ONNX vs fake-quant: top-k trajectories in int8 LSB (same-goal rows)
  ex.float_max_metric_diff = 0.01        # float ONNX vs JAX: |diff| of each end metric after the host NMS
  ex.qdq_max_metric_diff = 0.1           # QDQ vs fake-quant, K=6 end metrics (float LayerNorm/softmax and half-even
                                         # rounding: 1-6 int8 LSB per layer; demo measured <= 0.045 m; K=1 reported)
  return c


# --- data: where the scenes are, and the schedule tuned on them ---

def argo(c: ml_collections.ConfigDict) -> None:
  """Argoverse 1.1 in full, downloaded to ARGO_DIR (the official layout); HAT's schedule.

    python bin/argoverse_packer.py --src-data-dir ARGO_DIR --mode train --pack-type lmdb \\
        --num-workers 10 --target-data-dir data/argoverse1_lmdb
    python bin/argoverse_packer.py --src-data-dir ARGO_DIR --mode val --pack-type lmdb \\
        --num-workers 10 --target-data-dir data/argoverse1_lmdb
    python bin/train.py --stage=float --config=configs/argo.py
    python bin/eval.py --stage=float --config=configs/argo.py
    python bin/train.py --stage=calibration --config=configs/argo.py   # then qat, then int; each reads the last
    python bin/train.py --stage=qat --config=configs/argo.py
    python bin/train.py --stage=int --config=configs/argo.py
    python bin/eval.py --stage=int --config=configs/argo.py
    python bin/align_bpu_validation.py --config=configs/argo.py

  Not run here (the full data set is not in this environment). For scale, HAT's model zoo on it (HAT's sparse
  decoder): val minFDE_k6 1.2974 float, 1.2989 QAT, 1.3038 quantized.
  """
  del c   # the defaults of base_config()


def demo(c: ml_collections.ConfigDict) -> None:
  """The synthetic city `make demo` writes (data/synthetic_city: 2,000 train / 400 val scenes in the official
  formats); 12 epochs at batch 32, min-max calibration, QAT 2 epochs at 1e-4 then 1e-5.

    make demo      # python bin/demo.py [--config=configs/argo.py:demo]: about 25 min on 2 CPU cores

  gives on val (400 scenes)   minADE_k6  minFDE_k6  MR_k6   minFDE_k1
    float                     0.8227     1.0106     0.0950  3.7804
    calibration               0.8507     1.0766     0.0900  3.7874
    qat = int                 0.8637     1.0347     0.0900  3.8600   (int's codes are QAT's, bit for bit)
    constant velocity         2.7860     7.3111     0.7975  7.3111
  then on target j6e (below) the checker's PASS, a 565,220-byte artifact bit-exact with the interpreter, the int
  ONNX bit-identical, and align_bpu: 100% identical codes on 4 batches of 30.
  """
  c.data.src_dir = "data/synthetic_city"
  c.data.lmdb_dir = "data/synthetic_lmdb"
  t, q, qt = c.train, c.quant, c.qat
  t.batch_size = 32
  t.eval_batch_size = 64
  t.epochs = 12
  t.log_every_steps = 10
  t.checkpoint_every_steps = 200
  q.observer = "minmax"                # measured here (val minFDE_k6 of the calibrated model, float 2.5597):
                                       # minmax 2.5740, mse 2.5962, percentile 99.99 2.6002
  qt.epochs = 2                        # QAT from a converged float model, minutes on 2 cores: 1e-4 then 1e-5
  qt.learning_rate = 1e-4              # (1e-3 -> 1e-4 gave val minFDE_k6 2.662 vs 2.643 here: same within noise)
  qt.decay_epochs = (1,)


def sample(c: ml_collections.ConfigDict) -> None:
  """The real Argoverse 1.1 sample in ../shared/data/argoverse1 ($ARGOVERSE1_SHARED): 244 train / 99 val scenes;
  10 epochs at batch 16.

    python bin/argoverse_packer.py --src-data-dir ../shared/data/argoverse1 --mode train --pack-type lmdb \\
        --target-data-dir data/sample_lmdb                             # and --mode val
    python bin/train.py --stage=float --config=configs/argo.py:sample
    python bin/eval.py --stage=float --config=configs/argo.py:sample

  gives on val (99 scenes) float minADE_k6 3.100, minFDE_k6 2.845, MR_k6 0.374, minFDE_k1 7.462 (constant
  velocity 5.590 / 0.768 / 5.590), in 2 min on 2 CPU cores (pack 8 s, 150 steps): 244 train scenes are few,
  `real` adds the archive.
  """
  c.data.src_dir = os.environ.get("ARGOVERSE1_SHARED", "../shared/data/argoverse1")
  c.data.lmdb_dir = "data/sample_lmdb"
  t = c.train
  t.batch_size = 16
  t.eval_batch_size = 33
  t.epochs = 10
  t.log_every_steps = 5
  t.checkpoint_every_steps = 100


def real(c: ml_collections.ConfigDict) -> None:
  """Real traffic: the sample's 244 train + 2,524 of the 2,924 archive scenes (../shared/data/argoverse1_more)
  -> the sample's 99 val; `val_large` adds the 400 held-out archive scenes (499) for less noisy comparisons.
  Layout built by bin/make_real_layout.py in data/.

    make real      # python bin/real.py [--config=configs/argo.py:real]

  takes 26 min on 2 cores after the one-time extract + pack and gives on val: float minFDE_k6 1.787, MR_k6
  0.152; int 1.802 / 0.141 (constant velocity 5.590 / 0.768); on val_large float 1.895, int 1.899.
  """
  c.data.src_dir = "data/argoverse1_real"
  c.data.lmdb_dir = "data/real_lmdb"
  t, qt = c.train, c.qat
  t.batch_size = 32                    # measured on val_large (499; default selection, minFDE_k6 / MR_k6 with
  t.eval_batch_size = 33               # selection=mr / minFDE_k1): 20 epochs, batch 32, wd 0.01: 2.000 / 0.184 /
  t.epochs = 20                        # 5.23; 30 epochs 1.988 / 0.156 / 5.11 (val 99 got worse after epoch 19);
  t.weight_decay = 0.05                # batch 64 at lr 2e-3 1.928 / 0.174 / 5.29; weight decay 0.05 1.895 /
  t.log_every_steps = 20               # 0.172 / 4.88: chosen
  t.checkpoint_every_steps = 200
  qt.epochs = 3                        # QAT from a converged float model: 1e-4 for 2 epochs, then 1e-5
  qt.learning_rate = 1e-4
  qt.decay_epochs = (2,)


# --- size: the model's widths and depths ---

def full(c: ml_collections.ConfigDict) -> None:
  """DenseTNT at HAT's size: 3 layers, 128 wide; DenseTNT's dense goals, lane scoring, goal-set selection.

    python bin/compile_perf.py --config=configs/argo.py:demo --workdir=runs/demo

  gives for its int program: 193 layers, 190.1 M MACs per scene, 435,520 parameter bytes; estimated 10.71 ms
  for a batch of 30 on target j6e.
  """
  del c   # the defaults of base_config()


def tiny(c: ml_collections.ConfigDict) -> None:
  """A 16-wide, 1-layer model with HAT's sparse decoder and one epoch at batch 4: it tests the machinery
  (stages, checkpoints, deploy tools), and its metrics mean nothing. The dense stage, lane scoring and
  goal-set selection about doubled its compile times; tests/conftest.tiny_dense and tests/test_dense_goals.py,
  test_selection.py cover those (with these sizes).

    pytest tests/test_stages.py       # configs/argo.py:tiny on a few real scenes: every stage and deploy tool

  Its vectorization (8 tracks, 16 lanes, 256 goals) needs its own pack, e.g. of the sample:

    python bin/argoverse_packer.py --src-data-dir ../shared/data/argoverse1 --mode train --pack-type lmdb \\
        --target-data-dir data/sample_tiny_lmdb --config=configs/argo.py:sample,tiny   # and --mode val
    python bin/train.py --stage=float --config=configs/argo.py:sample,tiny \\
        --config.data.lmdb_dir=data/sample_tiny_lmdb                   # -> runs/sample_tiny

  which packs and trains in 21 s on 2 CPU cores and gives val minFDE_k6 27.50, MR_k6 1.000 (constant velocity
  5.59): a smoke test, not a model.
  """
  d, m, t, q, qt = c.data, c.model, c.train, c.quant, c.qat
  d.max_traj_num = 8
  d.max_lane_num = 16
  d.max_goals_num = 256
  m.depth = 1
  m.hidden_size = 16
  m.num_traj = 8
  m.target_graph_depth = 1
  m.top_k = 16
  m.dense_seeds = 0
  m.dense_points = 40
  m.lane_scoring = False
  c.postprocess.selection, c.postprocess.endpoint = "nms", "model"
  t.batch_size = 4
  t.eval_batch_size = 4
  t.epochs = 1
  qt.epochs = 1
  qt.decay_epochs = (0.5,)
  q.calibration_batches = 2
  t.log_every_steps = 1


# --- target: what the integer program must fit (bin/model_checker.py, bin/compile_perf.py) ---

def j6e(c: ml_collections.ConfigDict) -> None:
  """A J6E-class int8/int16 BPU (Horizon's published 80 int8 TOPS; base_config()'s target section marks the
  values that are assumptions).

    python bin/model_checker.py --config=configs/argo.py:demo --workdir=runs/demo
    python bin/compile_perf.py  --config=configs/argo.py:demo --workdir=runs/demo

  gives on the demo's int program: "PASS: the program fits target j6e-class" (193 layers, 11 rules; largest
  accumulator 2^30.3 of 2^31.0, largest shift 44 of 46); estimated 1.04 ms at batch 1 and 10.71 ms at batch 30
  (HAT's published DenseTNT on J6E, batch 30: 11.30 ms).
  """
  del c   # the defaults of base_config()


def int8(c: ml_collections.ConfigDict) -> None:
  """The j6e-class spec with every on-chip op int8 only (no int16 path, as on int8-only NPUs): what the
  program's int16 layers (config.quant.int16) would have to give up. Only target.name and op_bits change.

    python bin/model_checker.py --config=configs/argo.py:demo,target=int8 --workdir=runs/demo

  gives on the demo's int program: "FAIL: 27 violation(s) of target j6e-class-int8 in 27 layer(s)", every one
  rule=op-bits (e.g. layer=encoder/traj_subgraph/input_mask: quantize with int16 output), exit 1; and
  bin/compile_perf.py refuses to compile it.
  """
  c.target.name = "j6e-class-int8"
  c.target.op_bits = ml_collections.ConfigDict(
      {kind: tuple(b for b in bits if b != 16) for kind, bits in c.target.op_bits.items()})


# one choice per axis, applied in this order; each axis's first name is its default
AXES = dict(
    data=dict(argo=argo, demo=demo, sample=sample, real=real),
    size=dict(full=full, tiny=tiny),
    target=dict(j6e=j6e, int8=int8),
)


def _grammar() -> str:
  axes = ", ".join(f"{axis} {'|'.join(names)}" for axis, names in AXES.items())
  return f"a comma-separated choice per axis ({axes}), each NAME or AXIS=NAME, e.g. configs/argo.py:demo,target=int8"


def describe() -> str:
  """Every variant's docstring, by axis (`python configs/argo.py`)."""
  import inspect
  lines = []
  for axis, names in AXES.items():
    for i, (name, fn) in enumerate(names.items()):
      lines += [f"{axis}={name}{' (default)' if i == 0 else ''}", inspect.getdoc(fn), ""]
  return "\n".join(lines)


if __name__ == "__main__":
  print(describe())
