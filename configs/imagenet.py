"""GoogLeNet on ImageNet (ILSVRC 2012) at 224x224, trained with the paper's recipe.

Presets (the part after ':'):
  paper        Table 1's network: LRN, true 5x5 convs, 3x3/2 pools, 5x5/3 aux pooling, dropout
               0.4. 7.0M parameters, 1.58G multiply-adds (13.4M parameters with the aux heads).
  torchvision  torchvision.models.googlenet exactly: BatchNorm (eps 1e-3, no conv bias), 3x3 in
               the "5x5" branch, 2x2/2 last pool, adaptive aux pooling, dropout 0.2.
               6,624,904 parameters, 13,004,888 with the aux heads; 1.50G multiply-adds.

Recipe (Section 6 of the paper): SGD with momentum 0.9, the learning rate multiplied by 0.96 every
8 epochs, Polyak averaging of the weights for evaluation, aux losses weighted 0.3, Inception crops
(8-100% of the area, aspect 3/4-4/3), flips, photometric distortions and random interpolation;
evaluation on the central 87.5% crop. The paper gives no base rate, batch or length: 0.1 per 256
images over 250 epochs is this config's choice. bfloat16 compute, float32 parameters.
Expected accuracy: not yet measured with this codebase (torchvision's weights for the same
network: 69.8% top-1, 89.5% top-5, single centre crop).

Data: TFDS `imagenet2012` is built from the two archives on image-net.org (an account is needed):
  mkdir -p ~/tensorflow_datasets/downloads/manual
  # put ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB) in that folder
  tfds build imagenet2012 --data_dir ~/tensorflow_datasets     # a few hours, once
or let the first `train` build it. Another folder: --config.data.dir / --config.data.manual_dir.

Commands:
  inception-jax summarize --config configs/imagenet.py             # the paper's Table 1
  inception-jax summarize --config configs/imagenet.py --compare   # naive vs reduced modules
  inception-jax train --config configs/imagenet.py --workdir runs/imagenet
  inception-jax train --config configs/imagenet.py:torchvision --workdir runs/tv \
      --config.schedule=cosine --config.warmup_epochs=5 --config.num_epochs=90
  inception-jax eval --config configs/imagenet.py --workdir runs/imagenet
Multi-host (TPU pod slice, SLURM): run the same command in every process; see the README.
"""

import ml_collections

from inception_jax.models import model_config
from inception_jax.training.defaults import base_config


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  config = base_config()
  config.model = model_config(preset)
  config.model.dtype = "bfloat16"
  config.image_size = 224
  config.data.update(name="imagenet2012", train_split="train", eval_split="validation")
  config.batch_size = 256
  config.learning_rate = 0.1
  config.schedule = "paper"
  config.num_epochs = 250.0
  config.ema_decay = 0.9999
  config.log_every_steps = 100
  config.eval_every_steps = 5004  # ~1 epoch at batch 256
  config.checkpoint_every_steps = 5004
  return config
