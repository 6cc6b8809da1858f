"""Aggregates across seeds, each from scipy.stats where it has the statistic: mean and
standard deviation, the interquartile mean with a percentile-bootstrap 95 % interval
(fixed bootstrap seed, so regenerated tables are byte-identical), the Wilson 95 %
interval of a frequency k/n, and the tests behind the report's verdicts.

No Wilson interval is given for fewer than MIN_SEEDS_FOR_INTERVAL runs, and no IQM interval
for fewer than MIN_SEEDS_FOR_IQM_INTERVAL values."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 20220101
BOOTSTRAP_REPS = 2000
MIN_SEEDS_FOR_INTERVAL = 3
#: Below 5 values the IQM and its bootstrap say nothing the mean and range do not: scipy's 25 %
#: trimmed mean of 3 values trims none (it is their mean), and a percentile bootstrap of 3
#: values spans about [min, max].
MIN_SEEDS_FOR_IQM_INTERVAL = 5
ALPHA = 0.05  # level of the tie and faithfulness tests


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (scipy's 25 % trimmed mean)."""
    return float(_iqm(np.asarray(values, dtype=float)))


def iqm_interval(
    values: Sequence[float], level: float = 0.95, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the IQM (runs resampled with replacement; one
    stratum, so a plain bootstrap). None with fewer than MIN_SEEDS_FOR_IQM_INTERVAL values."""
    x = np.sort(np.asarray(values, dtype=float))  # resampling picks positions: fix them, whatever the input order
    if len(x) < MIN_SEEDS_FOR_IQM_INTERVAL:
        return None
    res = stats.bootstrap(
        (x,),
        _iqm,
        n_resamples=reps,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of k/n (scipy's binomtest); None with fewer than MIN_SEEDS_FOR_INTERVAL runs."""
    if n < MIN_SEEDS_FOR_INTERVAL:
        return None
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def tied_with_best(best: Sequence[float], other: Sequence[float], alpha: float = ALPHA) -> bool | None:
    """Welch's t-test of `other` against `best`: tied when the difference of means is not
    significant at `alpha` (two-sided). None when either has fewer than two values."""
    a, b = np.asarray(best, float), np.asarray(other, float)
    if len(a) < 2 or len(b) < 2:
        return None
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    if math.isnan(p):  # both constant: tied exactly when equal
        return bool(a.mean() == b.mean())
    return bool(p >= alpha)


def worse_than(
    candidate: Sequence[float], reference: Sequence[float], alpha: float = ALPHA
) -> tuple[bool, float] | None:
    """Paired one-sided t-test that `candidate` is larger than `reference` (pairs in order):
    (significant at alpha, p-value). None with fewer than two pairs."""
    a, b = np.asarray(candidate, float), np.asarray(reference, float)
    if len(a) < 2:
        return None
    p = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    if math.isnan(p):  # constant differences: worse exactly when positive
        diff = float((a - b).mean())
        return diff > 0, 0.0 if diff > 0 else 1.0
    return p < alpha, p


def equivalence(
    a: Sequence[float],
    b: Sequence[float],
    margin: float,
    alpha: float = ALPHA,
) -> tuple[str, float, float] | None:
    """Two samples compared with an equivalence margin: (verdict, p of the equivalence test, p of
    the difference test). "agree": two one-sided Welch t-tests (TOST) show |mean(b) - mean(a)| <
    margin at `alpha`; "differ": not shown equivalent and the two-sided Welch test finds a
    difference at `alpha`; "undetermined": neither (too few or too spread values to tell).
    None with fewer than two values in either sample."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        return None
    if x.std() == 0 and y.std() == 0:  # no spread: the difference is known exactly
        d = abs(float(y.mean() - x.mean()))
        return ("agree" if d < margin else "differ"), float(d >= margin), float(d == 0)
    lower = stats.ttest_ind(y + margin, x, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(y - margin, x, equal_var=False, alternative="less").pvalue
    p_equivalent = float(max(lower, upper))
    p_different = float(stats.ttest_ind(y, x, equal_var=False).pvalue)
    if p_equivalent < alpha:
        return "agree", p_equivalent, p_different
    return ("differ" if p_different < alpha else "undetermined"), p_equivalent, p_different


def welch_against_summary(ours: Sequence[float], theirs: tuple[float, float], trials: int) -> float | None:
    """Two-sided Welch t-test of our values against a published mean and sd over `trials`; None
    with fewer than two values of ours or no spread on either side."""
    if len(ours) < 2:
        return None
    m, s = mean_std(ours)
    if s == 0 and theirs[1] == 0:
        return None
    return float(stats.ttest_ind_from_stats(m, s, len(ours), theirs[0], theirs[1], trials, equal_var=False).pvalue)


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher's exact test of k1 of n1 against k2 of n2 (scipy)."""
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test of two samples' means; None with fewer than two values in either.
    Two constant samples: 1 when equal, 0 when not (the difference is then known exactly)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        return None
    if x.std() == 0 and y.std() == 0:
        return float(x.mean() == y.mean())
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)
