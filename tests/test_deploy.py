"""Deployment: the target checker (each rule tripped by a deliberately broken program), the compiled artifact
(round trip, refusal of corrupt / truncated / wrong-version / forged files; tests/test_artifact_fuzz.py fuzzes
it), the standalone runner in a fresh process
(bit for bit against the interpreter, without flax or the training code) and the performance estimate."""
import copy
import json
import os
import struct
import subprocess
import sys
import textwrap

import jax
import jsonschema
import numpy as np
import pytest

from densetnt_jax.quant import ops
from densetnt_jax.deploy import artifact, checker, compiler, perf, runner
from densetnt_jax.quant.interpreter import _structure, run_program


@pytest.fixture(scope="module")
def program(tiny_quant):
  return tiny_quant["program"]


@pytest.fixture(scope="module")
def spec(tiny_quant):
  return checker.TargetSpec.from_config(tiny_quant["config"].target)


@pytest.fixture(scope="module")
def inputs(tiny_quant, program):
  batch = tiny_quant["batches"][0]
  return {n.split("/", 1)[1]: np.asarray(batch[n.split("/", 1)[1]]) for n in program.inputs}


@pytest.fixture(scope="module")
def artifact_path(program, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("deploy") / "model.dtnt")
  artifact.write(program, path, info=dict(target="test"))
  return path


def _first(program, pred):
  return next(o for o in program.ops if pred(o))


# -------------------------------------------------------------------------------------------- checker
def test_checker_passes_the_tiny_program(program, spec):
  report = checker.check_program(program, spec)
  assert report.ok, "\n".join(map(str, report.violations))
  assert [r.name for r in report.rows] == [o.name for o in program.ops]
  dense = [r for r in report.rows if r.kind == "dense"]
  assert all(0 < r.acc_bound < 2**31 for r in dense)
  # the checker's per-channel bound is never looser than the program's static one
  static = program.accumulator_bounds()
  assert all(r.acc_bound <= static[r.name] for r in dense)
  text = checker.format_report(report)
  assert "PASS: the program fits target" in text and dense[0].name in text


def test_the_op_table_describes_every_recorded_op(program):
  """Each op convert wrote has its kind's definition: inputs, the constants `derive` gives (and only those, plus
  an output's dequantization scale), the attrs the recorder writes; bounds only where the kernel accumulates."""
  for o in program.ops:
    d = ops.OPS[o.kind]
    assert d.inputs in (None, len(o.inputs)), o.name
    assert set(d.consts_for(len(o.inputs))) <= set(o.consts) <= set(d.consts_for(len(o.inputs))) | {"scale"}, o.name
    assert set(d.attrs) <= set(o.attrs), o.name
  bounds = ops.declared_bounds(program)
  assert {o.kind for o in program.ops if o.name in bounds} == {"dense", "matmul", "layernorm", "softmax", "add",
                                                             "mask_add"}
  assert ops.GLUE == tuple(k for k, d in ops.OPS.items() if d.glue) and "top_k" in ops.GLUE


def _set_const(op, name, index, value):
  c = np.array(op.consts[name], copy=True)
  c.reshape(-1)[index] = value
  op.consts[name] = c


def _break_multiplier(p, s):
  o = _first(p, lambda o: o.kind == "dense")
  _set_const(o, "mult", 0, 40000)
  return o.name, s


def _break_shift(p, s):
  o = _first(p, lambda o: o.kind == "dense")
  _set_const(o, "shift", 0, 60)
  return o.name, s


def _break_pre_shift(p, s):
  o = _first(p, lambda o: o.kind == "matmul")
  o.consts["pre"] = np.asarray(-1, np.int32)
  return o.name, s


def _break_kind(p, s):
  o = _first(p, lambda o: o.kind == "softmax")
  return o.name, s.replace(op_bits={k: v for k, v in s.op_bits.items() if k != "softmax"})


def _break_unknown_kind(p, s):
  o = _first(p, lambda o: o.kind == "relu")
  o.kind = "gelu"
  return o.name, s


def _break_op_bits(p, s):
  o = _first(p, lambda o: o.kind == "dense" and o.bits == 16)
  return o.name, s.replace(op_bits={**s.op_bits, "dense": (8,)})


def _break_weight_bits(p, s):
  o = _first(p, lambda o: o.kind == "dense")
  o.consts["w_q"] = o.consts["w_q"].astype(np.int16) * 2
  return o.name, s


