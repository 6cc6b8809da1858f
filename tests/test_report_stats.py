"""Aggregates against independent computations and known coverage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from tfp_vae.report.stats import iqm, iqm_interval, mean_std, tied_with_best, wilson, worse_than


def test_mean_std_matches_numpy_with_sample_deviation():
    x = [3.0, 7.0, 8.0, 1.5, 4.0]
    m, s = mean_std(x)
    assert m == pytest.approx(4.7) and s == pytest.approx(np.std(x, ddof=1))
    assert mean_std([2.0]) == (2.0, 0.0)


def test_iqm_is_the_mean_of_the_middle_half():
    x = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0]  # sorted middle half: 2, 3, 4, 5
    assert iqm(x) == pytest.approx(3.5)


def test_wilson_matches_the_closed_form_and_textbook_values():
    # closed form at k = 0: upper = z^2 / (n + z^2)
    z = stats.norm.ppf(0.975)
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z * z / (10 + z * z))
    # symmetric about 1/2 at k = n/2, and the textbook value for 5/10: (0.2366, 0.7634)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_no_interval_with_fewer_than_three_runs_and_no_iqm_interval_with_fewer_than_five_seeds():
    assert wilson(1, 2) is None and wilson(1, 3) is not None
    assert iqm_interval([1.0, 2.0, 3.0, 4.0]) is None
    assert iqm_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is not None


@pytest.mark.parametrize(
    "shift, spread, expected",
    [
        (0.0, 0.1, "agree"),  # the same mean, tight: equivalence within a margin of 1 is shown
        (0.3, 0.1, "agree"),  # a real shift well inside the margin is still agreement
        (5.0, 0.1, "differ"),  # a shift of five margins
        (0.0, 3.0, "undetermined"),  # no shift, but too spread for 5 seeds to show either
        (1.5, 0.1, "differ"),  # just outside the margin, tight: a difference, not equivalence
    ],
)
def test_backends_agree_only_when_an_equivalence_test_shows_it(shift, spread, expected):
    """Planted shifts between two groups of 5 seeds, equivalence margin 1: TOST (two one-sided
    Welch tests) decides agreement; failing it, a significant Welch difference decides 'differ'."""
    from tfp_vae.report.stats import equivalence

    rng = np.random.default_rng(7)
    a = rng.normal(0.0, spread, 5)
    b = rng.normal(shift, spread, 5)
    verdict, p_equivalent, p_different = equivalence(a, b, margin=1.0)
    assert verdict == expected, (verdict, p_equivalent, p_different)
    # TOST's p is the larger of the two one-sided Welch p-values, each from scipy directly
    lower = stats.ttest_ind(b + 1.0, a, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(b - 1.0, a, equal_var=False, alternative="less").pvalue
    assert p_equivalent == pytest.approx(max(lower, upper))


def test_bootstrap_interval_of_the_iqm_covers_the_truth_about_95_percent():
    """Normal(0, 1) seeds: the IQM of a symmetric law is its centre, 0."""
    rng = np.random.default_rng(7)
    trials, covered = 200, 0
    for t in range(trials):
        lo, hi = iqm_interval(rng.normal(size=30), reps=400, seed=t)
        covered += lo <= 0.0 <= hi
    assert 0.87 <= covered / trials <= 0.99


def test_bootstrap_is_reproducible():
    x = [0.0, 0.3, 0.1, 0.25, 0.2]
    assert iqm_interval(x) == iqm_interval(x)  # fixed seed: byte-stable tables


def test_tie_test_rejects_a_clear_gap_and_keeps_overlapping_samples_tied():
    rng = np.random.default_rng(3)
    best = rng.normal(2.0, 0.05, size=5)
    assert tied_with_best(best, rng.normal(2.01, 0.05, size=5)) is True  # 0.2 sd apart: no evidence
    assert tied_with_best(best, rng.normal(2.5, 0.05, size=5)) is False  # 10 sd apart
    assert tied_with_best(best, [2.1]) is None  # one seed: no test


def test_paired_worse_test_uses_the_pairing():
    """The seed effect (0 .. 0.4) swamps a constant 0.01 gap unpaired; paired, the gap is certain."""
    ref = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    worse, p = worse_than(ref + 0.01 + np.array([0.001, -0.001, 0.0, 0.002, -0.002]), ref)
    assert worse and p < 1e-3
    assert stats.ttest_ind(ref + 0.01, ref).pvalue > 0.5  # the unpaired test would see nothing
    better, _ = worse_than(ref - 0.01 + np.array([0.001, -0.001, 0.0, 0.002, -0.002]), ref)
    assert not better


def test_iqm_interval_does_not_depend_on_the_order_of_the_values():
    """The bootstrap resamples positions: fed the same values in another order it must still
    give the same interval (the values are sorted first), bit for bit."""
    values = np.random.default_rng(3).normal(60.0, 2.0, size=5)
    want = iqm_interval(values)
    for perm in itertools.permutations(range(5)):
        assert iqm_interval(values[list(perm)]) == want
