"""The artifact loader against hostile files: 1,000 seeded mutations of one small artifact (bit flips,
truncations, appended bytes, forged headers re-signed with SHA-256, forged JSON text), each either refused with
an ArtifactError or loaded; the keyed signature; memory bounded by the file's size.

What each case class asserts:
  flip / truncate / append   the bytes are no longer the ones written: ArtifactError (the checksum, the prefix's
                             length), never a load; a mutation that gives back the original bytes runs bit for bit
  forge (dict edits, JSON    ArtifactError, or a load whose program runs through the interpreter without an
  text edits), re-signed     exception (every Prediction field batched); bit-identical to the original whenever
                             the loaded program equals it (constants, structure, meta)
  every case                 no other exception; the load allocates at most a few times the file's size
  with DENSETNT_ARTIFACT_KEY every forgery re-signed without the key (or with another) is refused
"""
import hashlib
import json
import os
import struct
import tracemalloc

import jax
import numpy as np
import pytest

from densetnt_jax.deploy import artifact, runner
from densetnt_jax.postprocess import PostprocessSettings
from densetnt_jax.quant.interpreter import run_program
from densetnt_jax.quant.program import Op, Program

G, N, F = 8, 6, 3          # goals, top-k, future steps of the small program
FUZZ_CASES = 1000
BATCH = 2


def _rq(prefix: str, ratio) -> dict:
  """A requant triple of `ratio` (per channel or scalar) as arith.requant_params lays it out: M in [2^14, 2^15),
  ratio ~= M 2^-shift, no pre-shift (numpy: the eager arith helpers cost seconds of tiny dispatches)."""
  mant, exp = np.frexp(np.asarray(ratio, np.float64))
  return {f"{prefix}mult": np.minimum(np.floor(mant * 2**15 + 0.5), 2**15 - 1).astype(np.int32),
          f"{prefix}shift": (15 - exp).astype(np.int32), f"{prefix}pre": np.zeros(np.shape(ratio), np.int32)}


