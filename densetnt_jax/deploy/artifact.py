"""The compiled artifact: one binary file holding an integer program, loadable without the training code.

Layout (little-endian; no pickle anywhere):

  offset 0    MAGIC (8 bytes, b"DTNTINT\\0")
          8   format version, uint32
         12   flags, uint32 (bit 0: a keyed signature precedes the checksum)
         16   header length H, uint64
         24   file length N, uint64
         32   header: H bytes of UTF-8 JSON
              zero padding to a multiple of ALIGN (64)
         B    array blob: every array raw, C order, each at an ALIGN-aligned offset from B
              [32 bytes HMAC-SHA256(key, bytes [0, B + blob length)), when flag bit 0 is set]
         N-32 SHA-256 of bytes [0, N - 32)

Header JSON: format, version, program_format (`program.FORMAT`), blob_offset B, blob_nbytes, meta (the
program's), inputs, outputs, ops (name, kind, inputs, shape, dtype, bits, scale, attrs encoded as program.json
does, consts: {const name: array key}), luts ({table: array key}, the kernels' exp / reciprocal / rsqrt tables),
arrays ({key: {dtype, shape, offset, nbytes}}), info (free-form: the target's name, the source) and target (the
`TargetSpec` the program was compiled for: the writer's `target`, else `configs/argo.py`'s; null only where the
configs are absent, and then the loader checks against configs/argo.py or refuses).

Reading trusts nothing in the file and refuses with one `ArtifactError` line saying what and where, in this order:
a non-regular file (a FIFO is never opened for reading) or one over `max_nbytes`; the prefix (magic, version,
flags, the file length against the file system's); the SHA-256 checksum and, with a key, the signature, before
any JSON is parsed; the JSON (depth, number sizes, NaN, duplicate keys); the header's JSON Schema and where its
arrays lie (`_check_header`); the LUTs' values against this runtime's (`program_from`); the checker
(`checker.check_program`) against the recorded target, whose operands rule traces every op through the
interpreter's kernels at any batch (`jax.eval_shape`, nothing runs); last the outputs through the host
epilogue, abstractly too. Writing is deterministic: the same program (and key) gives the same bytes.

Keyed signature (origin, not only integrity; off by default). The SHA-256 checksum proves the bytes are the
ones written, not who wrote them: anyone can edit a header and recompute it. Set DENSETNT_ARTIFACT_KEY (any
secret string) when compiling and the writer adds an HMAC-SHA256 of the body under that key; set it where the
artifact is loaded and the loader refuses unsigned files and files signed with another key (constant-time
compare). Without the variable, signed files load on their checksum alone.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import math
import os
import reprlib
import stat
import struct

import jax
import jsonschema
import numpy as np

from densetnt_jax.deploy.checker import CHECK_BATCH, FLOAT_CONSTS, TargetSpec, check_program
from densetnt_jax.postprocess import PostprocessSettings, finish_prediction
from densetnt_jax.quant import arith as A
from densetnt_jax.quant.ops import OPS, OpDef
from densetnt_jax.quant.program import FORMAT as PROGRAM_FORMAT
from densetnt_jax.quant.program import Program, from_document, to_document
from densetnt_jax.workdir import PROJECT_CONFIG, config_from

MAGIC = b"DTNTINT\0"
VERSION = 2                               # 2: flags and the file length in the prefix, keyed signature, target
ALIGN = 64
PREFIX = struct.Struct("<8sIIQQ")         # magic, version, flags, header length, file length
FLAG_KEYED = 1
DIGEST = 32
KEY_ENV = "DENSETNT_ARTIFACT_KEY"
MAX_NBYTES = 256 * 2**20        # read() refuses larger files unread (the default model: 326k weights, < 1 MB)
MAX_MESSAGE = 400                         # characters of an ArtifactError
DTYPES = {"int8": "<i1", "int16": "<i2", "int32": "<i4", "uint8": "<u1", "float32": "<f4", "bool": "|b1"}
LUTS = ("EXP_TABLE", "RECIP_TABLE", "RSQRT_TABLE")


class ArtifactError(ValueError):
  """A file that is not a valid artifact of this version; the one-line message says what is wrong and where."""

  def __init__(self, message: str):
    message = " ".join(str(message).split())
    super().__init__(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "...")


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 40, 40, 4, 4, 2


# ------------------------------------------------------------------------------------------ op kinds
# What each op kind needs (number of inputs, constants, attrs): the op table, `quant.ops.OPS` (`_kind_schema`).
CONST_DTYPES = {"w_q": "int8", "g_q": "int16", **dict.fromkeys(FLOAT_CONSTS, "float32")}   # others: int32
CODE_BITS = (0, 8, 16)                    # 0: a mask, index or float tensor
OP_DTYPES = ("float32", "int32", "bool")
INPUT_DTYPES = ("float32", "int32", "bool")
MAX_DIM = 2**31 - 1
MAX_RANK = 8
# bounds of the host epilogue's loops and draws (configs/argo.py: 6 rounds, 4 restarts)
POSTPROCESS_LIMITS = {"mode_num": (1, 1024), "opt_iterations": (0, 1000), "opt_restarts": (0, 256),
                      "opt_seed": (0, 2**32 - 1)}
# the widest datapath this runtime's kernels run exactly: a recorded target may not promise more
RUNTIME_LIMITS = {"accumulator_bits": 32, "multiplier_bits": A.MULT_BITS + 1, "weight_bits": 8,
                  "max_shift": A.MAX_SHIFT}


def _pad(n: int) -> int:
  return -n % ALIGN


# ------------------------------------------------------------------------------------------- writing
def signing_key() -> bytes | None:
  """The HMAC key from DENSETNT_ARTIFACT_KEY (UTF-8), or None when it is unset or empty."""
  value = os.environ.get(KEY_ENV, "")
  return value.encode() if value else None


def encode_header(header: dict) -> bytes:
  """The header's JSON (sorted keys, compact) with `blob_offset` set to where the blob then starts (a fixed
  point: the offset's own digits change the header's length); `seal` lays the file out around it."""
  header = dict(header, blob_offset=0)
  for _ in range(4):
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob_offset = PREFIX.size + len(text) + _pad(PREFIX.size + len(text))
    if header["blob_offset"] == blob_offset:
      return text
    header["blob_offset"] = blob_offset
  raise AssertionError("the header's blob offset did not settle")


def seal(header_text: bytes, blob: bytes, key: bytes | None = None) -> bytes:
  """Prefix + header JSON + padding + blob, then the keyed signature (with `key`) and the SHA-256 checksum."""
  start = PREFIX.size + len(header_text) + _pad(PREFIX.size + len(header_text))
  total = start + len(blob) + DIGEST * (2 if key else 1)
  body = PREFIX.pack(MAGIC, VERSION, FLAG_KEYED if key else 0, len(header_text), total) + header_text \
      + b"\0" * (start - PREFIX.size - len(header_text)) + bytes(blob)
  if key:
    body += hmac.new(key, body, hashlib.sha256).digest()
  return body + hashlib.sha256(body).digest()


def _target_dict(target: TargetSpec | None) -> dict | None:
  return None if target is None else json.loads(json.dumps(dataclasses.asdict(target)))


def to_bytes(program: Program, info: dict | None = None, target: TargetSpec | None = None,
             key: bytes | None = None) -> bytes:
  """The artifact of `program` as bytes (`write` puts them in a file). `target`: the spec it is checked against
  at load, recorded in the header (None: the default target, `default_target()`); `key`: the HMAC key (None:
  DENSETNT_ARTIFACT_KEY if set; b"": unsigned)."""
  blob, table = bytearray(), {}

  def add(array_key: str, value) -> str:
    v = np.asarray(value)
    name = str(v.dtype)
    if name not in DTYPES:
      raise ArtifactError(f"array {array_key}: dtype {name} is not one of {sorted(DTYPES)}")
    raw = np.ascontiguousarray(v, dtype=np.dtype(DTYPES[name])).tobytes()
    blob.extend(b"\0" * _pad(len(blob)))
    table[array_key] = dict(dtype=name, shape=list(v.shape), offset=len(blob), nbytes=len(raw))
    blob.extend(raw)
    return array_key

  doc = to_document(program, lambda i, o, c, v: add(f"{i}:{o.name}:{c}", v))
  luts = {t: add(f"lut:{t}", getattr(A, t)) for t in LUTS}
  header = dict(format="densetnt-int-artifact", version=VERSION, program_format=doc["format"],
                meta=doc["meta"], inputs=doc["inputs"], outputs=doc["outputs"], ops=doc["ops"], luts=luts,
                arrays=table, info=info or {}, target=_target_dict(target or default_target()),
                blob_nbytes=len(blob))
  return seal(encode_header(header), bytes(blob), signing_key() if key is None else key)


def write(program: Program, path: str, info: dict | None = None, target: TargetSpec | None = None,
          key: bytes | None = None) -> dict:
  """Writes the artifact (atomically: a temporary file renamed); returns {path, nbytes, sha256, signed}."""
  key = signing_key() if key is None else key
  data = to_bytes(program, info, target, key)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
  return dict(path=path, nbytes=len(data), sha256=hashlib.sha256(data).hexdigest(), signed=bool(key))


# ------------------------------------------------------------------------------------------- reading
def _read_bounded(path: str, max_nbytes: int) -> bytes:
  """The file's bytes, refused unread when it is not a regular file, is over `max_nbytes` or its prefix
  disagrees with its size (opened non-blocking: a FIFO never blocks the reader)."""
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
  except FileNotFoundError:
    raise FileNotFoundError(f"no artifact at {path}: write one with bin/compile_perf.py") from None
  except OSError as e:
    raise ArtifactError(f"{path}: cannot open the artifact ({e.strerror})") from None
  try:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
      raise ArtifactError(f"{path}: not a regular file; an artifact is a .dtnt file written by "
                          "bin/compile_perf.py")
    if st.st_size > max_nbytes:
      raise ArtifactError(f"{path}: {st.st_size} bytes, over the {max_nbytes}-byte limit of an artifact "
                          "(pass max_nbytes to read a larger one)")
    f = os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise
  with f:
    head = f.read(PREFIX.size)
    _check_prefix(head, st.st_size, path)
    data = head + f.read(st.st_size - len(head))
  if len(data) != st.st_size:
    raise ArtifactError(f"{path}: changed while read ({len(data)} bytes read, {st.st_size} expected)")
  return data


def _check_prefix(head: bytes, size: int, where: str) -> tuple[int, int]:
  """(flags, header length) of a prefix, checked against the file's size; nothing after it is read."""
  if len(head) < 12:
    raise ArtifactError(f"{where}: {size} bytes, shorter than the {PREFIX.size}-byte prefix (truncated, or not "
                        "an artifact)")
  magic, version = struct.unpack_from("<8sI", head)
  if magic != MAGIC:
    raise ArtifactError(f"{where}: not a densetnt artifact (magic {magic!r}, expected {MAGIC!r})")
  if version != VERSION:
    raise ArtifactError(f"{where}: artifact format version {version}; this runner reads version {VERSION} "
                        "(recompile with bin/compile_perf.py)")
  if len(head) < PREFIX.size:
    raise ArtifactError(f"{where}: truncated: {size} bytes, shorter than the {PREFIX.size}-byte prefix")
  _, _, flags, header_nbytes, file_nbytes = PREFIX.unpack_from(head)
  if flags & ~FLAG_KEYED:
    raise ArtifactError(f"{where}: unknown flags {flags:#x} in the prefix (corrupt, or a newer format)")
  if file_nbytes != size:
    kind = "truncated" if size < file_nbytes else "wrong size"
    raise ArtifactError(f"{where}: {kind}: the prefix says {file_nbytes} bytes, the file has {size}")
  room = size - PREFIX.size - DIGEST * (2 if flags & FLAG_KEYED else 1)
  if header_nbytes > room:
    raise ArtifactError(f"{where}: a header of {header_nbytes} bytes does not fit a {size}-byte file")
  return flags, header_nbytes


