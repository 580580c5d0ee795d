"""torchvision's GoogLeNet, imported with its ImageNet weights, fine-tuned on the embedded digits.

The network is configs/imagenet.py:torchvision with a 10-class classifier (and aux heads), the
rest taken from the imported checkpoint; the 8x8 digits are upscaled to 64x64, which the ImageNet
stem (three stride-2 stages before inception 3a) takes down to 8x8 at 3a and 2x2 at 5a.

Commands (the weights file is downloaded by hand, see the README):
  inception-jax import-weights --from torchvision --weights googlenet-1378be20.pth \
      --workdir runs/googlenet_torchvision
  inception-jax train --config configs/finetune_digits.py --workdir runs/finetune_digits
  inception-jax train --config configs/finetune_digits.py --workdir runs/finetune_digits_head \
      --config.trainable=head          # the classifier and aux heads only: faster
  inception-jax predict --workdir runs/finetune_digits IMAGE.png
Another source: --config.init_from=DIR (a workdir, or DIR:STEP).
"""

import ml_collections

from inception_jax.models import model_config
from inception_jax.training.defaults import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model = model_config("torchvision")
  config.model.num_classes = 10
  config.init_from = "runs/googlenet_torchvision"
  config.image_size = 64
  config.data.update(name="sklearn_digits", cache=True, eval_crop_fraction=1.0)
  config.augment.update(area_range=(0.6, 1.0), flip=False, photometric=False)
  config.batch_size = 64
  config.learning_rate = 0.02
  config.warmup_epochs = 0.5
  config.num_epochs = 4.0
  config.log_every_steps = 10
  config.eval_every_steps = 44  # every 2 epochs
  config.checkpoint_every_steps = 44
  return config
