"""A small GoogLeNet for small images: the paper's modules at a quarter of the width, 32x32 input.

The small-image stem keeps the resolution (no stride, no pooling before inception 3a), so the
three stages run at 32x32, 16x16 and 8x8. BatchNorm instead of LRN, aux heads pooled adaptively.

Commands:
  inception-jax summarize --config configs/default.py
  inception-jax summarize --config configs/default.py --config.model.module=naive
"""

import ml_collections

from inception_jax.models import model_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config("paper")
  config.model.update(stem="small", width_multiplier=0.25, num_classes=10, norm="batchnorm",
                      aux_pool="adaptive")
  config.image_size = 32
  return config