def _verify(data: bytes, flags: int, key: bytes | None, where: str) -> None:
  """The SHA-256 checksum, then (with a key) the keyed signature; before anything is parsed."""
  view = memoryview(data)
  digest = hashlib.sha256(view[:-DIGEST]).digest()
  if digest != data[-DIGEST:]:
    raise ArtifactError(f"{where}: checksum mismatch (SHA-256 {digest.hex()[:16]}... computed, "
                        f"{data[-DIGEST:].hex()[:16]}... stored): the file is corrupt")
  if not key:
    return
  if not flags & FLAG_KEYED:
    raise ArtifactError(f"{where}: unsigned artifact, and {KEY_ENV} is set: only files signed with that key load "
                        f"(recompile with {KEY_ENV} set, or unset it to accept unsigned files)")
  body_end = len(data) - 2 * DIGEST
  expected = hmac.new(key, view[:body_end], hashlib.sha256).digest()
  if not hmac.compare_digest(expected, data[body_end:body_end + DIGEST]):
    raise ArtifactError(f"{where}: keyed signature mismatch: signed with another key, or edited and re-signed; "
                        f"recompile with the {KEY_ENV} of this host")


def _no_constant(name: str):
  raise ValueError(f"{name} is not a number an artifact may hold")


def _finite_float(text: str) -> float:
  value = float(text)
  if not math.isfinite(value):
    raise ValueError(f"number {text[:20]} overflows a float")
  return value


