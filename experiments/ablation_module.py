"""Naive against 1x1-reduced Inception modules, with and without aux heads (digits, 12 epochs).

The seeds' central question: what the 1x1 reductions and pool projections (paper Fig. 2b) buy
over the naive module (Fig. 2a), in accuracy against parameters, multiply-adds, speed and memory;
and, separately, what the two auxiliary classifiers add. configs/default.py's network (a quarter
of the paper's widths, small stem, BatchNorm) on the embedded 8x8 digits, 12 epochs.

The two modules do not share a good learning rate: the naive one's pool branches pass every
input channel through, so its classifier sees ~1,200 un-normalised features instead of 256 and
diverges at the reduced network's rate, while a rate the naive one survives undertrains the
reduced one. So both modules run at both rates (aux heads on), and each at its own rate without
aux heads: 6 points.

Command (about 25 minutes on a 2-core CPU, most of it the three naive points):
  inception-jax sweep experiments/ablation_module.py --workdir runs/ablation_module
Any other dataset by override, e.g. CIFAR-10 (needs the network, and a GPU to be quick):
  inception-jax sweep experiments/ablation_module.py --workdir runs/ablation_cifar10 \\
    --config.data.name=cifar10 --config.image_size=32 --config.augment.flip=true
Report: experiments/results/ablation_module/results.md (one seed per point; one of the 360 test
digits is 0.28 points of top-1).
"""

import ml_collections

from inception_jax.config import PROJECT_CONFIGS, load_config

DEFAULT_CONFIG = PROJECT_CONFIGS / "default.py"  # found from the package: the file may be copied

METRICS = (
  "params",
  "params_with_aux",
  "macs",
  "final_top1",
  "final_top5",
  "best_top1",
  "final_loss",
  "images_per_second",
  "wall_time",
  "step_memory",
  "peak_memory",
)


def get_config() -> ml_collections.ConfigDict:
  config = load_config(str(DEFAULT_CONFIG))
  config.num_epochs = 12.0  # 132 steps of 128
  config.eval_every_steps = 22  # every 2 epochs: six points per curve
  config.checkpoint_every_steps = 66
  config.log_every_steps = 22
  return config


def get_hyper(hyper):
  modules = hyper.sweep("model.module", ["reduced", "naive"])
  rates = hyper.sweep("learning_rate", [0.2, 0.02])
  own_rate = hyper.zip([modules, rates])  # reduced at 0.2, naive at 0.02
  return hyper.product([modules, rates, hyper.fixed("model.aux_heads", True)]) + hyper.product(
    [own_rate, hyper.fixed("model.aux_heads", False)]
  )
