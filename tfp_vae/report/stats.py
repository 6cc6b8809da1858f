"""Aggregates across seeds: mean and standard deviation, the interquartile mean with a
stratified-bootstrap 95 % interval (fixed bootstrap seed, as in rliable), and the
Wilson 95 % interval of a frequency k/n."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 20220101
BOOTSTRAP_REPS = 2000


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (scipy's 25 % trimmed mean)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def iqm_interval(strata: Sequence[Sequence[float]], level: float = 0.95,
                 reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of the IQM under a stratified bootstrap: runs are resampled
    with replacement within each stratum (task), then pooled. Fixed seed: byte-stable."""
    rng = np.random.default_rng(seed)
    groups = [np.asarray(g, dtype=float) for g in strata if len(g)]
    estimates = np.empty(reps)
    for r in range(reps):
        pooled = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        estimates[r] = stats.trim_mean(pooled, 0.25)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(estimates, alpha)), float(np.quantile(estimates, 1.0 - alpha))


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