def small_program() -> Program:
  """A 17-op integer program with the real program's output roles: goals -> quantize -> dense -> LayerNorm ->
  ReLU -> goal scores (log-softmax, top-k) and trajectories (dense, reshape, gather); seeded integer constants
  laid out as convert() writes them, within the default target's bounds."""
  rng = np.random.default_rng(0)
  goals, mask = "inputs/goals_Gx2", "inputs/goal_mask_G"
  s_in, s_h, s_n, s_score, s_traj = (np.float32(s) for s in (0.01, 0.05, 0.04, 0.02, 0.1))

  def dense(name, src, k, n, s_x, s_y, x_bits, bits, shape):
    consts = {"w_q": rng.integers(-127, 128, (k, n)).astype(np.int8), "b_q": rng.integers(-999, 999, n, np.int32),
              **_rq("", np.full(n, s_x * 0.01 / s_y))}
    return Op(name, "dense", (src,), shape, "float32", bits, float(s_y), {"in_bits": (x_bits,)}, consts)

  eps_mant, eps_exp = np.frexp(np.float32(1e-5 * 16**3) / (s_h * s_h))    # as arith.layernorm_params
  ln_consts = {"eps_m": np.asarray(np.floor(eps_mant * 2**15 + 0.5), np.int32),
               "eps_e": np.asarray(eps_exp - 15, np.int32),
               **_rq("z_", np.float64(4 * 2.0**-21 / 2.0**-13)), "g_q": rng.integers(-2**15 + 1, 2**15, 16, np.int16),
               "b_q": rng.integers(-2**20, 2**20, 16, np.int32), **_rq("", np.float64(2.0**-13 * 16 * 1e-4 / s_n))}
  idx = "goal/score~reshape~top_k"
  ops = [
      Op(f"{mask}~index", "index", (mask,), (None, G, 1), "bool", 0, None, {"index": (Ellipsis, None)}),
      Op("goal/quantize", "quantize", (goals, f"{mask}~index"), (None, G, 2), "float32", 16, float(s_in),
         {"in_bits": (0, 0)}, {"scale": np.asarray(s_in)}),
      dense("goal/dense", "goal/quantize", 2, 16, s_in, s_h, 16, 8, (None, G, 16)),
      Op("goal/norm", "layernorm", ("goal/dense",), (None, G, 16), "float32", 8, float(s_n),
         {"eps": 1e-5, "in_bits": (8,)}, ln_consts),
      Op("goal/relu", "relu", ("goal/norm",), (None, G, 16), "float32", 8, float(s_n), {"in_bits": (8,)}),
      dense("goal/score", "goal/relu", 16, 1, s_n, s_score, 8, 16, (None, G, 1)),
      Op("goal/score~reshape", "reshape", ("goal/score",), (None, G), "float32", 16, float(s_score),
         {"shape": (None, G)}),
      Op("decoder/goal_log_softmax", "log_softmax", ("goal/score~reshape",), (None, G), "float32", 0, None,
         {"in_bits": (16,)}, {"in_scale": np.asarray(s_score)}),
      Op(idx, "top_k", ("goal/score~reshape", mask), (None, N), "int32", 0, None, {"k": N}),
      Op(f"{idx}~index", "index", (idx,), (None, N, 1), "int32", 0, None, {"index": (Ellipsis, None)}),
      Op(f"{goals}~take_along_axis", "take_along_axis", (goals, f"{idx}~index"), (None, N, 2), "float32", 0, None,
         {"axis": 1}),
      Op("decoder/goal_log_softmax~take_along_axis", "take_along_axis", ("decoder/goal_log_softmax", idx),
         (None, N), "float32", 0, None, {"axis": 1}),
      Op(f"{mask}~take_along_axis", "take_along_axis", (mask, idx), (None, N), "bool", 0, None, {"axis": 1}),
      dense("traj/dense", "goal/relu", 16, F * 2, s_n, s_traj, 8, 8, (None, G, F * 2)),
      Op("traj/dense~reshape", "reshape", ("traj/dense",), (None, G, F, 2), "float32", 8, float(s_traj),
         {"shape": (None, G, F, 2)}),
      Op(f"{idx}~index~index", "index", (f"{idx}~index",), (None, N, 1, 1), "int32", 0, None,
         {"index": (Ellipsis, None)}),
      Op("traj/dense~reshape~take_along_axis", "take_along_axis", ("traj/dense~reshape", f"{idx}~index~index"),
         (None, N, F, 2), "float32", 8, float(s_traj), {"axis": 1}, {"scale": np.asarray(s_traj)}),
  ]
  outputs = {"goal_logprobs_BxG": "decoder/goal_log_softmax", "topk_goals_BxNx2": f"{goals}~take_along_axis",
             "topk_logprobs_BxN": "decoder/goal_log_softmax~take_along_axis",
             "topk_valid_BxN": f"{mask}~take_along_axis", "topk_trajs_BxNxFx2": "traj/dense~reshape~take_along_axis"}
  post = PostprocessSettings(threshold=2.0, mode_num=3)
  meta = {"threshold": 2.0, "mode_num": 3, "postprocess": post.to_dict(), "record_batch": 3}
  inputs = {goals: ((None, G, 2), "float32"), mask: ((None, G), "bool")}
  return Program(inputs, ops, outputs, meta)


def small_inputs(batch: int = BATCH) -> dict:
  rng = np.random.default_rng(1)
  return {"goals_Gx2": (rng.normal(size=(batch, G, 2)) * 20).astype(np.float32),
          "goal_mask_G": rng.random((batch, G)) < 0.8}


@pytest.fixture(scope="module")
def small():
  """(program, artifact bytes, expected Prediction) of the small program."""
  program = small_program()
  return program, artifact.to_bytes(program, info={"source": "test"}, key=b""), \
      jax.block_until_ready(run_program(program, small_inputs()))


