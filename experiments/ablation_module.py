"""Naive against 1x1-reduced Inception modules, with and without aux heads, over 3 seeds (digits).

The seeds' central question: what the 1x1 reductions and pool projections (paper Fig. 2b) buy
over the naive module (Fig. 2a), in accuracy against parameters, multiply-adds, speed and memory;
and, separately, what the two auxiliary classifiers add. configs/default.py's network (a quarter
of the paper's widths, small stem, BatchNorm) on the embedded 8x8 digits, 8 epochs; each of the 4
configurations over 3 seeds, tested with the centre crop and the paper's 144 crops, each seed and
the 3 seeds' ensemble (the paper's Section 7 protocol; results.md gives mean ± sd [95% interval]
and the paired differences of COMPARE).

Each module runs at its own learning rate: the naive one's pool branches pass every input
channel through, so its classifier sees ~1,200 un-normalised features instead of 256 and
diverges at the reduced network's rate (0.2 per 256 images), while the naive one's rate (0.02)
undertrains the reduced one. Crossed at one seed, 12 epochs, the earlier report found 21.39% and
85.28% top-1 (`git show 2709690:experiments/results/ablation_module/results.md`).

Command (51 minutes on a 2-core AMD EPYC: 23 1/2 minutes training the 12 points two at a time,
one core each, then the 144-crop evaluations, 4 1/3 minutes per naive point):
  inception-jax sweep experiments/ablation_module.py --workdir runs/ablation_module --parallel 2
Any other dataset by override, e.g. CIFAR-10 (needs the network, and a GPU to be quick):
  inception-jax sweep experiments/ablation_module.py --workdir runs/ablation_cifar10 \\
    --config.data.name=cifar10 --config.image_size=32 --config.augment.flip=true
Report: experiments/results/ablation_module/results.md (one of the 360 test digits is 0.28
points of top-1). Expect the naive and reduced networks level at 96-97% top-1 (no difference that
3 seeds resolve), 10x apart in speed, and the 144 crops 8 points below the centre crop.
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
  "top1_144crops",
  "top5_144crops",
  "final_loss",
  "images_per_second",
  "wall_time",
  "step_memory",
)
EVAL_CROPS = (1, 144)
REDUCED_AUX = "module=reduced,learning_rate=0.2,aux_heads=true"
REDUCED = "module=reduced,learning_rate=0.2,aux_heads=false"
NAIVE_AUX = "module=naive,learning_rate=0.02,aux_heads=true"
NAIVE = "module=naive,learning_rate=0.02,aux_heads=false"
COMPARE = [(NAIVE_AUX, REDUCED_AUX), (NAIVE, REDUCED), (REDUCED_AUX, REDUCED), (NAIVE_AUX, NAIVE)]


def get_config() -> ml_collections.ConfigDict:
  config = load_config(str(DEFAULT_CONFIG))
  config.num_epochs = 8.0  # 88 steps of 128
  # The augmentation its report was made with (configs/default.py's until 2026-12-05).
  config.augment.update(inception_crop=True, area_range=(0.6, 1.0), random_interpolation=True)
  config.eval_every_steps = 22  # every 2 epochs: four points per curve
  config.checkpoint_every_steps = 44
  config.log_every_steps = 11
  return config


def get_hyper(hyper):
  # The naive points first: with --parallel the long points start first and the short ones
  # fill in around them.
  own_rate = hyper.zip(
    [hyper.sweep("model.module", ["naive", "reduced"]), hyper.sweep("learning_rate", [0.02, 0.2])]
  )
  return hyper.product([own_rate, hyper.sweep("model.aux_heads", [True, False]), hyper.seeds(3)])
