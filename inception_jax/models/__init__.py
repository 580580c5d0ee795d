"""Flax models: layers -> branch -> Inception module -> GoogLeNet. Nothing here imports training."""

from inception_jax.models.branch import Branch, BranchSpec, Conv, Pool
from inception_jax.models.googlenet import GoogLeNet, GoogLeNetOutput
from inception_jax.models.module import (
  MODULE_KINDS,
  InceptionModule,
  ModuleWidths,
  naive_branches,
  reduced_branches,
)
from inception_jax.models.presets import (
  PRESETS,
  TABLE1_WIDTHS,
  build_model,
  init_variables,
  model_config,
  variable_shapes,
)

__all__ = [
  "Branch",
  "BranchSpec",
  "Conv",
  "Pool",
  "GoogLeNet",
  "GoogLeNetOutput",
  "MODULE_KINDS",
  "InceptionModule",
  "ModuleWidths",
  "naive_branches",
  "reduced_branches",
  "PRESETS",
  "TABLE1_WIDTHS",
  "build_model",
  "init_variables",
  "model_config",
  "variable_shapes",
]
