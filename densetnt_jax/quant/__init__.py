"""Quantization: integer kernels of the int8 target (`arith`), their bit-exact fake-quant twins for QAT
(`fakequant`), calibration observers (`observers`); the quantized modes of the model (`qtensor`), the
`quant` collection as pure transforms (`calibrate`), the integer program (`program`) and its interpreter.
The `*_params` helpers turn float scales into the integers both the QAT graph and the converter use.

Pipeline (the model code defines every graph; `quant` is a Flax variable collection):

  q = init_quant_state(model, params, example_inputs, config.quant)    # points, bits from config.quant.int16
  q = calibrate(model, params, q, batches, config.quant)               # observers -> frozen scales
  out = model.apply({"params": p, "quant": q}, inputs, train=True)     # fake-quant (QAT: STE gradients)
  pred = model.apply({"params": p, "quant": q}, inputs, method="predict")
  program = convert(model, p, q, example_inputs); program.save(dir)    # integer program (JSON + npz)
  pred = run_program(load_program(dir), inputs)                        # integer-only up to the epilogue

`quant` collection: quant/<module path>/{qmax, scale, observer} per quantization point (qtensor.py).
Per-op codes of the fake-quant model: `_, v = model.apply({"params", "quant"}, inputs, method="predict",
mutable=["intermediates"])` gives v["intermediates"]/<module path>/codes (int32 codes of that op's output);
`codes_by_name(v["intermediates"])` flattens it to {tensor name: codes}, the same names and values as
`run_program(program, inputs, return_codes=True)[1]` (every non-glue op with a code output: input
quantization, dense, layernorm, relu, masked max/fill, matmul, softmax, add, concat, mask add).

Names load lazily (PEP 562): `program`, `interpreter` and `arith` import jax and numpy only (no flax), so the
deployment runner loads a program without the model or training code.
"""
import importlib

_EXPORTS = {
    "densetnt_jax.quant.arith": (
        "AddParams", "DenseParams", "LayerNormParams", "Requant", "SoftmaxParams", "activation_scale",
        "add_params", "concat_params", "dense_params", "dequantize", "layernorm_params", "matmul_params", "qrange",
        "quantize", "requant_params", "softmax_params", "weight_scale_per_channel"),
    "densetnt_jax.quant.fakequant": ("fake_quant", "fake_quant_weight"),
    "densetnt_jax.quant.observers": ("ObserverState", "init_state", "observe", "scale_from"),
    "densetnt_jax.quant.qtensor": ("QTensor", "codes_by_name"),
    "densetnt_jax.quant.calibration": ("calibrate", "freeze_scales", "init_quant_state", "scales"),
    "densetnt_jax.quant.program": ("Op", "Program", "convert", "load_program"),
    "densetnt_jax.quant.interpreter": ("run_program",),
}
_SUBMODULES = ("arith", "fakequant", "observers", "qtensor", "calibration", "program", "interpreter")
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + list(_SUBMODULES)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"densetnt_jax.quant.{name}")
  if name not in _WHERE:
    raise AttributeError(f"module 'densetnt_jax.quant' has no attribute {name!r}")
  return getattr(importlib.import_module(_WHERE[name]), name)