def _unique_keys(pairs: list) -> dict:
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
  return dict(pairs)


def _load_json(raw: bytes, where: str) -> dict:
  """The header object, every JSON failure (deep nesting, a 5,000-digit number, NaN, a duplicate key) an
  ArtifactError."""
  try:
    header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float,
                        object_pairs_hook=_unique_keys)
  except (UnicodeDecodeError, ValueError, RecursionError) as e:
    raise ArtifactError(f"{where}: corrupt header JSON ({type(e).__name__}: {_short.repr(str(e))})") from None
  if not isinstance(header, dict):
    raise ArtifactError(f"{where}: the header is a JSON {type(header).__name__}, not an object")
  return header


def parse(data: bytes, where: str = "<bytes>", key: bytes | None = None) -> tuple[dict, dict]:
  """(header, {array key: numpy array}) of artifact bytes after the integrity checks and the header schema.
  `key`: the HMAC key a signature must verify under (None: DENSETNT_ARTIFACT_KEY, if set)."""
  flags, header_nbytes = _check_prefix(data[:PREFIX.size], len(data), where)
  _verify(data, flags, signing_key() if key is None else key, where)
  header = _load_json(data[PREFIX.size:PREFIX.size + header_nbytes], where)
  trailer = DIGEST * (2 if flags & FLAG_KEYED else 1)
  _check_header(header, where, PREFIX.size + header_nbytes, len(data) - trailer)
  start = header["blob_offset"]
  arrays = {}
  for k, a in header["arrays"].items():
    dt = np.dtype(DTYPES[a["dtype"]])
    raw = np.frombuffer(data, dtype=dt, count=a["nbytes"] // dt.itemsize, offset=start + a["offset"])
    arrays[k] = raw.reshape(a["shape"]).astype(np.dtype(a["dtype"]), copy=True)   # native byte order, writable
  return header, arrays


def read_header(path: str, max_nbytes: int = MAX_NBYTES, key: bytes | None = None) -> tuple[dict, dict]:
  """(header, {array key: numpy array}) of an artifact file: the bounded read, the checksum and signature and
  the header schema (what `read` does before it builds, traces and checks the program)."""
  return parse(_read_bounded(path, max_nbytes), path, key)


def read(path: str, max_nbytes: int = MAX_NBYTES, key: bytes | None = None) -> tuple[Program, dict]:
  """(Program, header) of an artifact file; an ArtifactError on anything but a valid file of this version whose
  program runs on this runtime and passes the checker (module docstring). FileNotFoundError when there is no
  file. `key`: the HMAC key (None: DENSETNT_ARTIFACT_KEY if set; b"": none)."""
  header, arrays = read_header(path, max_nbytes, key)
  return program_from(header, arrays, path), header


def program_from(header: dict, arrays: dict, where: str = "<bytes>") -> Program:
  """The Program of a verified header and its arrays (`read_header` / `parse`), refused when its LUTs differ from
  this runtime's (the interpreter uses its own tables), an op does not run as declared or the checker fails."""
  for table, k in header["luts"].items():
    if not np.array_equal(arrays[k], np.asarray(getattr(A, table))):
      raise ArtifactError(f"{where}: lookup table {table} differs from this runtime's: compiled by another "
                          "version of the kernels")
  program = from_document(header, arrays)
  _check_target(program, header["target"], where)
  _check_epilogue(program, where)
  return program


# ------------------------------------------------------------------------------------------- schema
# The header's structure as a JSON Schema (draft 2020-12, checked by `jsonschema`), each op's kind-specific part
# as its kind's schema (`KIND_SCHEMAS`); `_check_header` adds what a schema cannot say (array extents inside the
# blob, constants naming arrays of their dtype, the LUTs' shapes). "integer" is a JSON int only (8.0 is a float
# here: it would reach the kernels as a float width).
_VALIDATOR = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=(
    jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", lambda _, v: type(v) is int)))
_FLOAT_MAX = float(np.finfo(np.float64).max)


def _int(lo: int = 0, hi: int = MAX_DIM) -> dict:
  return {"type": "integer", "minimum": lo, "maximum": hi}


def _obj(required: dict, optional: dict | None = None, **more) -> dict:
  """An object with exactly these keys (`optional` ones may be absent)."""
  return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required),
          "additionalProperties": False, **more}


