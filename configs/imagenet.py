"""GoogLeNet on ImageNet (ILSVRC 2012) at 224x224, as in Szegedy et al. 2015.

Presets (the part after ':'):
  paper        Table 1's network: LRN, true 5x5 convs, 3x3/2 pools, 5x5/3 aux pooling, dropout
               0.4. 7.0M parameters, 1.58G multiply-adds (13.4M parameters with the aux heads).
  torchvision  torchvision.models.googlenet exactly: BatchNorm (eps 1e-3, no conv bias), 3x3 in
               the "5x5" branch, 2x2/2 last pool, adaptive aux pooling, dropout 0.2.
               6,624,904 parameters, 13,004,888 with the aux heads; 1.50G multiply-adds.

Commands:
  inception-jax summarize --config configs/imagenet.py             # the paper's Table 1
  inception-jax summarize --config configs/imagenet.py --compare   # naive vs reduced modules
  inception-jax summarize --config configs/imagenet.py:torchvision
"""

import ml_collections

from inception_jax.models import model_config


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config(preset)
  config.image_size = 224
  return config
