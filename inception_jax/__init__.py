"""inception-jax: GoogLeNet (Inception-v1) in JAX/Flax, faithful to Szegedy et al. 2015."""

from inception_jax import xla_flags

xla_flags.apply_defaults()

__version__ = "0.1.0"
