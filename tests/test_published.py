"""Our records beside a published table: the file is validated, each published model meets the
rows of its decoder, and 'differs' is a Welch t-test from the two means and sds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfp_vae.errors import ConfigError
from tfp_vae.report.published import load_published, published_table

PUBLISHED = """
source = "Planted et al."
dataset = "fashion_mnist"
scaling = "raw"
[protocol]
learning_rate = 5e-5
max_epochs = 1000
patience = 50
trials = 5
validation = "the test set"
[[model]]
name = "Same"
decoder = "fixed"
correspondence = "the same model"
lppl = [-730.0, 0.1]
rmse = [0.15, 0.002]
[[model]]
name = "Far"
decoder = "learned"
correspondence = "the same model"
lppl = [2150.0, 40.0]
rmse = [0.25, 0.001]
"""


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {
        "status": "ok",
        "dataset": "fashion_mnist",
        "scaling": "raw",
        "variance_collapse": False,
        "epochs": 20,
        "patience": 5,
        "min_delta": 0.0,
        "monitor": "val_bound",
        "ending": "capped",
        "validation_fraction": 0.1,
        "lppl_samples": 20,
        "test_examples": 10000,
    }
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame["config"] = frame["decoder"]
    return frame


def _welch_p(x: np.ndarray, mean: float, sd: float, n: int) -> float:
    """Welch's t-test written out: t, Welch-Satterthwaite degrees of freedom, two-sided p."""
    a, b = x.var(ddof=1) / len(x), sd**2 / n
    t = (x.mean() - mean) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (len(x) - 1) + b**2 / (n - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_published_models_meet_their_decoders_and_differences_are_welch_tests(tmp_path):
    path = tmp_path / "pub.toml"
    path.write_text(PUBLISHED)
    fixed = np.array([-730.1, -729.95, -730.0])
    learned = {1e-3: np.array([1500.0, 1520.0, 1490.0]), 1e-4: np.array([2120.0, 2180.0, 2160.0])}
    rows = [
        {"decoder": "fixed", "label": "fixed", "seed": s, "lppl": v, "rmse": 0.15, "learning_rate": 1e-3}
        for s, v in enumerate(fixed)
    ]
    rows += [
        {"decoder": "learned", "label": f"learned(lr={lr:g})", "seed": s, "lppl": v, "rmse": 0.2, "learning_rate": lr}
        for lr, vs in learned.items()
        for s, v in enumerate(vs)
    ]
    rows.append({"decoder": "floor", "label": "floor", "seed": 0, "lppl": 1.0, "rmse": 0.1, "learning_rate": 1e-3})
    t = published_table(_frame(rows), load_published(path))
    n = t.numbers.set_index("decoder")
    assert list(n.index) == ["fixed", "learned(lr=0.0001)", "learned(lr=0.001)"]  # floor has no published model
    assert n.loc["fixed", "lppl_p"] == pytest.approx(_welch_p(fixed, -730.0, 0.1, 5), rel=1e-9)
    assert not n.loc["fixed", "lppl_differs"]
    assert n.loc["learned(lr=0.001)", "lppl_differs"] and not n.loc["learned(lr=0.0001)", "lppl_differs"]
    assert n.loc["learned(lr=0.001)", "lppl_mean"] == pytest.approx(learned[1e-3].mean())
    # the caption carries both protocols from the values in force
    for needle in (
        "5e-05",
        "1000 epochs",
        "patience 50",
        "the test set",
        "20 epochs",
        "10 %",
        "20 posterior samples",
        "10000 test images",
        "0.0001, 0.001",
    ):
        assert needle in t.caption, needle
    # and the machines our rows ran on, from the records
    machines = [{**r, "cpu_model": "CPU X" if r["seed"] else "CPU Y", "device": "cpu:0"} for r in rows]
    assert (
        "trained and evaluated on CPU X (cpu), CPU Y (cpu)."
        in published_table(_frame(machines), load_published(path)).caption
    )


@pytest.mark.parametrize(
    "text,needle",
    [
        (PUBLISHED.replace("lppl = [-730.0, 0.1]", "lppl = [-730.0]"), "lppl = [-730.0] is not allowed"),
        (PUBLISHED.replace("trials = 5", "trials = 1"), "trials = 1 is not allowed"),
        (
            PUBLISHED.replace('correspondence = "the same model"\nlppl = [-730.0', "lppl = [-730.0"),
            "correspondence missing",
        ),
        (PUBLISHED.replace("patience = 50\n", ""), "[protocol] lacks patience"),
    ],
)
def test_a_bad_published_file_names_the_file_and_the_key(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_published(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_for_one_fixed_sigma_the_rmse_predict_the_lppl_gap_that_scipy_densities_show(tmp_path):
    """Residuals drawn at two sizes, scored by scipy's normal density at sigma: the gap between
    the two mean log densities is the one the table predicts from the two rmse alone. A row whose
    scale is not the published model's fixed sigma, or a model without one, gets none."""
    sigma, dims, images = 0.03, 35, 3  # 7x5 pixels
    rng = np.random.default_rng(0)

    def scored(errors: np.ndarray) -> tuple[float, float]:
        return float(stats.norm.logpdf(errors, 0.0, sigma).sum(1).mean()), float(np.sqrt(np.mean(errors**2)))

    theirs = scored(rng.normal(0.0, 0.02, (images, dims)))
    errors = rng.normal(0.0, 0.05, (images, dims))
    ours = [scored(errors * (-1) ** s) for s in range(3)]  # three seeds with the same rmse
    text = PUBLISHED.replace(
        'decoder = "fixed"\ncorrespondence = "the same model"\nlppl = [-730.0, 0.1]\nrmse = [0.15, 0.002]',
        f'decoder = "fixed"\ncorrespondence = "the same model"\nfixed_sigma = {sigma}\n'
        f"lppl = [{theirs[0]!r}, 0.1]\nrmse = [{theirs[1]!r}, 0.002]",
    )
    path = tmp_path / "pub.toml"
    path.write_text(text)
    scale = {"sigma_min": sigma, "sigma_median": sigma, "dims": dims}
    rows = [
        {"decoder": "fixed", "label": "fixed", "seed": s, "lppl": ll, "rmse": r, "learning_rate": 1e-3, **scale}
        for s, (ll, r) in enumerate(ours)
    ]
    rows += [
        {
            "decoder": "learned",
            "label": "learned",
            "seed": s,
            "lppl": 2100.0 + s,
            "rmse": 0.2,
            "learning_rate": 1e-3,
            **scale,
        }
        for s in range(3)
    ]
    n = published_table(_frame(rows), load_published(path)).numbers.set_index("decoder")
    assert n.loc["fixed", "observed_gap"] == pytest.approx(theirs[0] - ours[0][0], rel=1e-12)
    # theirs[1] is given to all its digits here, so the predicted range is the observed gap
    assert n.loc["fixed", "rmse_predicted_gap_low"] == pytest.approx(n.loc["fixed", "observed_gap"], rel=1e-9)
    assert n.loc["fixed", "rmse_predicted_gap_high"] == pytest.approx(n.loc["fixed", "observed_gap"], rel=1e-9)
    assert n.loc["fixed", "observed_gap"] > 10  # far beyond the spreads (0.1 and 0), all of it the errors
    assert pd.isna(n.loc["learned", "rmse_predicted_gap_low"])  # the published model has no fixed sigma
    rows = [{**r, "sigma_min": 1.0, "sigma_median": 1.0} for r in rows]  # not the published model's sigma
    assert pd.isna(
        published_table(_frame(rows), load_published(path))
        .numbers.set_index("decoder")
        .loc["fixed", "rmse_predicted_gap_low"]
    )


def test_the_predicted_gap_spans_the_published_rmses_rounding(tmp_path):
    """0.094 given to two significant figures is 0.0935 to 0.0945: the range is the gap at each end."""
    sigma, dims = 0.0316227766, 784
    path = tmp_path / "pub.toml"
    path.write_text(PUBLISHED.replace("rmse = [0.15, 0.002]", f"rmse = [0.094, 4.6e-05]\nfixed_sigma = {sigma}"))
    rows = [
        {
            "decoder": "fixed",
            "label": "fixed",
            "seed": s,
            "lppl": -2095.0,
            "rmse": 0.1024,
            "learning_rate": 1e-3,
            "sigma_min": sigma,
            "sigma_median": sigma,
            "dims": dims,
        }
        for s in range(3)
    ]
    n = published_table(_frame(rows), load_published(path)).numbers.set_index("decoder")
    gap = lambda theirs: dims * (0.1024**2 - theirs**2) / (2 * sigma**2)
    assert n.loc["fixed", "rmse_predicted_gap_low"] == pytest.approx(gap(0.0945), rel=1e-9)
    assert n.loc["fixed", "rmse_predicted_gap_high"] == pytest.approx(gap(0.0935), rel=1e-9)


def test_a_fixed_sigma_must_be_positive(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(PUBLISHED.replace("rmse = [0.15, 0.002]", "rmse = [0.15, 0.002]\nfixed_sigma = 0"))
    with pytest.raises(ConfigError, match="fixed_sigma = 0 is not allowed; expected a number > 0"):
        load_published(path)


def test_the_caption_says_how_the_runs_ended_and_what_early_stopping_watched(tmp_path):
    path = tmp_path / "pub.toml"
    path.write_text(PUBLISHED)
    rows = [
        {
            "decoder": "fixed",
            "label": "fixed",
            "seed": s,
            "lppl": -730.0 + s,
            "rmse": 0.15,
            "learning_rate": 5e-5,
            "sigma_min": 1.0,
            "sigma_median": 1.0,
            "dims": 784,
            "ending": e,
            "monitor": "val_lppl",
            "min_delta": 0.5,
        }
        for s, e in enumerate(["stopped", "stopped", "capped"])
    ]
    caption = published_table(_frame(rows), load_published(path)).caption
    assert "min_delta 0.5, watching val_lppl" in caption
    assert "2 stopped by early stopping, 1 capped at their epoch budget" in caption
