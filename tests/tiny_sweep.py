"""Two configurations (flips on and off) x two seeds of the tiny config for 12 steps, evaluated
with 1 and 10 crops, and each configuration's seeds as an ensemble.

Flipping is in the input pipeline, not in the compiled step, so all four points compile to one
program.
"""

import ml_collections

from inception_jax.config import load_config

TINY_CONFIG = __file__.rsplit("/", 1)[0] + "/tiny_config.py"


def get_config() -> ml_collections.ConfigDict:
  return load_config(
    TINY_CONFIG,
    {
      "num_train_steps": "12",
      "log_every_steps": "4",
      "checkpoint_every_steps": "4",
      "eval_every_steps": "8",
    },
  )


COMPARE = [("flip=true", "flip=false")]
EVAL_CROPS = (1, 10)


def get_hyper(hyper):
  return hyper.product([hyper.sweep("augment.flip", [False, True]), hyper.seeds(2)])
