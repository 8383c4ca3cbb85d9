"""Packed record format: a Scene trimmed to its real polylines/candidates, as msgpack of raw array bytes.

No pickle: a record is msgpack of {field: [dtype, shape, bytes]} decoded with np.frombuffer, so a crafted
LMDB cannot run code. Only plain numeric dtypes are accepted on decode.
"""
from __future__ import annotations

import msgpack
import numpy as np

from densetnt_jax.data.scene import Scene

FORMAT_VERSION = 1
_ALLOWED_DTYPES = {"float32", "float64", "bool", "int32", "int64", "uint8"}
# Fields trimmed to the number of real rows (the loader pads them back to the config maxima).
_TRIM = {"trajs_TxVxC": "traj", "traj_vector_mask_TxV": "traj", "traj_mask_T": "traj",
         "lanes_LxVxC": "lane", "lane_vector_mask_LxV": "lane", "lane_mask_L": "lane",
         "goals_Gx2": "goal", "goal_mask_G": "goal"}
_COUNT_FIELD = {"traj": "traj_mask_T", "lane": "lane_mask_L", "goal": "goal_mask_G"}


def encode_scene(scene: Scene) -> bytes:
  counts = {k: int(np.asarray(getattr(scene, f)).sum()) for k, f in _COUNT_FIELD.items()}
  arrays = {}
  for name, value in scene._asdict().items():
    a = np.asarray(value)
    if name in _TRIM:
      a = a[:counts[_TRIM[name]]]
    arrays[name] = [a.dtype.name, list(a.shape), a.tobytes()]
  return msgpack.packb({"version": FORMAT_VERSION, "arrays": arrays}, use_bin_type=True)


def decode_arrays(raw: bytes) -> dict[str, np.ndarray]:
  """{field: array} with the trimmed first axes; raises ValueError on anything malformed."""
  obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
  if not isinstance(obj, dict) or obj.get("version") != FORMAT_VERSION:
    raise ValueError(f"not a version-{FORMAT_VERSION} scene record")
  out = {}
  for name in Scene._fields:
    dtype, shape, data = obj["arrays"][name]
    if dtype not in _ALLOWED_DTYPES:
      raise ValueError(f"field {name}: dtype {dtype!r} not allowed")
    out[name] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
  return out


def pad_into(arrays: dict[str, np.ndarray], out: dict[str, np.ndarray], row: int | None = None) -> None:
  """Copies decoded (trimmed) arrays into preallocated fixed-shape arrays (at batch row `row` if given)."""
  for name, a in arrays.items():
    dst = out[name] if row is None else out[name][row, ...]
    if name in _TRIM:
      if a.shape[0] > dst.shape[0]:
        raise ValueError(f"field {name}: {a.shape[0]} rows, more than the configured maximum {dst.shape[0]}")
      if a.shape[1:] != dst.shape[1:]:
        raise ValueError(f"field {name}: shape {a.shape}, expected (<= {dst.shape[0]},) + {dst.shape[1:]}")
      dst[:a.shape[0]] = a
      dst[a.shape[0]:] = 0
    else:
      if a.shape != dst.shape:
        raise ValueError(f"field {name}: shape {a.shape}, expected {dst.shape}")
      dst[...] = a
