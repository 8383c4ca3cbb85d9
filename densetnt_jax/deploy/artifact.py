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

Reading trusts nothing in the file, in this order, and refuses with one `ArtifactError` line saying what and
where: a non-regular file (a FIFO is never opened for reading) or one over `max_nbytes`; the prefix (magic,
version, flags, the file length against the file system's, before the body is read); the SHA-256 checksum and,
with a key, the signature, before any JSON is parsed; the JSON (depth, number sizes, NaN, duplicate keys); a
strict schema (known keys and types; arrays of whitelisted dtypes with non-negative shapes, shape product x
itemsize = nbytes, inside the blob and not overlapping; op kinds with their inputs, constants (`ops.OPS`) and
attrs; bits in {0, 8, 16}; LUTs equal to this runtime's); then the structural checker
(`checker.check_program`) against the recorded target, whose operands rule traces every op abstractly through
the interpreter's own kernels (`jax.eval_shape`, nothing runs): each must give its declared shape and dtype at
any batch, so an accepted program runs; last the outputs through the host epilogue, abstractly too. Writing
is deterministic: the same program (and key) gives the same bytes.

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
import re
import reprlib
import stat
import struct

import jax
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
SUFFIX = ".dtnt"
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
# What each op kind needs (number of inputs, constants, attrs): the op table, `quant.ops.OPS`.
CONST_DTYPES = {"w_q": "int8", "g_q": "int16", **dict.fromkeys(FLOAT_CONSTS, "float32")}   # others: int32
CODE_BITS = (0, 8, 16)                    # 0: a mask, index or float tensor
OP_DTYPES = ("float32", "int32", "bool")
INPUT_DTYPES = ("float32", "int32", "bool")
MAX_DIM = 2**31 - 1
MAX_RANK = 8
FIELD = re.compile(r"[A-Za-z0-9_]{1,64}")  # a program input `inputs/<field>` is read from `<field>.npy`
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
  _Schema(where).header(header, PREFIX.size + header_nbytes, len(data) - trailer)
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
def _is_int(v) -> bool:
  return type(v) is int


def _is_number(v) -> bool:
  """A finite float or an int a float holds (JSON ints may have 4,300 digits: math.isfinite overflows on them)."""
  return (type(v) is float and math.isfinite(v)) or (type(v) is int and abs(v) <= 2**53)


class _Schema:
  """The header's schema; the first violation raises an ArtifactError naming the key path."""

  def __init__(self, where: str):
    self.where = where

  def fail(self, at: str, what: str):
    raise ArtifactError(f"{self.where}: header {at}: {what}")

  def typed(self, v, types, at: str):
    if type(v) not in (types if isinstance(types, tuple) else (types,)):
      names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
      self.fail(at, f"expected {names}, got {type(v).__name__} {_short.repr(v)}")
    return v

  def integer(self, v, at: str, lo: int = 0, hi: int = MAX_DIM) -> int:
    if not (_is_int(v) and lo <= v <= hi):
      self.fail(at, f"expected an integer in [{lo}, {hi}], got {_short.repr(v)}")
    return v

  def number(self, v, at: str) -> float:
    if not _is_number(v):
      self.fail(at, f"expected a finite number, got {_short.repr(v)}")
    return v

  def keys(self, d, at: str, required, optional=()) -> dict:
    self.typed(d, dict, at)
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in required and k not in optional]
    if missing or unknown:
      self.fail(at, "; ".join(([f"missing keys {missing}"] if missing else [])
                              + ([f"unknown keys {_short.repr(unknown)}"] if unknown else [])))
    return d

  def shape(self, v, at: str, batch: bool) -> list:
    """A list of sizes; `batch`: axis 0 is the symbolic batch (null), every other axis an int."""
    self.typed(v, list, at)
    if not 0 <= len(v) <= MAX_RANK or (batch and (not v or v[0] is not None)):
      self.fail(at, f"shape {_short.repr(v)}: {'a null batch axis first, ' if batch else ''}"
                f"at most {MAX_RANK} axes")
    for i, d in enumerate(v[1:] if batch else v):
      self.integer(d, f"{at}[{i + batch}]")
    return v

  # ------------------------------------------------------------------------------------------ header
  def header(self, h: dict, header_end: int, body_end: int) -> None:
    """Every key of the header; `header_end`, `body_end`: where the header ends and the blob must end."""
    self.keys(h, "", ("format", "version", "program_format", "blob_offset", "blob_nbytes", "meta", "inputs",
                      "outputs", "ops", "luts", "arrays", "info", "target"))
    if h["format"] != "densetnt-int-artifact" or h["version"] != VERSION:
      self.fail("format", f"{_short.repr(h['format'])} version {_short.repr(h['version'])}, expected "
                f"'densetnt-int-artifact' version {VERSION}")
    if h["program_format"] != PROGRAM_FORMAT:
      self.fail("program_format", f"{_short.repr(h['program_format'])}, this runner understands "
                f"{PROGRAM_FORMAT!r}")
    start = self.integer(h["blob_offset"], "blob_offset", 0, body_end)
    size = self.integer(h["blob_nbytes"], "blob_nbytes", 0, body_end)
    if start != header_end + _pad(header_end) or start + size != body_end:
      self.fail("blob_offset", f"blob [{start}, {start + size}) is not between the header (ends at "
                f"{header_end}) and the signature / checksum (at {body_end})")
    self.typed(h["info"], dict, "info")
    self.arrays(h["arrays"], size)
    self.luts(h["luts"], h["arrays"])
    self.inputs(h["inputs"])
    self.ops(h["ops"], h["inputs"], h["arrays"])
    self.outputs(h["outputs"], h["ops"])
    used = set(h["luts"].values()) | {k for d in h["ops"] for k in d["consts"].values()}
    unused = [k for k in h["arrays"] if k not in used]
    if unused:
      self.fail("arrays", f"arrays {_short.repr(unused)} are read by no op or LUT")
    self.meta(h["meta"])
    self.target(h["target"])

  def arrays(self, arrays, blob_nbytes: int) -> None:
    self.typed(arrays, dict, "arrays")
    spans = []
    for k, a in arrays.items():
      at = f"arrays[{_short.repr(k)}]"
      self.keys(a, at, ("dtype", "shape", "offset", "nbytes"))
      if not isinstance(a["dtype"], str) or a["dtype"] not in DTYPES:
        self.fail(f"{at}.dtype", f"{_short.repr(a['dtype'])}, not one of {sorted(DTYPES)}")
      self.shape(a["shape"], f"{at}.shape", batch=False)
      count = math.prod(a["shape"])
      nbytes = self.integer(a["nbytes"], f"{at}.nbytes", 0, 2**63)
      if nbytes != count * np.dtype(DTYPES[a["dtype"]]).itemsize:
        self.fail(f"{at}.nbytes", f"{nbytes} bytes for {a['dtype']}{a['shape']} ({count} elements)")
      off = self.integer(a["offset"], f"{at}.offset", 0, 2**63)
      if off % ALIGN or off + nbytes > blob_nbytes:
        self.fail(f"{at}.offset", f"{a['dtype']}{a['shape']} at {off}+{nbytes} does not fit the blob "
                  f"({blob_nbytes} bytes, {ALIGN}-aligned offsets)")
      spans.append((off, off + nbytes, k))
    spans.sort()
    for (_, end, k0), (off, _, k1) in zip(spans, spans[1:]):
      if off < end:                       # one region read as many arrays would multiply the memory a file costs
        self.fail(f"arrays[{_short.repr(k1)}].offset", f"overlaps array {_short.repr(k0)}")

  def luts(self, luts, arrays: dict) -> None:
    self.keys(luts, "luts", LUTS)
    for table, k in luts.items():
      if not isinstance(k, str) or k not in arrays:
        self.fail(f"luts.{table}", f"names no array ({_short.repr(k)})")
      if arrays[k]["shape"] != list(np.shape(getattr(A, table))) or arrays[k]["dtype"] != "int32":
        self.fail(f"luts.{table}", f"{arrays[k]['dtype']}{arrays[k]['shape']}; this runtime's table is "
                  f"int32{list(np.shape(getattr(A, table)))}")

  def inputs(self, inputs) -> None:
    self.typed(inputs, dict, "inputs")
    for name, v in inputs.items():
      at = f"inputs[{_short.repr(name)}]"
      if not (name.startswith("inputs/") and FIELD.fullmatch(name[len("inputs/"):])):
        self.fail(at, "a program input is named inputs/<field>, the field of letters, digits and _")
      if not (type(v) is list and len(v) == 2 and v[1] in INPUT_DTYPES):
        self.fail(at, f"expected [shape, dtype] with a dtype in {INPUT_DTYPES}, got {_short.repr(v)}")
      self.shape(v[0], f"{at}.shape", batch=True)

  def ops(self, ops, inputs: dict, arrays: dict) -> None:
    self.typed(ops, list, "ops")
    known = set(inputs)
    for i, d in enumerate(ops):
      at = f"ops[{i}]"
      self.keys(d, at, ("name", "kind", "inputs", "shape", "dtype", "bits", "scale", "attrs", "consts"))
      name = self.typed(d["name"], str, f"{at}.name")
      at = f"op {_short.repr(name)}"
      if not 0 < len(name) <= 256 or name in known:
        self.fail(at, "op names are 1-256 characters, unique, and not a program input's")
      if not isinstance(d["kind"], str) or d["kind"] not in OPS:
        self.fail(f"{at}.kind", f"unknown op kind {_short.repr(d['kind'])}; known: {sorted(OPS)}")
      spec = OPS[d["kind"]]
      self.typed(d["inputs"], list, f"{at}.inputs")
      if (spec.inputs is None and not d["inputs"]) or (spec.inputs is not None and len(d["inputs"]) != spec.inputs):
        self.fail(f"{at}.inputs", f"{d['kind']} reads {spec.inputs or 'one or more'} tensors, got "
                  f"{len(d['inputs'])}")
      for x in d["inputs"]:
        if not isinstance(x, str) or x not in known:
          self.fail(f"{at}.inputs", f"reads {_short.repr(x)}, which no earlier op or program input defines")
      self.shape(d["shape"], f"{at}.shape", batch=True)
      if d["dtype"] not in OP_DTYPES:
        self.fail(f"{at}.dtype", f"{_short.repr(d['dtype'])}, not one of {OP_DTYPES}")
      if d["bits"] not in CODE_BITS or not _is_int(d["bits"]):
        self.fail(f"{at}.bits", f"{_short.repr(d['bits'])}; code widths are 8 or 16 (0: not codes)")
      if d["scale"] is not None:
        self.number(d["scale"], f"{at}.scale")
      self.attrs(d["attrs"], d, spec, at)
      self.consts(d["consts"], d, spec, arrays, at)
      known.add(name)

  def attrs(self, attrs, d: dict, spec: OpDef, at: str) -> None:
    self.keys(attrs, f"{at}.attrs", spec.attrs)
    for k, v in attrs.items():
      where = f"{at}.attrs.{k}"
      if k == "in_bits":
        self.typed(v, list, where)
        if len(v) != len(d["inputs"]) or any(b not in CODE_BITS or not _is_int(b) for b in v):
          self.fail(where, f"{_short.repr(v)}: one width in {CODE_BITS} per input")
      elif k in ("eps", "alpha"):
        self.number(v, where)
      elif k == "spacing":
        if not (_is_number(v) and v > 0):
          self.fail(where, f"expected a positive number, got {_short.repr(v)}")
      elif k in ("axis", "source", "destination"):
        self.integer(v, where, -MAX_RANK, MAX_RANK - 1)
      elif k in ("k",):
        self.integer(v, where, 1)
      elif k == "radius":
        self.integer(v, where, 0, 64)
      elif k == "transpose_b":
        self.typed(v, bool, where)
      elif k == "shape":
        self.shape(v, where, batch=True)
      elif k == "reps":
        self.typed(v, list, where)
        if not 0 < len(v) <= MAX_RANK:
          self.fail(where, f"{_short.repr(v)}: 1 to {MAX_RANK} repeats")
        for i, r in enumerate(v):
          self.integer(r, f"{where}[{i}]", 1, 2**16)
      elif k == "index":
        self.index(v, where)

  def index(self, v, at: str) -> None:
    """An encoded index (program.encode_index): "...", null (a new axis), an int or {"slice": [a, b, c]}."""
    self.typed(v, list, at)
    if len(v) > MAX_RANK or v.count("...") > 1:
      self.fail(at, f"{_short.repr(v)}: at most {MAX_RANK} entries and one ellipsis")
    for i, e in enumerate(v):
      if e is None or e == "...":
        continue
      if isinstance(e, dict):
        self.keys(e, f"{at}[{i}]", ("slice",))
        s = self.typed(e["slice"], list, f"{at}[{i}].slice")
        if len(s) != 3 or any(x is not None and not (_is_int(x) and abs(x) <= MAX_DIM) for x in s) or s[2] == 0:
          self.fail(f"{at}[{i}].slice", f"{_short.repr(s)}: [start, stop, step], ints or null, step not 0")
      else:
        self.integer(e, f"{at}[{i}]", -MAX_DIM, MAX_DIM)

  def consts(self, consts, d: dict, spec: OpDef, arrays: dict, at: str) -> None:
    """The kind's constants, each an array of its dtype; `scale` also where an output or quantize needs it."""
    self.typed(consts, dict, f"{at}.consts")
    required = spec.consts_for(len(d["inputs"]))
    self.keys(consts, f"{at}.consts", required, ("scale",))
    for c, k in consts.items():
      if not isinstance(k, str) or k not in arrays:
        self.fail(f"{at}.consts.{c}", f"names no array ({_short.repr(k)})")
      want, a = CONST_DTYPES.get(c, "int32"), arrays[k]
      if a["dtype"] != want or math.prod(a["shape"]) < 1:
        self.fail(f"{at}.consts.{c}", f"{a['dtype']}{a['shape']}; expected a non-empty {want} array")

  def outputs(self, outputs, ops: list) -> None:
    self.typed(outputs, dict, "outputs")
    by_name = {d["name"]: d for d in ops}
    for role, name in outputs.items():
      if not isinstance(name, str) or name not in by_name:
        self.fail(f"outputs.{_short.repr(role)}", f"names {_short.repr(name)}, which no op defines")
      if by_name[name]["bits"] and "scale" not in by_name[name]["consts"]:
        self.fail(f"outputs.{_short.repr(role)}", f"code tensor {_short.repr(name)} has no scale constant to "
                  "dequantize with")

  def meta(self, meta) -> None:
    self.keys(meta, "meta", ("threshold", "mode_num"), ("postprocess", "record_batch"))
    self.number(meta["threshold"], "meta.threshold")
    self.integer(meta["mode_num"], "meta.mode_num", *POSTPROCESS_LIMITS["mode_num"])
    if "record_batch" in meta:
      self.integer(meta["record_batch"], "meta.record_batch", 1)
    post = meta.get("postprocess")
    if post is None:
      return
    fields = {f.name: f.type for f in dataclasses.fields(PostprocessSettings)}
    self.keys(post, "meta.postprocess", (), tuple(fields))
    for k, v in post.items():
      at = f"meta.postprocess.{k}"
      if fields[k] == "str":
        self.typed(v, str, at)
      elif fields[k] == "int":
        self.integer(v, at, *POSTPROCESS_LIMITS.get(k, (0, MAX_DIM)))
      else:
        self.number(v, at)
    try:
      PostprocessSettings.from_meta(meta)
    except ValueError as e:
      self.fail("meta.postprocess", str(e))

  def target(self, target) -> None:
    if target is None:
      return
    fields = {f.name: f.type for f in dataclasses.fields(TargetSpec)}
    self.keys(target, "target", tuple(fields))
    types = {"str": str, "int": int, "float": (int, float), "dict": dict, "tuple": list}
    for k, v in target.items():
      self.typed(v, types[fields[k]], f"target.{k}")
    for k in ("op_bits",):
      for kind, widths in target[k].items():
        self.typed(widths, list, f"target.op_bits.{kind}")
        for i, b in enumerate(widths):
          self.integer(b, f"target.op_bits.{kind}[{i}]", 0, 16)
    for k in ("layout_ops", "host_ops"):
      for i, kind in enumerate(target[k]):
        self.typed(kind, str, f"target.{k}[{i}]")
    for k in ("perf_batches",):
      for i, b in enumerate(target[k]):
        self.integer(b, f"target.{k}[{i}]", 1)
    for k, limit in RUNTIME_LIMITS.items():
      if not 0 <= target[k] <= limit:
        self.fail(f"target.{k}", f"{target[k]}; this runtime's kernels are exact up to {limit}")
    for k in ("max_lut_entries", "lut_entry_bits", "max_tensor_bytes", "check_batch"):
      self.integer(target[k], f"target.{k}", 1, 2**62)


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
