"""Statistics over a sweep's seeds: mean, spread and confidence intervals, and paired differences.

scipy does the arithmetic: Student's t-interval of the mean (scipy.stats.ttest_1samp's
confidence_interval) for every group of two or more seeds, and a bias-corrected accelerated
bootstrap interval (scipy.stats.bootstrap) where there are enough seeds for resampling to say
something (BOOTSTRAP_MIN_SEEDS). A paired difference pairs runs by seed, so that what a seed
shares between two configurations (initialisation, data order) cancels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
BOOTSTRAP_MIN_SEEDS = 8  # below this, resamples of a handful of values mostly repeat them
BOOTSTRAP_RESAMPLES = 9999


@dataclasses.dataclass(frozen=True)
class Summary:
  """What n values say about their mean. Intervals are None where n is too small for them."""

  n: int
  mean: float
  std: float | None  # sample standard deviation (n - 1)
  t_interval: tuple[float, float] | None
  bootstrap_interval: tuple[float, float] | None
  p_value: float | None  # two-sided t-test of mean 0: meaningful for differences only

  def excludes_zero(self) -> bool:
    """Whether the t-interval lies wholly on one side of 0."""
    return self.t_interval is not None and (self.t_interval[0] > 0 or self.t_interval[1] < 0)


def summarize(values: Sequence[float], seed: int = 0) -> Summary:
  """Mean, standard deviation and 95% intervals of `values` (the bootstrap's draws from `seed`)."""
  data = np.asarray(values, dtype=np.float64)
  n = len(data)
  if n == 0:
    raise ValueError("no values to summarize")
  mean = float(data.mean())
  if n == 1:
    return Summary(1, mean, None, None, None, None)
  std = float(data.std(ddof=1))
  if std == 0:  # every seed agrees: scipy's intervals would divide by zero
    return Summary(n, mean, 0.0, (mean, mean), None, None if mean == 0 else 0.0)
  test = scipy.stats.ttest_1samp(data, 0.0)
  t_interval = test.confidence_interval(CONFIDENCE)
  bootstrap_interval = None
  if n >= BOOTSTRAP_MIN_SEEDS:
    result = scipy.stats.bootstrap(
      (data,),
      np.mean,
      confidence_level=CONFIDENCE,
      n_resamples=BOOTSTRAP_RESAMPLES,
      method="BCa",
      rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    bootstrap_interval = (float(interval.low), float(interval.high))
  return Summary(
    n,
    mean,
    std,
    (float(t_interval.low), float(t_interval.high)),
    bootstrap_interval,
    float(test.pvalue),
  )


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Summary | None:
  """The mean of a[seed] - b[seed] over the seeds both have, with its intervals (None if no seed
  is shared)."""
  seeds = sorted(a.keys() & b.keys())
  if not seeds:
    return None
  return summarize([a[seed] - b[seed] for seed in seeds])