def _break_accumulator_dense(p, s):
  o = _first(p, lambda o: o.kind == "dense" and o.attrs["in_bits"][0] == 8)
  _set_const(o, "b_q", 0, 2**31 - 100)        # |x.w| + |b| now exceeds 2^31 - 1 for inputs in range
  return o.name, s


def _break_accumulator_add(p, s):
  o = _first(p, lambda o: o.kind == "add" and o.attrs["in_bits"][0] == 8)
  o.consts["mx"] = np.asarray(2**24, np.int32)  # a legal shift (power of two), but 2^7 x 2^24 = 2^31
  return o.name, s


def _break_scale(p, s):
  o = _first(p, lambda o: o.kind == "layernorm")
  o.scale = None
  return o.name, s


def _break_shape(p, s):
  o = _first(p, lambda o: o.kind == "dense")
  o.shape = (None, None) + tuple(o.shape[2:])
  return o.name, s


def _break_tensor_size(p, s):
  biggest = max(p.ops, key=lambda o: checker.tensor_bytes(o.shape, o.bits, o.dtype, s.check_batch))
  return biggest.name, s.replace(max_tensor_bytes=1000)


def _break_lut(p, s):
  o = _first(p, lambda o: o.kind == "softmax")
  return o.name, s.replace(max_lut_entries=256)      # EXP_TABLE has 513 entries


def _break_graph(p, s):
  o = _first(p, lambda o: o.kind == "masked_max")
  o.inputs = (o.inputs[0], "inputs/not_a_tensor")
  return o.name, s


def _break_wide_gamma(p, s):
  o = _first(p, lambda o: o.kind == "layernorm")
  o.consts["g_q"] = np.full(o.consts["g_q"].shape, 2**17, np.int32)   # z g reaches 2^15 x 2^17 = 2^32
  return o.name, s


def _break_eps(p, s):
  o = _first(p, lambda o: o.kind == "layernorm")
  o.consts["eps_m"], o.consts["eps_e"] = np.asarray(2**17, np.int32), np.asarray(15, np.int32)   # << 15: 2^32
  return o.name, s


def _break_missing_constant(p, s):
  o = _first(p, lambda o: o.kind == "dense")
  del o.consts["w_q"]
  return o.name, s


def _break_string_constant(p, s):
  o = _first(p, lambda o: o.kind == "softmax")
  o.consts["t_shift"] = np.asarray("eleven")
  return o.name, s


def _break_declared_shape(p, s):
  o = _first(p, lambda o: o.kind == "softmax")
  o.shape = o.shape[:-1] + (2,)                    # the kernel's softmax runs over the producer's N, not 2
  return o.name, s


def _break_matmul_k(p, s):
  o = _first(p, lambda o: o.kind == "matmul")
  o.attrs = {**o.attrs, "k": 1}
  return o.name, s


BROKEN = [("multiplier", _break_multiplier), ("shift", _break_shift), ("shift", _break_pre_shift),
          ("op-supported", _break_kind), ("op-supported", _break_unknown_kind), ("op-bits", _break_op_bits),
          ("op-bits", _break_weight_bits), ("accumulator", _break_accumulator_dense),
          ("accumulator", _break_accumulator_add), ("accumulator", _break_wide_gamma), ("accumulator", _break_eps),
          ("scale", _break_scale), ("static-shape", _break_shape), ("tensor-size", _break_tensor_size),
          ("lut", _break_lut), ("graph", _break_graph), ("operands", _break_missing_constant),
          ("operands", _break_string_constant), ("operands", _break_declared_shape), ("operands", _break_matmul_k)]


@pytest.mark.parametrize("rule,breaker", BROKEN, ids=[f"{r}-{b.__name__[7:]}" for r, b in BROKEN])
def test_checker_names_the_layer_and_rule_of_a_broken_program(program, spec, rule, breaker):
  broken = copy.deepcopy(program)
  layer, broken_spec = breaker(broken, spec)
  report = checker.check_program(broken, broken_spec)
  assert not report.ok
  assert (layer, rule) in report.rules_failed(), "\n".join(map(str, report.violations))
  assert {v.rule for v in report.violations} == {rule}, "\n".join(map(str, report.violations))
  line = next(str(v) for v in report.violations if v.layer == layer)
  assert line.startswith(f"FAIL layer={layer} rule={rule}: ")


