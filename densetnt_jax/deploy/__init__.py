"""Deployment tools over the integer program (`densetnt_jax.quant.program`), one module per job: the target
`checker`; the `artifact` format, its standalone `runner`, the `compiler` that writes and verifies it, and the
cost estimate with measured latency (`perf`); ONNX emitted (`onnx_export`: float, QDQ, integer) and run and
compared in onnxruntime (`onnx_check`); and `align` (the QAT model vs the program, the artifact and the integer
ONNX, op by op). A program is found in a workdir with `densetnt_jax.workdir`, not the trainer.

Import the submodules directly (`from densetnt_jax.deploy import runner`): this package imports nothing, so
the artifact runner loads without the model or training code."""
