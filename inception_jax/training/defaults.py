"""The training fields every config starts from; a config file changes only what differs."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Data, augmentation, optimisation, logging and checkpoint fields with their defaults.

  The config file adds `model` (inception_jax.models.model_config) and `image_size`.
  """
  # The fields' comments line up as a table.
  # fmt: off
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameters, dropout, shuffles and augmentations all derive from it

  config.data = ml_collections.ConfigDict(dict(
    name="sklearn_digits",    # any TFDS image classification dataset
    dir="",                   # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    manual_dir="",            # files downloaded by hand (imagenet2012); "" = <dir>/downloads/manual
    train_split="train",
    eval_split="test",
    cache=False,              # keep the encoded split in memory (small datasets)
    shuffle_buffer=16_384,
    eval_crop_fraction=0.875,  # central crop of the shorter side (224 of 256)
  ))
  config.augment = ml_collections.ConfigDict(dict(
    inception_crop=True,      # random crop covering area_range with aspect_ratio_range
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
    flip=True,                # random horizontal flip
    photometric=True,         # brightness, saturation, hue, contrast
    random_interpolation=True,  # bilinear, area, nearest or bicubic, chosen per image
  ))

  config.batch_size = 256       # global, over all devices and processes
  config.learning_rate = 0.1    # for lr_reference_batch images; scaled linearly with batch_size
  config.lr_reference_batch = 256
  config.schedule = "cosine"    # paper (x0.96 every 8 epochs) | cosine | constant
  config.warmup_epochs = 0.0
  config.optimizer = "sgd"      # sgd | adamw
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 1e-4    # on kernels only
  config.num_epochs = 90.0
  config.num_train_steps = -1   # > 0 overrides num_epochs
  config.label_smoothing = 0.0
  config.aux_loss_weight = 0.3  # the paper's weight for each aux head's loss
  config.ema_decay = 0.0        # Polyak averaging of the weights, used for eval when > 0

  # Fine-tuning: start from another run's (or an imported network's) weights.
  config.init_from = ""         # a workdir, or WORKDIR:STEP; "" trains from scratch
  config.trainable = "all"      # all | head (the classifier and aux heads; the backbone frozen)

  config.log_every_steps = 100
  config.eval_every_steps = 0   # 0: only at the end
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3

  # Multi-process runs: filled in by hand, or left empty to let the cluster (TPU pod, SLURM, MPI)
  # tell jax.distributed.initialize.
  config.distributed = ml_collections.ConfigDict(dict(
    coordinator_address="", num_processes=1, process_id=0))
  # fmt: on
  return config