def test_checker_run_exits_nonzero_with_the_message(tiny_quant, program, capsys):
  broken = copy.deepcopy(program)
  layer, _ = _break_shift(broken, None)
  assert checker.run(tiny_quant["config"], None, program=broken) == 1
  out = capsys.readouterr().out
  assert f"FAIL layer={layer} rule=shift: requant shift in [" in out and "FAIL: 1 violation(s)" in out
  assert checker.run(tiny_quant["config"], None, program=program, quiet=True) == 0


def test_spec_rejects_unknown_and_missing_keys(tiny_quant):
  target = tiny_quant["config"].target.to_dict()
  with pytest.raises(ValueError, match=r"unknown keys \['typo'\]"):
    checker.TargetSpec.from_config({**target, "typo": 1})
  del target["max_shift"]
  with pytest.raises(ValueError, match=r"missing keys \['max_shift'\]"):
    checker.TargetSpec.from_config(target)


# ------------------------------------------------------------------------------------------- artifact
def test_artifact_round_trip_is_exact_and_deterministic(program, artifact_path, inputs):
  loaded, header = artifact.read(artifact_path)
  assert header["version"] == artifact.VERSION and header["info"] == {"target": "test"}
  assert loaded.inputs == program.inputs and loaded.outputs == program.outputs and loaded.meta == program.meta
  for a, b in zip(program.ops, loaded.ops, strict=True):
    assert (a.name, a.kind, a.inputs, a.shape, a.dtype, a.bits, a.scale, a.attrs) == \
        (b.name, b.kind, b.inputs, b.shape, b.dtype, b.bits, b.scale, b.attrs)
    assert a.consts.keys() == b.consts.keys()
    assert all(runner.same_bits(a.consts[k], b.consts[k]) for k in a.consts)
  assert _structure(loaded) == _structure(program)           # the same jitted executable serves both
  with open(artifact_path, "rb") as f:
    assert f.read() == artifact.to_bytes(program, dict(target="test"))
  expected = run_program(program, inputs)
  got = runner.Runner(artifact_path)(inputs)
  assert all(runner.same_bits(x, y) for x, y in zip(expected, got))


def _rebuild(data: bytes, edit) -> bytes:
  """The artifact with its header JSON or blob edited by `edit(header, blob) -> blob`, re-laid-out and re-signed
  with SHA-256 as anyone can (so only the edited property is wrong)."""
  _, _, flags, n, _ = artifact.PREFIX.unpack_from(data)
  header = json.loads(data[artifact.PREFIX.size:artifact.PREFIX.size + n])
  blob = bytearray(data[header["blob_offset"]:len(data) - artifact.DIGEST * (2 if flags else 1)])
  blob = edit(header, blob)
  return artifact.seal(artifact.encode_header(header), bytes(blob), key=b"")


def _retext(data: bytes, edit) -> bytes:
  """The artifact with its header's JSON text edited by `edit(text) -> text`, re-signed with SHA-256."""
  _, _, flags, n, _ = artifact.PREFIX.unpack_from(data)
  header = json.loads(data[artifact.PREFIX.size:artifact.PREFIX.size + n])
  blob = data[header["blob_offset"]:len(data) - artifact.DIGEST * (2 if flags else 1)]
  return artifact.seal(edit(data[artifact.PREFIX.size:artifact.PREFIX.size + n]), blob, key=b"")


def _bad_dtype(header, blob):
  key = next(k for k, a in header["arrays"].items() if a["dtype"] == "int32")
  header["arrays"][key]["dtype"] = "object"
  return blob


def _bad_lut(header, blob):
  a = header["arrays"][header["luts"]["EXP_TABLE"]]
  blob[a["offset"]] ^= 1
  return blob


def _bad_offset(header, blob):
  key = next(iter(header["arrays"]))
  header["arrays"][key]["offset"] = len(blob) + 64
  return blob


def _first_op(header, kind):
  return next(d for d in header["ops"] if d["kind"] == kind)


def _negative_shape(header, blob):
  a = header["arrays"][_first_op(header, "dense")["consts"]["w_q"]]
  a["shape"] = [-a["shape"][0]] + a["shape"][1:]
  return blob


def _unknown_kind(header, blob):
  _first_op(header, "relu")["kind"] = "gelu"
  return blob


def _bits_3(header, blob):
  _first_op(header, "dense")["bits"] = 3
  return blob