def _list(items: dict, lo: int = 0, hi: int = MAX_RANK, **more) -> dict:
  return {"type": "array", "items": items, "minItems": lo, "maxItems": hi, **more}


_NUMBER = {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX,   # a 4,300-digit int is no float,
           "if": {"type": "integer"}, "then": _int(-2**53, 2**53)}           # nor one a float holds inexactly
_STR = {"type": "string"}
_END = r"(?![\s\S])"          # a pattern's end: "$" (Python's re.search) also matches before a final newline
_SHAPE = _list(_int())
_BATCH_SHAPE = _list(_int(), lo=1, prefixItems=[{"type": "null"}])    # axis 0: the symbolic batch
_BOUND = {"type": ["integer", "null"], "minimum": -MAX_DIM, "maximum": MAX_DIM}
_SLICE = _list(False, 3, 3, prefixItems=[_BOUND, _BOUND, {**_BOUND, "not": {"const": 0}}])   # [start, stop, step]
_INDEX = _list({"anyOf": [{"const": "..."}, {"type": "null"}, _int(-MAX_DIM, MAX_DIM), _obj({"slice": _SLICE})]},
               contains={"const": "..."}, minContains=0, maxContains=1)   # program.encode_index
_ATTRS = {"in_bits": _list({"type": "integer", "enum": list(CODE_BITS)}, hi=MAX_DIM), "eps": _NUMBER,
          "alpha": _NUMBER, "spacing": {**_NUMBER, "exclusiveMinimum": 0}, "k": _int(1), "radius": _int(0, 64),
          "transpose_b": {"type": "boolean"}, "shape": _BATCH_SHAPE, "reps": _list(_int(1, 2**16), lo=1),
          "index": _INDEX, **dict.fromkeys(("axis", "source", "destination"), _int(-MAX_RANK, MAX_RANK - 1))}


