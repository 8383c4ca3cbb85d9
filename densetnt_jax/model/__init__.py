"""VectorNet encoder + DenseTNT decoder and loss, all built from `primitives`; the mode selection they end with
is `densetnt_jax.postprocess` (below `quant`: the integer program's epilogue too), its names handed on here.

Names load lazily (PEP 562)."""
import importlib

_EXPORTS = {
    "densetnt_jax.model.densetnt": ("DenseTNT", "Densetnt", "TrainOutputs", "build_model"),
    "densetnt_jax.model.loss": ("densetnt_loss", "smooth_l1", "valid_scenes"),
    "densetnt_jax.postprocess": ("Modes", "Prediction", "finish_prediction", "nms_select", "select_modes"),
    "densetnt_jax.model.vectornet": ("Attention", "Encoding", "SubGraph", "Vectornet"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
  if name not in _WHERE:
    raise AttributeError(f"module 'densetnt_jax.model' has no attribute {name!r}")
  return getattr(importlib.import_module(_WHERE[name]), name)