def _bits_float(header, blob):
  _first_op(header, "dense")["bits"] = 8.0      # an integer to JSON Schema's default type check, a float here
  return blob


def _missing_const(header, blob):
  del _first_op(header, "dense")["consts"]["mult"]
  return blob


def _lying_shape(header, blob):
  op = _first_op(header, "dense")
  op["shape"] = op["shape"][:-1] + [op["shape"][-1] + 1]
  return blob


def _batch_slice(header, blob):
  op = _first_op(header, "index")        # x[0:3, ...]: its shape at batch 3 is the declared one, at others not
  op["attrs"]["index"] = [{"slice": [0, 3, None]}] + [i for i in op["attrs"]["index"] if i != "..."] + ["..."]
  return blob


def _huge_slice(header, blob):
  op = _first_op(header, "index")
  op["attrs"]["index"] = [{"slice": [0, 10**30, None]}] + [i for i in op["attrs"]["index"] if i != "..."] + ["..."]
  return blob


def _in_bits_short(header, blob):
  _first_op(header, "relu")["attrs"]["in_bits"] = []
  return blob


def _newline_input(header, blob):
  name = next(iter(header["inputs"]))
  header["inputs"] = {(k + "\n" if k == name else k): v for k, v in header["inputs"].items()}
  return blob


def _stray_concat_const(header, blob):
  op = _first_op(header, "concat")
  op["consts"]["7_pre"] = op["consts"]["0_pre"]
  return blob


def _huge_int_threshold(header, blob):
  header["meta"]["threshold"] = 10**300
  return blob


def _matmul_k(header, blob):
  op = _first_op(header, "matmul")
  op["attrs"]["k"] -= 1                 # the checker would bound a shorter sum than the kernel computes
  return blob


def _shift_60(header, blob):
  a = header["arrays"][_first_op(header, "dense")["consts"]["shift"]]
  blob[a["offset"]:a["offset"] + 4] = np.int32(60).tobytes()
  return blob


def _flip(data, i):
  return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def _version(data, v):
  return data[:8] + struct.pack("<I", v) + data[12:]