def test_small_program_round_trips_bit_for_bit(small, tmp_path):
  program, data, expected = small
  path = tmp_path / "small.dtnt"
  path.write_bytes(data)
  loaded, header = artifact.read(str(path), key=b"")
  assert header["info"] == {"source": "test"} and len(loaded.ops) == 17
  assert header["target"]["name"] == "j6e-class"          # no target given: the default one is recorded
  assert all(runner.same_bits(a, b) for a, b in zip(expected, run_program(loaded, small_inputs())))


# ------------------------------------------------------------------------------------------------ fuzz
def split(data: bytes) -> tuple[dict, bytes]:
  """(header, blob) of artifact bytes, unchecked: what a forger starts from."""
  _, _, flags, n, _ = artifact.PREFIX.unpack_from(data)
  header = json.loads(data[artifact.PREFIX.size:artifact.PREFIX.size + n])
  return header, data[header["blob_offset"]:len(data) - artifact.DIGEST * (2 if flags else 1)]


def forge(header: dict, blob: bytes, key: bytes = b"") -> bytes:
  """A forged header laid out and re-signed as the writer would (SHA-256; with `key`, also the HMAC)."""
  return artifact.seal(artifact.encode_header(header), blob, key)


def _random_value(rng):
  return [-1, 0, 3, 2**40, -2**63, 10**400, 1.5, -0.0, 1e300, "x", "", None, True, [], [1, None], {}, {"a": 1}][
      rng.integers(17)]


def _nodes(tree, path=()):
  """(path, container) of every dict and list in a JSON tree."""
  yield path, tree
  items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
  for k, v in items:
    if isinstance(v, (dict, list)):
      yield from _nodes(v, path + (k,))


def _pick(rng, seq):
  seq = list(seq)
  return seq[rng.integers(len(seq))]