def _kind_schema(d: OpDef) -> dict:
  """What an op of kind `d` holds: its inputs' count and its attrs. (Its constants depend on the inputs' count
  too, concat's one requant triple per input: `_check_header` compares them with `OpDef.consts_for`.)"""
  count = {"minItems": d.inputs, "maxItems": d.inputs} if d.inputs is not None else {"minItems": 1}
  attrs = _obj({a: _ATTRS.get(a, {}) for a in d.attrs})   # an attr not typed here: the checker traces the kernel
  return {"properties": {"inputs": count, "attrs": attrs}}


_OP = _obj({"name": {"type": "string", "minLength": 1, "maxLength": 256}, "kind": {"enum": sorted(OPS)},
            "inputs": _list(_STR, hi=MAX_DIM), "shape": _BATCH_SHAPE, "dtype": {"enum": list(OP_DTYPES)},
            "bits": {"type": "integer", "enum": list(CODE_BITS)}, "scale": {**_NUMBER, "type": ["number", "null"]},
            "attrs": {"type": "object"}, "consts": {"type": "object", "additionalProperties": _STR}})   # array keys
_POSTPROCESS = {f.name: {"str": _STR, "int": _int(*POSTPROCESS_LIMITS.get(f.name, (0, MAX_DIM)))}.get(f.type, _NUMBER)
                for f in dataclasses.fields(PostprocessSettings)}
