"""VectorNet encoder + DenseTNT decoder, loss and postprocess, all built from `primitives`."""
from densetnt_jax.model.densetnt import (DenseTNT, Densetnt, Prediction, TrainOutputs, build_model,
                                        finish_prediction)
from densetnt_jax.model.loss import densetnt_loss, smooth_l1, valid_scenes
from densetnt_jax.model.postprocess import Modes, nms_select, select_modes
from densetnt_jax.model.vectornet import Attention, Encoding, SubGraph, Vectornet

__all__ = [
    "Attention", "DenseTNT", "Densetnt", "Encoding", "Modes", "Prediction", "SubGraph", "TrainOutputs",
    "Vectornet", "build_model", "densetnt_loss", "finish_prediction", "nms_select", "select_modes", "smooth_l1",
    "valid_scenes",
]