def _edit(rng, h: dict, blob: bytearray) -> str:
  """One random header (or blob) edit in place, as a forger would make it; returns its name."""
  arrays, ops = h["arrays"], h["ops"]
  op = _pick(rng, ops)
  edit = _pick(rng, ["negative_shape", "huge_offset", "nbytes", "dtype", "unknown_kind", "other_kind", "bits",
                     "missing_const", "extra_const", "wrong_type", "delete_key", "add_key", "input_ref", "swap_ops",
                     "attr", "op_shape", "meta", "info", "scale", "blob_byte", "lut", "target", "outputs", "inputs",
                     "overlap"])
  if edit == "negative_shape":
    a = _pick(rng, arrays.values())
    a["shape"] = [-int(rng.integers(1, 10**6))] + a["shape"]
  elif edit == "huge_offset":
    _pick(rng, arrays.values())["offset"] = int(2**rng.integers(10, 70)) * _pick(rng, [1, -1])
  elif edit == "nbytes":
    _pick(rng, arrays.values())["nbytes"] = int(rng.integers(0, 10**9))
  elif edit == "dtype":
    _pick(rng, arrays.values())["dtype"] = _pick(rng, ["object", "float64", "<i4", "int8", "float32", "bool",
                                                       "int16", "uint8", "V8"])
  elif edit == "unknown_kind":
    op["kind"] = _pick(rng, ["gelu", "conv", "", "Dense", "relu "])
  elif edit == "other_kind":
    op["kind"] = _pick(rng, ["dense", "relu", "index", "top_k", "softmax", "concat", "quantize", "reshape"])
  elif edit == "bits":
    op["bits"] = _pick(rng, [-1, 1, 3, 4, 7, 12, 32, 8, 16, 0, True])
  elif edit == "missing_const":
    with_consts = [o for o in ops if o["consts"]]
    o = _pick(rng, with_consts)
    del o["consts"][_pick(rng, o["consts"])]
  elif edit == "extra_const":
    op["consts"][_pick(rng, ["w_q", "scale", "mult", "junk"])] = _pick(rng, arrays)
  elif edit == "wrong_type":
    path, node = _pick(rng, [(p, n) for p, n in _nodes(h) if n])
    key = _pick(rng, node.keys() if isinstance(node, dict) else range(len(node)))
    node[key] = _random_value(rng)
  elif edit == "delete_key":
    path, node = _pick(rng, [(p, n) for p, n in _nodes(h) if isinstance(n, dict) and n])
    del node[_pick(rng, node)]
  elif edit == "add_key":
    path, node = _pick(rng, [(p, n) for p, n in _nodes(h) if isinstance(n, dict)])
    node["zz_unknown"] = _random_value(rng)
  elif edit == "input_ref":
    i = int(rng.integers(len(ops)))
    ops[i]["inputs"] = [_pick(rng, [o["name"] for o in ops[i:]] + ["nope"])] + ops[i]["inputs"][1:]
  elif edit == "swap_ops":
    i, j = rng.choice(len(ops), 2, replace=False)
    ops[i], ops[j] = ops[j], ops[i]
  elif edit == "attr":
    if op["attrs"]:
      op["attrs"][_pick(rng, op["attrs"])] = _pick(rng, [0, 1, 2, -1, 5, 7, 100, [None, 4], [None, G * 2], True,
                                                         0.5, [8], [16, 16], ["...", 0], [{"slice": [0, 1, 1]}]])
  elif edit == "op_shape":
    shape = op["shape"]
    shape[int(rng.integers(len(shape)))] = _pick(rng, [0, 1, 2, 3, 7, 2**20, 2**31 - 1, None, -3])
  elif edit == "meta":
    post = h["meta"]["postprocess"]
    k = _pick(rng, list(post) + ["mode_num_top", "threshold_top"])
    # not selection "mr" / "fde": each compiles the goal-set optimiser (seconds); the load's trace covers them
    value = _pick(rng, [0, 1, 2, 5, 6, 7, 10**6, -1, 0.5, 2.5, "nms", "snap", "shift", "bogus"])
    if k == "mode_num_top":
      h["meta"]["mode_num"] = value
    elif k == "threshold_top":
      h["meta"]["threshold"] = value
    else:
      post[k] = value
  elif edit == "info":
    nested = {"leaf": [1.5, "x", None]}
    for _ in range(int(rng.integers(1, 60))):
      nested = {"n": nested}
    h["info"] = nested
  elif edit == "scale":
    op["scale"] = _pick(rng, [0.0, -1.0, 1e-30, 1e30, 0.5, 0.013, None])
  elif edit == "blob_byte":
    blob[int(rng.integers(len(blob)))] ^= 1 << int(rng.integers(8))
  elif edit == "lut":
    h["luts"][_pick(rng, h["luts"])] = _pick(rng, arrays)
  elif edit == "target":
    target = h["target"]
    k = _pick(rng, ["accumulator_bits", "max_shift", "max_tensor_bytes", "multiplier_bits", "name", None])
    if k is None:
      h["target"] = None                # the loader's default target
    else:
      target[k] = _pick(rng, [64, 16, 100, 1000, 2**40, "x", 8])
  elif edit == "outputs":
    role = _pick(rng, h["outputs"])
    if rng.random() < 0.5:
      del h["outputs"][role]
    else:
      h["outputs"][role] = _pick(rng, [o["name"] for o in ops] + ["nope"])
  elif edit == "inputs":
    name = _pick(rng, h["inputs"])
    h["inputs"][name] = _pick(rng, [[[None, G + 1, 2], "float32"], [[None, G], "int32"], [[None], "bool"],
                                    [[G, 2], "float32"], [[None, G, 2], "float64"]])
  elif edit == "overlap":
    a, b = rng.choice(sorted(arrays), 2, replace=False)
    arrays[b]["offset"] = arrays[a]["offset"]
  return edit