_TARGET_TYPES = {"str": _STR, "float": _NUMBER, "tuple": _list(_STR, hi=MAX_DIM),
                 "dict": {"type": "object", "additionalProperties": _list(_int(0, 16), hi=MAX_DIM)}}
_TARGET = _obj({f.name: _TARGET_TYPES.get(f.type, _int(1, 2**62)) for f in dataclasses.fields(TargetSpec)})
_TARGET["type"] = ["object", "null"]                # null: the loader's default target
_TARGET["properties"].update(dict.fromkeys(RUNTIME_LIMITS, _int()), perf_batches=_list(_int(1), hi=MAX_DIM))
HEADER_SCHEMA = _obj({
    "format": {"const": "densetnt-int-artifact"}, "version": {"const": VERSION},
    "program_format": {"const": PROGRAM_FORMAT}, "blob_offset": _int(0, 2**63), "blob_nbytes": _int(0, 2**63),
    "meta": _obj({"threshold": _NUMBER, "mode_num": _int(*POSTPROCESS_LIMITS["mode_num"])},
                 {"postprocess": {**_obj({}, _POSTPROCESS), "type": ["object", "null"]}, "record_batch": _int(1)}),
    "inputs": {"type": "object", "propertyNames": {"pattern": rf"^inputs/[A-Za-z0-9_]{{1,64}}{_END}"},  # <field>.npy
               "additionalProperties": _list({}, 2, 2, prefixItems=[_BATCH_SHAPE, {"enum": list(INPUT_DTYPES)}])},
    "outputs": {"type": "object", "additionalProperties": _STR}, "ops": _list(_OP, hi=MAX_DIM),
    "luts": _obj(dict.fromkeys(LUTS, _STR)), "info": {"type": "object"}, "target": _TARGET,
    "arrays": {"type": "object", "additionalProperties": _obj({"dtype": {"enum": sorted(DTYPES)}, "shape": _SHAPE,
                                                                "offset": _int(0, 2**63), "nbytes": _int(0, 2**63)})}})