CORRUPT = {
    "flipped-weight-byte": (lambda d: _flip(d, len(d) - 100), r"checksum mismatch \(SHA-256"),
    "flipped-header-byte": (lambda d: _flip(d, 60), r"checksum mismatch \(SHA-256"),
    "truncated": (lambda d: d[:-100], r"truncated: the prefix says \d+ bytes, the file has \d+"),
    "truncated-header": (lambda d: d[:200], r"truncated: the prefix says \d+ bytes, the file has 200"),
    "truncated-prefix": (lambda d: d[:20], r"truncated: 20 bytes, shorter than the 32-byte prefix"),
    "empty": (lambda d: b"", r"0 bytes, shorter than the 32-byte prefix"),
    "padded": (lambda d: d + b"\0", r"wrong size: the prefix says \d+ bytes, the file has \d+"),
    "wrong-version": (lambda d: _version(d, 3), r"format version 3; this runner reads version 2"),
    "version-1": (lambda d: _version(d, 1), r"format version 1; this runner reads version 2 \(recompile"),
    "wrong-magic": (lambda d: b"PK\3\4" + d[4:], r"not a densetnt artifact"),
    "unknown-flags": (lambda d: d[:12] + struct.pack("<I", 6) + d[16:], r"unknown flags 0x6"),
    "bad-dtype": (lambda d: _rebuild(d, _bad_dtype), r"\.dtype: 'object' is not one of \['bool', "),
    "lut-mismatch": (lambda d: _rebuild(d, _bad_lut), r"lookup table EXP_TABLE differs"),
    "array-outside-blob": (lambda d: _rebuild(d, _bad_offset), r"does not fit the blob"),
    "negative-shape": (lambda d: _rebuild(d, _negative_shape), r"\.shape\[0\]: -\d+ is below the minimum 0"),
    "unknown-kind": (lambda d: _rebuild(d, _unknown_kind), r"ops\[\d+\]\.kind: 'gelu' is not one of \['add', "),
    "bits-3": (lambda d: _rebuild(d, _bits_3), r"ops\[\d+\]\.bits: 3 is not one of \[0, 8, 16\]"),
    "bits-float": (lambda d: _rebuild(d, _bits_float), r"ops\[\d+\]\.bits: expected integer, got float 8\.0"),
    "huge-slice": (lambda d: _rebuild(d, _huge_slice), r"attrs\.index\[0\]: \{'slice': \[0, 10{30}, None\]\} is "
                   r"not valid under any of the given schemas"),
    "in-bits-short": (lambda d: _rebuild(d, _in_bits_short), r"ops\[\d+\]\.attrs\.in_bits: \[\]: one width per input"),
    "newline-input": (lambda d: _rebuild(d, _newline_input), r"header inputs: 'inputs/\w+\\n' does not match"),
    "stray-concat-const": (lambda d: _rebuild(d, _stray_concat_const), r"ops\[\d+\]\.consts: missing \[\], unknown "
                           r"\['7_pre'\] for a concat op of 2 inputs"),
    "huge-int-number": (lambda d: _rebuild(d, _huge_int_threshold), r"meta\.threshold: 10+\.\.\.0+ is above the "
                        r"maximum 9007199254740992"),
    "missing-const": (lambda d: _rebuild(d, _missing_const), r"ops\[\d+\]\.consts: missing \['mult'\], unknown \[\] for a dense op"),
    "deep-json": (lambda d: _retext(d, lambda t: t.replace(b'"info":{', b'"info":' + b"[" * 10**5 + b"]" * 10**5
                                                           + b',"x":{')), r"corrupt header JSON \(RecursionError"),
    "huge-number": (lambda d: _retext(d, lambda t: t.replace(b'"version":2', b'"version":' + b"9" * 5000)),
                    r"corrupt header JSON \(ValueError: 'Exceeds"),
    "declared-shape-lies": (lambda d: _rebuild(d, _lying_shape), r"layer [^ ]+ rule operands: declares \(None, "
                            r"[\d, ]+\) int\d+, but its kernel gives \(None, [\d, ]+\)"),
    "batch-slice": (lambda d: _rebuild(d, _batch_slice), r"rule operands: declares \(None, [\d, ]*\) \w+, but "
                    r"its kernel gives \(3, "),
    "matmul-k-lies": (lambda d: _rebuild(d, _matmul_k), r"layer [^ ]+ rule operands: attr k = \d+, but its "
                      r"producers contract K = \d+"),
    "checker-violation": (lambda d: _rebuild(d, _shift_60),
                          r"does not fit target j6e-class: layer [^ ]+ rule shift: requant shift in \[\d+, 60\]"),
}


def test_header_schemas_are_valid_json_schemas():
  for schema in [artifact.HEADER_SCHEMA, *artifact.KIND_SCHEMAS.values()]:
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_artifact_refuses_a_bad_file(artifact_path, tmp_path, case):
  corrupt, message = CORRUPT[case]
  with open(artifact_path, "rb") as f:
    data = f.read()
  path = tmp_path / f"{case}.dtnt"
  path.write_bytes(corrupt(data))
  with pytest.raises(artifact.ArtifactError, match=message) as info:
    artifact.read(str(path), key=b"")
  assert str(path) in str(info.value) and "\n" not in str(info.value)
  assert len(str(info.value)) <= artifact.MAX_MESSAGE


def test_rebuild_helper_makes_a_valid_file(artifact_path, program):
  with open(artifact_path, "rb") as f:
    data = f.read()
  assert artifact.parse(_rebuild(data, lambda h, b: b), key=b"")[0]["ops"][0]["name"] == program.ops[0].name


def test_runner_cli_prints_one_line_and_exits_2(artifact_path, inputs, tmp_path, capsys):
  """A bad artifact, a missing input and a wrongly shaped one: `error: ...` on one line, exit 2 (--verbose
  raises instead)."""
  with open(artifact_path, "rb") as f:
    (tmp_path / "bad.dtnt").write_bytes(_flip(f.read(), 100))
  in_dir = tmp_path / "inputs"
  in_dir.mkdir()
  args = ["--inputs", str(in_dir), "--outputs", str(tmp_path / "out")]
  assert runner.main([str(tmp_path / "bad.dtnt")] + args) == 2
  assert runner.main([artifact_path] + args) == 2
  for field, value in inputs.items():
    np.save(in_dir / f"{field}.npy", value[:, :1] if field == "goals_Gx2" else value, allow_pickle=False)
  assert runner.main([artifact_path] + args) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
  assert "checksum mismatch" in lines[0] and "lacks" in lines[1]
  assert "input 'goals_Gx2' is float32[4, 1, 2]; the program takes float32[4, " in lines[2]
  with pytest.raises(artifact.ArtifactError, match="checksum mismatch"):
    runner.main([str(tmp_path / "bad.dtnt"), "--verbose"] + args)
  assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ fresh process