TEXT_EDITS = [
    ("deep-nesting", lambda t: t.replace(b'"info":{', b'"info":' + b"[" * 200000 + b"]" * 200000 + b',"x":{')),
    ("huge-int", lambda t: t.replace(b'"mode_num":3', b'"mode_num":' + b"9" * 5000, 1)),
    ("huge-float", lambda t: t.replace(b'"threshold":2.0', b'"threshold":1e999', 1)),
    ("nan", lambda t: t.replace(b'"threshold":2.0', b'"threshold":NaN', 1)),
    ("duplicate-key", lambda t: t.replace(b'"bits":8,', b'"bits":8,"bits":16,', 1)),
    ("bad-utf8", lambda t: t.replace(b'"source"', b'"sou\xff\xfe"', 1)),
    ("not-an-object", lambda t: b"[" + t + b"]"),
    ("cut", lambda t: t[:len(t) // 2]),
]


def mutations(data: bytes, count: int, seed: int = 0):
  """(class, name, bytes) of `count` seeded mutations of `data`."""
  rng = np.random.default_rng(seed)
  header, blob = split(data)
  text = artifact.encode_header(header)
  for _ in range(count):
    r = rng.random()
    if r < 0.25:
      out = bytearray(data)
      for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
      yield "flip", "bits", bytes(out)
    elif r < 0.37:
      yield "truncate", "cut", data[:int(rng.integers(len(data)))]
    elif r < 0.45:
      extra = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
      yield "append", "bytes", data + (extra if rng.random() < 0.5 else b"\0" * len(extra))
    elif r < 0.9:
      h, b = json.loads(json.dumps(header)), bytearray(blob)
      name = _edit(rng, h, b)
      yield "forge", name, forge(h, bytes(b))
    else:
      name, edit = TEXT_EDITS[int(rng.integers(len(TEXT_EDITS)))]
      yield "forge", f"text-{name}", artifact.seal(edit(text), blob)


def same_program(a: Program, b: Program) -> bool:
  if (a.inputs, a.outputs, a.meta) != (b.inputs, b.outputs, b.meta) or len(a.ops) != len(b.ops):
    return False
  for x, y in zip(a.ops, b.ops):
    if (x.name, x.kind, x.inputs, x.shape, x.dtype, x.bits, x.scale, x.attrs) != \
        (y.name, y.kind, y.inputs, y.shape, y.dtype, y.bits, y.scale, y.attrs) or x.consts.keys() != y.consts.keys():
      return False
    if not all(runner.same_bits(x.consts[k], y.consts[k]) for k in x.consts):
      return False
  return True


def test_fuzz_every_mutation_is_refused_or_runs(small, tmp_path):
  """1,000 mutations (module docstring for what each class asserts). Memory: the peak allocation of reading,
  verifying and parsing a file (`read_header`: where its bytes and arrays are held) stays within 3 x its size +
  256 KiB (the JSON objects); the load-time trace is abstract (shapes only)."""
  program, data, expected = small
  inputs = small_inputs()
  path = str(tmp_path / "case.dtnt")
  outcome, peaks, other_programs_run = {}, [], 0
  for i, (cls, name, mutated) in enumerate(mutations(data, FUZZ_CASES)):
    with open(path, "wb") as f:
      f.write(mutated)
    try:
      tracemalloc.start()
      try:
        header, arrays = artifact.read_header(path, key=b"")
      finally:
        peaks.append((tracemalloc.get_traced_memory()[1], len(mutated), i, name))
        tracemalloc.stop()
      loaded = artifact.program_from(header, arrays, path)
    except artifact.ArtifactError as e:
      loaded = None
      assert "\n" not in str(e) and len(str(e)) <= artifact.MAX_MESSAGE and path in str(e), (i, name, str(e))
    outcome.setdefault((cls, name), []).append(loaded is not None)
    if loaded is None:
      continue
    assert cls == "forge" or mutated == data, (i, cls, name)
    got = jax.block_until_ready(run_program(loaded, inputs))
    if same_program(loaded, program):
      assert all(runner.same_bits(a, b) for a, b in zip(expected, got)), (i, name)
    else:
      assert cls == "forge", (i, name)
      assert [np.shape(v)[0] for v in got] == [BATCH] * len(expected), (i, name)
      other_programs_run += 1
  summary = {f"{c}/{n}": f"{sum(v)}/{len(v)} loaded" for (c, n), v in sorted(outcome.items())}
  assert sum(len(v) for v in outcome.values()) == FUZZ_CASES
  assert not any(any(v) for (c, _), v in outcome.items() if c != "forge"), summary
  for forged in ("negative_shape", "huge_offset", "unknown_kind", "missing_const", "input_ref", "overlap",
                 "text-deep-nesting", "text-huge-int", "text-huge-float", "text-nan", "text-duplicate-key",
                 "text-bad-utf8", "text-not-an-object", "text-cut"):
    assert not any(outcome[("forge", forged)]), (forged, summary)
  assert all(outcome[("forge", "info")]), summary                 # a valid edit: loads, runs bit for bit
  assert other_programs_run >= 10, summary                        # valid forgeries (weights, meta) ran
  worst = max(peaks, key=lambda p: p[0] - 3 * p[1])
  assert worst[0] <= 3 * worst[1] + 2**18, worst


def test_the_recorded_target_is_the_one_checked(small, tmp_path):
  """The header's target, not the runtime's configs, decides: a target with 100-byte tensors refuses the program
  naming the layer and rule; a target promising int64 accumulators is refused (this runtime's are int32); one
  with 2^40-bit LUT entries loads (the LUT rule compares bit lengths: 2**(2**40) never ended)."""
  program, _, _ = small
  default = artifact.default_target()
  path = tmp_path / "model.dtnt"
  path.write_bytes(artifact.to_bytes(program, target=default.replace(max_tensor_bytes=100), key=b""))
  with pytest.raises(artifact.ArtifactError, match=r"does not fit target j6e-class: layer inputs/goal_mask_G~index "
                     r"rule tensor-size: output 240 bytes at batch 30 > max_tensor_bytes 100 \(and \d+ more\)"):
    artifact.read(str(path), key=b"")
  path.write_bytes(artifact.to_bytes(program, target=default.replace(accumulator_bits=64), key=b""))
  with pytest.raises(artifact.ArtifactError, match="header target.accumulator_bits: 64; this runtime's kernels are "
                     "exact up to 32"):
    artifact.read(str(path), key=b"")
  path.write_bytes(artifact.to_bytes(program, target=default.replace(lut_entry_bits=2**40), key=b""))
  assert artifact.read(str(path), key=b"")[1]["target"]["lut_entry_bits"] == 2**40


# ------------------------------------------------------------------------------------------- keyed signature
def test_keyed_signature_from_the_environment(small, tmp_path, monkeypatch):
  """DENSETNT_ARTIFACT_KEY set when writing signs the file; set when loading, it refuses unsigned files and files
  signed with another key; unset, a signed file loads on its checksum."""
  program, unsigned, expected = small
  monkeypatch.setenv(artifact.KEY_ENV, "secret one")
  path = str(tmp_path / "signed.dtnt")
  assert artifact.write(program, path)["signed"]
  loaded, _ = artifact.read(path)
  assert all(runner.same_bits(a, b) for a, b in zip(expected, run_program(loaded, small_inputs())))
  (tmp_path / "unsigned.dtnt").write_bytes(unsigned)
  with pytest.raises(artifact.ArtifactError, match=f"unsigned artifact, and {artifact.KEY_ENV} is set"):
    artifact.read(str(tmp_path / "unsigned.dtnt"))
  monkeypatch.setenv(artifact.KEY_ENV, "secret two")
  with pytest.raises(artifact.ArtifactError, match="keyed signature mismatch: signed with another key"):
    artifact.read(path)
  monkeypatch.delenv(artifact.KEY_ENV)
  assert artifact.read(path)[1]["info"] == {}
  assert not artifact.write(program, str(tmp_path / "plain.dtnt"))["signed"]


def _with_copied_signature(forged: bytes, signed: bytes) -> bytes:
  """A forgery flagged as signed that carries the original file's HMAC (the forger cannot compute a new one)."""
  body = forged[:-artifact.DIGEST]
  body = body[:8] + body[8:12] + struct.pack("<I", artifact.FLAG_KEYED) + body[16:24] \
      + struct.pack("<Q", len(body) + 2 * artifact.DIGEST) + body[32:]
  body += signed[-2 * artifact.DIGEST:-artifact.DIGEST]
  return body + hashlib.sha256(body).digest()


def test_with_a_key_every_resigned_forgery_is_refused(small, tmp_path):
  """With the key set, forgeries re-signed with SHA-256 (unsigned), with another key, or carrying the original
  signature are all refused; the signed original loads."""
  program, _, _ = small
  key = b"deployment key"
  signed = artifact.to_bytes(program, info={"source": "test"}, key=key)
  path = str(tmp_path / "case.dtnt")
  with open(path, "wb") as f:
    f.write(signed)
  assert len(artifact.read(path, key=key)[0].ops) == len(program.ops)
  rng = np.random.default_rng(2)
  header, blob = split(signed)
  refusals, tried = {}, 0
  for _ in range(100):
    h, b = json.loads(json.dumps(header)), bytearray(blob)
    _edit(rng, h, b)
    if h == header and b == blob:       # an edit that changed nothing (bits 8 -> 8) is the original
      continue
    tried += 1
    forged = forge(h, bytes(b))
    for how, data in (("unsigned", forged), ("other-key", forge(h, bytes(b), key=b"guess")),
                      ("copied-signature", _with_copied_signature(forged, signed))):
      with open(path, "wb") as f:
        f.write(data)
      with pytest.raises(artifact.ArtifactError) as info:
        artifact.read(path, key=key)
      refusals.setdefault(how, set()).add(str(info.value).split(": ", 2)[1][:20])
  assert tried >= 90
  assert refusals == {"unsigned": {"unsigned artifact, a"}, "other-key": {"keyed signature mism"},
                      "copied-signature": {"keyed signature mism"}}, refusals


# ------------------------------------------------------------------------------------- refused unread
def _sparse(path, nbytes: int, head: bytes = b""):
  with open(path, "wb") as f:
    f.write(head)
    f.truncate(nbytes)                  # a hole: no disk, no memory


@pytest.mark.parametrize("case", ["over-limit", "claims-more", "header-longer-than-file", "fifo", "directory"])
def test_read_refuses_before_reading_the_file(small, tmp_path, case):
  """A 1 GiB file, a prefix that claims more bytes than the file has or a header longer than the file, a FIFO
  (never opened for reading: no hang) and a directory: refused from the prefix or the file system alone, the
  read allocating under 1 MiB."""
  _, data, _ = small
  path = str(tmp_path / "model.dtnt")
  prefix = artifact.PREFIX.unpack_from(data)
  if case == "over-limit":
    _sparse(path, 2**30, data[:artifact.PREFIX.size])
    message = "over the 268435456-byte limit"
  elif case == "claims-more":
    _sparse(path, 100 * 2**20, artifact.PREFIX.pack(*prefix[:4], 2**40))
    message = r"truncated: the prefix says 1099511627776 bytes, the file has 104857600"
  elif case == "header-longer-than-file":
    _sparse(path, len(data), artifact.PREFIX.pack(*prefix[:3], 2**60, len(data)))
    message = r"a header of 1152921504606846976 bytes does not fit"
  elif case == "fifo":
    os.mkfifo(path)
    message = "not a regular file"
  else:
    os.mkdir(path)
    message = "not a regular file"
  tracemalloc.start()
  try:
    with pytest.raises(artifact.ArtifactError, match=message):
      artifact.read(path, key=b"")
    assert tracemalloc.get_traced_memory()[1] < 2**20
  finally:
    tracemalloc.stop()
  with pytest.raises(FileNotFoundError, match="no artifact at"):
    artifact.read(str(tmp_path / "absent.dtnt"))