# each op is checked against its kind's schema after the header's (as an allOf of if/then by kind in the header's
# schema, parsing the demo's 193 ops took 98 ms instead of 44)
KIND_SCHEMAS = {d.kind: _kind_schema(d) for d in OPS.values()}
_HEADER = _VALIDATOR(HEADER_SCHEMA)
_KINDS = {kind: _VALIDATOR(schema) for kind, schema in KIND_SCHEMAS.items()}


def _schema_error(e: jsonschema.ValidationError, prefix: tuple) -> str:
  """`ops[3].bits: 3 is not one of [0, 8, 16]`: where, then what (long values shortened)."""
  at = "".join(f".{p}" if isinstance(p, str) and p.isidentifier() else f"[{_short.repr(p)}]"
               for p in prefix + tuple(e.absolute_path)).lstrip(".") or "(root)"
  what = {"enum": lambda: f"{_short.repr(e.instance)} is not one of {e.validator_value}",
          "type": lambda: f"expected {e.validator_value}, got {type(e.instance).__name__} {_short.repr(e.instance)}",
          "minimum": lambda: f"{_short.repr(e.instance)} is below the minimum {e.validator_value}",
          "maximum": lambda: f"{_short.repr(e.instance)} is above the maximum {e.validator_value}"}.get(e.validator)
  return f"{at}: {what() if what else e.message}"


def _check_header(h, where: str, header_end: int, body_end: int) -> None:
  """The header's schema, then where its arrays lie and what its constants and LUTs name; the first violation
  raises an ArtifactError naming the key path. (Op names, inputs and outputs: the checker's graph rule.)"""
  error, prefix = next(_HEADER.iter_errors(h), None), ()
  for i, d in enumerate(h["ops"] if error is None else ()):
    error, prefix = next(_KINDS[d["kind"]].iter_errors(d), None), ("ops", i)
    if error is not None:
      break
  if error is not None:
    raise ArtifactError(f"{where}: header {_schema_error(error, prefix)}")

  def fail(at: str, what: str):
    raise ArtifactError(f"{where}: header {at}: {what}")

  start, size, arrays = h["blob_offset"], h["blob_nbytes"], h["arrays"]
  if start != header_end + _pad(header_end) or start + size != body_end:
    fail("blob_offset", f"blob [{start}, {start + size}) is not between the header (ends at {header_end}) and the "
         f"signature / checksum (at {body_end})")
  spans = []
  for k, a in arrays.items():
    at, count = f"arrays[{_short.repr(k)}]", math.prod(a["shape"])
    if a["nbytes"] != count * np.dtype(DTYPES[a["dtype"]]).itemsize:
      fail(f"{at}.nbytes", f"{a['nbytes']} bytes for {a['dtype']}{a['shape']} ({count} elements)")
    if a["offset"] % ALIGN or a["offset"] + a["nbytes"] > size:
      fail(f"{at}.offset", f"{a['dtype']}{a['shape']} at {a['offset']}+{a['nbytes']} does not fit the blob ({size} "
           f"bytes, {ALIGN}-aligned offsets)")
    spans.append((a["offset"], a["offset"] + a["nbytes"], k))
  spans.sort()
  for (_, end, k0), (off, _, k1) in zip(spans, spans[1:]):
    if off < end:                       # one region read as many arrays would multiply the memory a file costs
      fail(f"arrays[{_short.repr(k1)}].offset", f"overlaps array {_short.repr(k0)}")
  for i, d in enumerate(h["ops"]):
    need = set(OPS[d["kind"]].consts_for(len(d["inputs"])))
    missing, unknown = need - set(d["consts"]), set(d["consts"]) - need - {"scale"}
    if missing or unknown:
      fail(f"ops[{i}].consts", f"missing {_short.repr(sorted(missing))}, unknown {_short.repr(sorted(unknown))} for a "
           f"{d['kind']} op of {len(d['inputs'])} inputs")
    if len(d["attrs"].get("in_bits", d["inputs"])) != len(d["inputs"]):
      fail(f"ops[{i}].attrs.in_bits", f"{d['attrs']['in_bits']}: one width per input ({len(d['inputs'])})")
  named = [(f"luts.{t}", t, k) for t, k in h["luts"].items()] + \
      [(f"ops[{i}].consts.{c}", c, k) for i, d in enumerate(h["ops"]) for c, k in d["consts"].items()]
  for at, name, k in named:
    if k not in arrays:
      fail(at, f"names no array ({_short.repr(k)})")
    a = arrays[k]
    if name in LUTS:                    # the kernels' tables, of this runtime's shapes
      dtype, shape = "int32", list(np.shape(getattr(A, name)))
    else:
      dtype, shape = CONST_DTYPES.get(name, "int32"), a["shape"]
    if a["dtype"] != dtype or a["shape"] != shape or math.prod(shape) < 1:
      fail(at, f"{a['dtype']}{a['shape']}; expected a non-empty {dtype}{shape} array")
  unused = set(arrays) - {k for _, _, k in named}
  if unused:
    fail("arrays", f"arrays {_short.repr(sorted(unused))} are read by no op or LUT")
  for k, limit in RUNTIME_LIMITS.items() if h["target"] else ():
    if h["target"][k] > limit:
      fail(f"target.{k}", f"{h['target'][k]}; this runtime's kernels are exact up to {limit}")
  try:
    PostprocessSettings.from_meta(h["meta"])
  except ValueError as e:
    fail("meta.postprocess", str(e))


