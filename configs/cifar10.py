"""GoogLeNet on CIFAR-10 at 32x32: the small-image stem keeps the resolution until inception 3a.

Full-width modules (5.98M parameters, 1.56G multiply-adds per image), BatchNorm, aux heads pooled
adaptively. Augmentation for small images: Inception crops of 25-100% of the area, flips, random
interpolation; no photometric distortions; evaluation on the whole image. SGD + Nesterov, cosine
decay over 100 epochs, bfloat16 compute. Expected accuracy: not yet measured with this codebase.

Data: TFDS downloads CIFAR-10 (160 MB) into ~/tensorflow_datasets on first use; on a machine
without network, run `tfds build cifar10 --data_dir DIR` elsewhere, copy DIR, and pass
--config.data.dir=DIR.

Commands:
  inception-jax train --config configs/cifar10.py --workdir runs/cifar10
  inception-jax eval --config configs/cifar10.py --workdir runs/cifar10
  inception-jax train --config configs/cifar10.py --workdir runs/cifar10-naive \
      --config.model.module=naive
"""

import ml_collections

from inception_jax.models import model_config
from inception_jax.training.defaults import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model = model_config("small")
  config.model.dtype = "bfloat16"
  config.image_size = 32
  config.data.update(name="cifar10", cache=True, eval_crop_fraction=1.0)
  config.augment.update(area_range=(0.25, 1.0), photometric=False)
  config.batch_size = 128
  config.learning_rate = 0.2  # 0.1 at batch 128
  config.nesterov = True
  config.weight_decay = 5e-4
  config.warmup_epochs = 1.0
  config.num_epochs = 100.0
  config.log_every_steps = 100
  config.eval_every_steps = 1950  # 5 epochs
  config.checkpoint_every_steps = 1950
  return config