FRESH = textwrap.dedent("""
    import sys
    from densetnt_jax.deploy import runner
    status = runner.main(sys.argv[1:])
    heavy = [m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax')]
    ours = [m for m in sys.modules if m.startswith(('densetnt_jax.model.densetnt', 'densetnt_jax.train'))]
    assert not heavy and not ours, (heavy, ours)
    assert runner.training_modules() == []
    print('CLEAN')
    sys.exit(status)
""")


def test_fresh_process_runner_is_bit_exact_without_training_code(program, artifact_path, inputs, tmp_path):
  in_dir, out_dir = tmp_path / "inputs", tmp_path / "outputs"
  in_dir.mkdir()
  for field, value in inputs.items():
    np.save(in_dir / f"{field}.npy", value, allow_pickle=False)
  proc = subprocess.run([sys.executable, "-c", FRESH, artifact_path, "--inputs", str(in_dir), "--outputs",
                         str(out_dir)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "CLEAN" in proc.stdout and "training-side modules loaded: none" in proc.stdout
  expected = jax.block_until_ready(run_program(program, inputs))
  for field, value in expected._asdict().items():
    got = np.load(out_dir / f"{field}.npy", allow_pickle=False)
    assert runner.same_bits(got, value), field


# ----------------------------------------------------------------------------------------------- perf
def test_perf_estimate_counts_macs_bytes_and_liveness(program, spec):
  est1, est30 = perf.estimate(program, spec, 1), perf.estimate(program, spec, 30)
  dense_macs = sum(int(np.prod([1 if d is None else d for d in o.shape[:-1]])) * o.consts["w_q"].size
                   for o in program.ops if o.kind == "dense")
  matmul_macs = sum(int(np.prod([1 if d is None else d for d in o.shape])) * o.attrs["k"]
                    for o in program.ops if o.kind == "matmul")
  assert est1.macs == dense_macs + matmul_macs and est30.macs == 30 * est1.macs
  assert est1.param_bytes == sum(int(np.asarray(v).nbytes) for o in program.ops for v in o.consts.values())
  everything = sum(checker.tensor_bytes(o.shape, o.bits, o.dtype, 1) for o in program.ops)
  biggest = max(checker.tensor_bytes(o.shape, o.bits, o.dtype, 1) for o in program.ops)
  assert biggest <= est1.peak_activation_bytes < everything
  assert est30.peak_activation_bytes == 30 * est1.peak_activation_bytes
  assert 0 < est1.latency_ms < est30.latency_ms
  assert all(l.latency_us == 0 for l in est1.layers if l.where != "chip")
  assert sum(l.where == "host" for l in est1.layers) == 1          # the float log-softmax
  faster = perf.estimate(program, spec.replace(dram_gb_per_s=10 * spec.dram_gb_per_s), 30)
  assert faster.latency_ms < est30.latency_ms
  text = perf.format_perf(program, spec, [est1, est30])
  assert "HAT DenseTNT (J6E, batch 30): 11.30 ms" in text and "MACs per scene" in text


def test_measure_interpreter(program):
  m = perf.measure_interpreter(program, 4, reps=1)
  assert m["batch"] == 4 and m["best_ms"] > 0


def test_compile_perf_run_writes_artifact_and_report(tiny_quant, program, tmp_path, capsys):
  workdir = tmp_path / "run"
  program.save(str(workdir / "int" / "program"))
  status = compiler.run(tiny_quant["config"], str(workdir), measure=False, fresh_check=False, per_layer=False,
                        verify_batch=4)                         # the batch the other tests compiled
  out = capsys.readouterr().out
  assert status == 0, out
  assert "reloaded artifact vs interpreter (batch 4): bit-exact" in out
  doc = json.loads((workdir / "deploy" / "perf.json").read_text())
  assert doc["verification"] == {"reloaded_bit_exact": True}
  assert [e["batch"] for e in doc["estimate"]] == list(tiny_quant["config"].target.perf_batches)
  assert os.path.getsize(workdir / "deploy" / "model.dtnt") == doc["artifact"]["nbytes"]
