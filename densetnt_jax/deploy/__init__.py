"""Deployment tools over the integer program (`densetnt_jax.quant.program`): the target checker, the compiled
artifact with its standalone runner and performance estimate, and ONNX export (float, QDQ, integer).

Import the submodules directly (`from densetnt_jax.deploy import runner`): this package imports nothing, so
the artifact runner loads without the model or training code."""
