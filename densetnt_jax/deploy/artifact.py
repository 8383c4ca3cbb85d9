"""The compiled artifact: one binary file holding an integer program, loadable without the training code.

Layout (little-endian; no pickle anywhere):

  offset 0    MAGIC (8 bytes, b"DTNTINT\\0")
          8   format version, uint32
         12   header length H, uint64
         20   header: H bytes of UTF-8 JSON
              zero padding to a multiple of ALIGN (64)
         B    array blob: every array raw, C order, each at an ALIGN-aligned offset from B
         N-32 SHA-256 of bytes [0, N - 32)

Header JSON: format, version, program_format (`program.FORMAT`), file_nbytes N, blob_offset B, blob_nbytes,
meta (the program's), inputs, outputs, ops (name, kind, inputs, shape, dtype, bits, scale, attrs encoded as
program.json does, consts: {const name: array key}), luts ({table: array key}, the kernels' exp / reciprocal /
rsqrt tables), arrays ({key: {dtype, shape, offset, nbytes}}, dtypes from a whitelist) and info (free-form:
the target, the source). Readers refuse a wrong magic, another version, a truncated or padded file (expected
vs actual size), a checksum mismatch, a dtype off the whitelist and an array outside the blob, each with an
`ArtifactError` saying which. Writing is deterministic: the same program gives the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from densetnt_jax.quant import arith as A
from densetnt_jax.quant.program import FORMAT as PROGRAM_FORMAT
from densetnt_jax.quant.program import Op, Program, _decode_attrs, _encode_attrs

MAGIC = b"DTNTINT\0"
VERSION = 1
ALIGN = 64
SUFFIX = ".dtnt"
_PREFIX = struct.Struct("<8sIQ")          # magic, version, header length
_DIGEST = 32
DTYPES = {"int8": "<i1", "int16": "<i2", "int32": "<i4", "uint8": "<u1", "float32": "<f4", "bool": "|b1"}
LUTS = ("EXP_TABLE", "RECIP_TABLE", "RSQRT_TABLE")


class ArtifactError(ValueError):
  """A file that is not a valid artifact of this version; the message says what is wrong and where."""


def _pad(n: int) -> int:
  return -n % ALIGN


def to_bytes(program: Program, info: dict | None = None) -> bytes:
  """The artifact of `program` as bytes (`write` puts them in a file)."""
  blob, table = bytearray(), {}

  def add(key: str, value) -> str:
    v = np.asarray(value)
    name = str(v.dtype)
    if name not in DTYPES:
      raise ArtifactError(f"array {key}: dtype {name} is not one of {sorted(DTYPES)}")
    raw = np.ascontiguousarray(v, dtype=np.dtype(DTYPES[name])).tobytes()
    blob.extend(b"\0" * _pad(len(blob)))
    table[key] = dict(dtype=name, shape=list(v.shape), offset=len(blob), nbytes=len(raw))
    blob.extend(raw)
    return key

  ops = []
  for i, o in enumerate(program.ops):
    consts = {c: add(f"{i}:{o.name}:{c}", v) for c, v in o.consts.items()}
    ops.append(dict(name=o.name, kind=o.kind, inputs=list(o.inputs), shape=list(o.shape), dtype=o.dtype,
                    bits=o.bits, scale=o.scale, attrs=_encode_attrs(o.attrs), consts=consts))
  luts = {t: add(f"lut:{t}", getattr(A, t)) for t in LUTS}
  header = dict(format="densetnt-int-artifact", version=VERSION, program_format=PROGRAM_FORMAT,
                meta=program.meta, inputs={k: [list(s), d] for k, (s, d) in program.inputs.items()},
                outputs=program.outputs, ops=ops, luts=luts, arrays=table, info=info or {},
                file_nbytes=0, blob_offset=0, blob_nbytes=len(blob))
  # the header states the file's own size and blob offset: fix the point (the numbers' widths can change)
  for _ in range(4):
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob_offset = _PREFIX.size + len(text) + _pad(_PREFIX.size + len(text))
    total = blob_offset + len(blob) + _DIGEST
    if header["blob_offset"] == blob_offset and header["file_nbytes"] == total:
      break
    header["blob_offset"], header["file_nbytes"] = blob_offset, total
  text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
  body = _PREFIX.pack(MAGIC, VERSION, len(text)) + text + b"\0" * _pad(_PREFIX.size + len(text)) + bytes(blob)
  assert len(body) + _DIGEST == header["file_nbytes"]
  return body + hashlib.sha256(body).digest()


def write(program: Program, path: str, info: dict | None = None) -> dict:
  """Writes the artifact (atomically: a temporary file renamed); returns {path, nbytes, sha256}."""
  data = to_bytes(program, info)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)
  return dict(path=path, nbytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def parse(data: bytes, where: str = "<bytes>") -> tuple[dict, dict]:
  """(header, {array key: numpy array}) of artifact bytes, after every integrity check."""
  if len(data) < _PREFIX.size:
    raise ArtifactError(f"{where}: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix "
                        "(truncated, or not an artifact)")
  magic, version, header_len = _PREFIX.unpack_from(data)
  if magic != MAGIC:
    raise ArtifactError(f"{where}: not a densetnt artifact (magic {magic!r}, expected {MAGIC!r})")
  if version != VERSION:
    raise ArtifactError(f"{where}: artifact format version {version}; this runner reads version {VERSION} "
                        f"(recompile with bin/compile_perf.py)")
  if len(data) < _PREFIX.size + header_len:
    raise ArtifactError(f"{where}: truncated: {len(data)} bytes, the header alone needs "
                        f"{_PREFIX.size + header_len}")
  try:
    header = json.loads(data[_PREFIX.size:_PREFIX.size + header_len].decode())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    signed = hashlib.sha256(data[:-_DIGEST]).digest() == data[-_DIGEST:]
    raise ArtifactError(f"{where}: corrupt header ({e})" + ("" if signed else "; checksum mismatch: the file is "
                                                             "corrupt")) from None
  expected = header.get("file_nbytes")
  if len(data) != expected:
    kind = "truncated" if isinstance(expected, int) and len(data) < expected else "wrong size"
    raise ArtifactError(f"{where}: {kind}: the header says {expected} bytes, the file has {len(data)}")
  digest = hashlib.sha256(data[:-_DIGEST]).digest()
  if digest != data[-_DIGEST:]:
    raise ArtifactError(f"{where}: checksum mismatch (SHA-256 {digest.hex()[:16]}... computed, "
                        f"{data[-_DIGEST:].hex()[:16]}... stored): the file is corrupt")
  if header.get("program_format") != PROGRAM_FORMAT:
    raise ArtifactError(f"{where}: program format {header.get('program_format')!r}, this runner understands "
                        f"{PROGRAM_FORMAT!r}")
  start, size = header["blob_offset"], header["blob_nbytes"]
  if start + size + _DIGEST != len(data):
    raise ArtifactError(f"{where}: blob [{start}, {start + size}) does not end at the checksum")
  arrays = {}
  for key, a in header["arrays"].items():
    if a["dtype"] not in DTYPES:
      raise ArtifactError(f"{where}: array {key!r} has dtype {a['dtype']!r}, not one of {sorted(DTYPES)}")
    dt = np.dtype(DTYPES[a["dtype"]])
    count = int(np.prod(a["shape"], dtype=np.int64))
    off, n = a["offset"], a["nbytes"]
    if n != count * dt.itemsize or off < 0 or off % ALIGN or off + n > size:
      raise ArtifactError(f"{where}: array {key!r} ({a['dtype']}{a['shape']} at {off}+{n}) does not fit the blob")
    raw = np.frombuffer(data, dtype=dt, count=count, offset=start + off).reshape(a["shape"])
    arrays[key] = raw.astype(np.dtype(a["dtype"]), copy=True)     # native byte order, writable
  return header, arrays


def read(path: str) -> tuple[Program, dict]:
  """(Program, header) of an artifact file; raises ArtifactError on anything but a valid file of this version,
  including LUTs that differ from this runtime's kernels (the interpreter uses its own tables)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no artifact at {path}: write one with bin/compile_perf.py")
  with open(path, "rb") as f:
    data = f.read()
  header, arrays = parse(data, path)
  for table, key in header["luts"].items():
    if not np.array_equal(arrays[key], np.asarray(getattr(A, table))):
      raise ArtifactError(f"{path}: lookup table {table} differs from this runtime's: compiled by another "
                          "version of the kernels")
  ops = [Op(d["name"], d["kind"], tuple(d["inputs"]), tuple(d["shape"]), d["dtype"], d["bits"], d["scale"],
            _decode_attrs(d["attrs"]), {c: arrays[k] for c, k in d["consts"].items()}) for d in header["ops"]]
  inputs = {k: (tuple(s), dt) for k, (s, dt) in header["inputs"].items()}
  return Program(inputs, ops, header["outputs"], header["meta"]), header