# ----------------------------------------------------------------------------------- load-time checks
def _check_epilogue(program: Program, where: str) -> None:
  """The declared outputs through the host epilogue, abstractly (jax.eval_shape: nothing runs): outputs that do
  not fit it are an ArtifactError. (Every op's own kernel is traced by the checker's operands rule.)"""
  outs = {role: jax.ShapeDtypeStruct(tuple(CHECK_BATCH if d is None else d for d in o.shape),
                                     np.float32 if o.bits else np.dtype(o.dtype))
          for role, o in ((role, program.op(name)) for role, name in program.outputs.items())}
  try:
    jax.eval_shape(lambda o: finish_prediction(**o, settings=PostprocessSettings.from_meta(program.meta)), outs)
  except Exception as e:        # noqa: BLE001  a forged program must not get past here with any exception
    raise ArtifactError(f"{where}: the outputs {sorted(program.outputs)} do not fit the host epilogue "
                        f"({type(e).__name__}: {_short.repr(str(e))})") from None


@functools.lru_cache(maxsize=1)
def default_target() -> TargetSpec | None:
  """The target of `configs/argo.py` (the same in every variant), or None where the package runs without the
  repository's configs (a deployment host: artifacts record their target)."""
  if not PROJECT_CONFIG.is_file():
    return None
  return TargetSpec.from_config(config_from(PROJECT_CONFIG).target)


def _check_target(program: Program, target: dict | None, where: str) -> None:
  """The structural checker against the recorded target (or the default one): the first violation, with the
  number of others, as an ArtifactError."""
  try:
    spec = default_target() if target is None else TargetSpec.from_config(target)
  except (ValueError, TypeError) as e:
    raise ArtifactError(f"{where}: header target: {e}") from None
  if spec is None:
    raise ArtifactError(f"{where}: the artifact records no target and there is no default one "
                        "(configs/argo.py): recompile it where the configs are")
  try:
    report = check_program(program, spec)
  except Exception as e:          # noqa: BLE001  the checker must not let a crafted program crash the loader
    raise ArtifactError(f"{where}: the model checker failed on this program ({type(e).__name__}: "
                        f"{_short.repr(str(e))})") from None
  if not report.ok:
    first = report.violations[0]
    more = f" (and {len(report.violations) - 1} more)" if len(report.violations) > 1 else ""
    raise ArtifactError(f"{where}: the program does not fit target {spec.name}: layer {first.layer} rule "
                        f"{first.rule}: {first.message}{more}; see bin/model_checker.py")
