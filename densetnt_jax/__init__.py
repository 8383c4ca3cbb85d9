"""densetnt_jax: DenseTNT on Argoverse 1.1 in JAX/Flax, from float training to an integer program."""
__version__ = "0.1.0"
