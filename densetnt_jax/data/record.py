"""Packed record format: a Scene trimmed to its real polylines/candidates, as msgpack of raw array bytes, sealed
with a CRC32C.

No pickle: a record is msgpack of {field: [dtype, shape, bytes]} decoded with np.frombuffer, so a crafted
LMDB cannot run code. Only plain numeric dtypes are accepted on decode. The stored value is the CRC32C of the
msgpack bytes (4 bytes, little-endian) followed by them: every single flipped bit (and every burst of <= 32
bits) anywhere in the value is caught on read, before anything is decoded.
"""
from __future__ import annotations

import math
import struct

import crc32c
import msgpack
import numpy as np

from densetnt_jax.data.scene import Scene

FORMAT_VERSION = 2                      # 2: values sealed with a CRC32C (1: bare msgpack); older packs: re-pack
_ALLOWED_DTYPES = {name: np.dtype(name) for name in ("float32", "float64", "bool", "int32", "int64", "uint8")}
# Fields trimmed to the number of real rows (the loader pads them back to the config maxima).
_TRIM = {"trajs_TxVxC": "traj", "traj_vector_mask_TxV": "traj", "traj_mask_T": "traj",
         "lanes_LxVxC": "lane", "lane_vector_mask_LxV": "lane", "lane_mask_L": "lane",
         "goals_Gx2": "goal", "goal_mask_G": "goal"}
_COUNT_FIELD = {"traj": "traj_mask_T", "lane": "lane_mask_L", "goal": "goal_mask_G"}
_CHECKSUM = struct.Struct("<I")


def seal(payload: bytes) -> bytes:
  """`payload` prefixed with its CRC32C, as stored in the LMDB."""
  return _CHECKSUM.pack(crc32c.crc32c(payload)) + payload


def unseal(value: bytes) -> memoryview:
  """The payload of a sealed value; ValueError if its checksum does not match (a flipped bit, a cut value)."""
  if len(value) < _CHECKSUM.size:
    raise ValueError(f"{len(value)} bytes, too short to hold a checksum")
  (stored,) = _CHECKSUM.unpack_from(value)
  payload = memoryview(value)[_CHECKSUM.size:]
  actual = crc32c.crc32c(payload)
  if actual != stored:
    raise ValueError(f"checksum mismatch (stored crc32c {stored:08x}, computed {actual:08x}): the value changed "
                     "after packing (disk or copy corruption); re-pack this split")
  return payload


def encode_scene(scene: Scene) -> bytes:
  """The sealed record of a scene; ValueError if a float field is not finite (the record is never written)."""
  counts = {k: int(np.asarray(getattr(scene, f)).sum()) for k, f in _COUNT_FIELD.items()}
  arrays = {}
  for name, value in scene._asdict().items():
    a = np.asarray(value)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
      raise ValueError(f"field {name} has non-finite values after vectorization (coordinates or timestamps too "
                       "large for float32?): not packed")
    if name in _TRIM:
      a = a[:counts[_TRIM[name]]]
    arrays[name] = [a.dtype.name, list(a.shape), a.tobytes()]
  return seal(msgpack.packb({"version": FORMAT_VERSION, "arrays": arrays}, use_bin_type=True))


def decode_arrays(raw: bytes) -> dict[str, np.ndarray]:
  """{field: array} with the trimmed first axes; raises ValueError on anything malformed (checksum first)."""
  obj = msgpack.unpackb(unseal(raw), raw=False, strict_map_key=True)
  if not isinstance(obj, dict) or obj.get("version") != FORMAT_VERSION or not isinstance(obj.get("arrays"), dict):
    raise ValueError(f"not a version-{FORMAT_VERSION} scene record")
  out = {}
  for name in Scene._fields:
    entry = obj["arrays"].get(name)
    if not (isinstance(entry, list) and len(entry) == 3):
      raise ValueError(f"field {name}: missing or not [dtype, shape, bytes]")
    dtype, shape, data = entry
    if dtype not in _ALLOWED_DTYPES:
      raise ValueError(f"field {name}: dtype {dtype!r} not allowed")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
            and isinstance(data, bytes)):
      raise ValueError(f"field {name}: shape {shape!r} is not a list of sizes, or its data is not bytes")
    dt = _ALLOWED_DTYPES[dtype]
    if math.prod(shape) * dt.itemsize != len(data):         # Python ints: a forged shape cannot wrap
      raise ValueError(f"field {name}: {len(data)} bytes do not hold shape {shape} of {dtype}")
    out[name] = np.frombuffer(data, dtype=dt).reshape(shape)
  return out


def pad_into(arrays: dict[str, np.ndarray], out: dict[str, np.ndarray], row: int | None = None) -> None:
  """Copies decoded (trimmed) arrays into preallocated fixed-shape arrays (at batch row `row` if given)."""
  for name, a in arrays.items():
    dst = out[name] if row is None else out[name][row, ...]
    if name in _TRIM:
      if a.ndim == 0 or a.shape[0] > dst.shape[0]:
        raise ValueError(f"field {name}: shape {a.shape}, more rows than the configured maximum {dst.shape[0]}")
      if a.shape[1:] != dst.shape[1:]:
        raise ValueError(f"field {name}: shape {a.shape}, expected (<= {dst.shape[0]},) + {dst.shape[1:]}")
      dst[:a.shape[0]] = a
      dst[a.shape[0]:] = 0
    else:
      if a.shape != dst.shape:
        raise ValueError(f"field {name}: shape {a.shape}, expected {dst.shape}")
      dst[...] = a
