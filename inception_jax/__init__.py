"""inception-jax: GoogLeNet (Inception-v1) in JAX/Flax, faithful to Szegedy et al. 2015."""

__version__ = "0.1.0"
