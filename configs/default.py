"""A small GoogLeNet trained on the embedded handwritten digits: no network, a minute on a CPU.

The paper's network at a quarter of the width with the small-image stem (no stride or pooling
before inception 3a), BatchNorm instead of LRN, aux heads pooled adaptively, on scikit-learn's
8x8 digits (1,437 train / 360 test images, built into the TFDS data dir on first use).
Augmentation: mild Inception crops (60-100% of the area) and random interpolation; no flips,
since digits are not mirror-symmetric.

Commands:
  inception-jax train --config configs/default.py --workdir runs/default
  inception-jax eval --config configs/default.py --workdir runs/default
  inception-jax summarize --config configs/default.py --config.model.module=naive
"""

import ml_collections

from inception_jax.models import model_config
from inception_jax.training.defaults import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model = model_config("small")
  config.model.width_multiplier = 0.25
  config.image_size = 8
  config.data.update(name="sklearn_digits", cache=True, eval_crop_fraction=1.0)
  config.augment.update(area_range=(0.6, 1.0), flip=False, photometric=False)
  config.batch_size = 128
  config.learning_rate = 0.2
  config.warmup_epochs = 1.0
  config.num_epochs = 20.0
  config.log_every_steps = 20
  config.eval_every_steps = 55  # every 5 epochs
  config.checkpoint_every_steps = 55
  return config
