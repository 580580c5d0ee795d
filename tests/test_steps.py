"""The train state's program, compiled for compiling fast, across XLA versions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax.training import steps


def test_a_fast_compile_option_this_xla_lacks_is_dropped(monkeypatch):
  """jax 0.12's XLA has no `xla_cpu_use_fusion_emitters`: the train state's program, compiled
  with FAST_COMPILE, must still compile where an option is gone, and other errors still raise."""
  lowered = jax.jit(lambda x: x * 2.0).lower(jnp.ones(3))
  monkeypatch.setitem(steps.FAST_COMPILE, "xla_no_such_option_anywhere", 1)
  np.testing.assert_array_equal(steps.compile_fast(lowered)(jnp.ones(3)), [2.0, 2.0, 2.0])
  monkeypatch.setitem(steps.FAST_COMPILE, "xla_backend_optimization_level", "not a level")
  with pytest.raises(jax.errors.JaxRuntimeError):
    steps.compile_fast(lowered)
