"""densetnt_jax: DenseTNT on Argoverse 1.1 in JAX/Flax, from float training to an integer program."""
__version__ = "0.1.0"


def load(workdir, stage: str = "float", **kwargs):
  """`densetnt_jax.load(workdir, stage)` -> Predictor (see densetnt_jax.api)."""
  from densetnt_jax.api import load as _load
  return _load(workdir, stage, **kwargs)
