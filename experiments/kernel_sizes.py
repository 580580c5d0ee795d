"""The Inception module's kernel sizes: 1/3/5 (paper) against 1/3/3 (torchvision) and 1/3/7.

The seeds stress that 1/3/5 is a choice to be settled by experiment, not a fixed part of the design;
torchvision's port uses 3x3 in the "5x5" branch (a porting mistake kept for its weights), and 7x7
tests the other direction. configs/default.py's reduced network on the embedded 8x8 digits at its
own recipe, 12 epochs. Note the scale: modules 3a-3b see 8x8 maps, 4a-4e 4x4 and 5a-5b 2x2, so a 7x7
kernel covers a whole map from stage 4 on; this sweep says what kernel size does at that scale, and
runs unchanged at 32x32 (cifar10) or 224x224 (imagenet2012) by override.

Command (about 6 minutes on a 2-core CPU):
  inception-jax sweep experiments/kernel_sizes.py --workdir runs/kernel_sizes
Report: experiments/results/kernel_sizes/results.md
"""

import ml_collections

from inception_jax.config import PROJECT_CONFIGS, load_config

DEFAULT_CONFIG = PROJECT_CONFIGS / "default.py"  # found from the package: the file may be copied


def get_config() -> ml_collections.ConfigDict:
  config = load_config(str(DEFAULT_CONFIG))
  config.num_epochs = 12.0
  # The augmentation its report was made with (configs/default.py's until 2026-12-05).
  config.augment.update(inception_crop=True, area_range=(0.6, 1.0), random_interpolation=True)
  config.eval_every_steps = 22
  config.checkpoint_every_steps = 66
  config.log_every_steps = 22
  return config


def get_hyper(hyper):
  return hyper.sweep("model.kernel_sizes", [(1, 3, 5), (1, 3, 3), (1, 3, 7)])
