"""configs/default.py cut to one Inception module per stage (3a, 4a, 5a) and one aux head.

The training tests exercise the trainer, not the full network (the model tests and the README's
measured run cover that); with a third of the modules every compile in them is about 3x shorter.
"""

import ml_collections

from inception_jax.config import load_config

DEFAULT = __file__.rsplit("/tests/", 1)[0] + "/configs/default.py"
MODULES = ("inception_3a", "inception_4a", "inception_5a")


def get_config() -> ml_collections.ConfigDict:
  config = load_config(DEFAULT)
  widths = {name: config.model.widths[name] for name in MODULES}
  config.model.widths = ml_collections.ConfigDict(widths)
  config.model.aux_from = ("inception_4a",)
  return config
