"""Aggregates against independent computations and known coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tfp_vae.report.stats import iqm, iqm_interval, mean_std, wilson


def test_mean_std_matches_numpy_with_sample_deviation():
    x = [3.0, 7.0, 8.0, 1.5, 4.0]
    m, s = mean_std(x)
    assert m == pytest.approx(4.7) and s == pytest.approx(np.std(x, ddof=1))
    assert mean_std([2.0]) == (2.0, 0.0)


def test_iqm_is_the_mean_of_the_middle_half():
    x = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0]  # sorted middle half: 2, 3, 4, 5
    assert iqm(x) == pytest.approx(3.5)


def test_wilson_matches_the_closed_form_and_statsmodels_values():
    # closed form at k = 0: upper = z^2 / (n + z^2)
    z = stats.norm.ppf(0.975)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z))
    # symmetric about 1/2 at k = n/2, and the textbook value for 5/10: (0.2366, 0.7634)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert math.isnan(wilson(0, 0)[0])


def test_bootstrap_interval_of_the_iqm_covers_the_truth_about_95_percent():
    """Normal(0, 1) seeds: the IQM of a symmetric law is its centre, 0."""
    rng = np.random.default_rng(7)
    trials, covered = 200, 0
    for t in range(trials):
        lo, hi = iqm_interval([rng.normal(size=30)], reps=400, seed=t)
        covered += lo <= 0.0 <= hi
    assert 0.87 <= covered / trials <= 0.99


def test_bootstrap_is_stratified_and_reproducible():
    a, b = [0.0, 0.1, 0.2, 0.3], [10.0, 10.1, 10.2, 10.3]
    assert iqm_interval([a, b]) == iqm_interval([a, b])  # fixed seed
    lo, hi = iqm_interval([a, b])
    # every resample keeps 4 runs from each stratum, so the pooled IQM stays between the groups
    assert 0.0 < lo <= hi < 10.3
