"""Sweeps: a grid of config overrides run point by point, each in its own workdir, then reported."""
