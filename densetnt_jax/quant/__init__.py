"""Quantization: integer kernels of the int8 target (`arith`), their bit-exact fake-quant twins for QAT
(`fakequant`) and calibration observers (`observers`). The `*_params` helpers turn float scales into the
integers both the QAT graph and the integer-program converter use."""
from densetnt_jax.quant import arith, fakequant, observers
from densetnt_jax.quant.arith import (AddParams, DenseParams, LayerNormParams, Requant, SoftmaxParams,
                                      activation_scale, add_params, concat_params, dense_params, dequantize,
                                      layernorm_params, matmul_params, qrange, quantize, requant_params,
                                      softmax_params, weight_scale_per_channel)
from densetnt_jax.quant.fakequant import fake_quant, fake_quant_weight
from densetnt_jax.quant.observers import ObserverState, init_state, observe, scale_from

__all__ = [
    "arith", "fakequant", "observers", "AddParams", "DenseParams", "LayerNormParams", "Requant",
    "SoftmaxParams", "activation_scale", "add_params", "concat_params", "dense_params", "dequantize",
    "layernorm_params", "matmul_params", "qrange", "quantize", "requant_params", "softmax_params",
    "weight_scale_per_channel", "fake_quant", "fake_quant_weight", "ObserverState", "init_state", "observe",
    "scale_from",
]
