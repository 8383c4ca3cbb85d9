"""Deployment tools over the integer program (`densetnt_jax.quant.program`): the target checker, the compiled
artifact with its standalone runner and performance estimate, ONNX export (float, QDQ, integer), and `align`
(the QAT model vs the program, the artifact and the integer ONNX, op by op). A program is found in a workdir
with `densetnt_jax.workdir`, not the trainer.

Import the submodules directly (`from densetnt_jax.deploy import runner`): this package imports nothing, so
the artifact runner loads without the model or training code."""
