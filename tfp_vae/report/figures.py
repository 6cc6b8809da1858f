"""Matplotlib figures of a study, saved as PNG without a timestamp (byte-stable)."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tfp_vae.report.tables import _order, likelihood_kind

PNG_METADATA = {"Software": None}  # no library version or date inside the file


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def training_curves(df: pd.DataFrame, path: Path) -> Path:
    """Training bound per epoch, one panel per (data set, scaling), one line per run."""
    groups = sorted(set(zip(df["dataset"], df["scaling"])))
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    colours = {lab: plt.cm.tab20(i % 20) for i, lab in enumerate(_order(df["label"]))}
    for ax, (dataset, scaling) in zip(axes[0], groups):
        cell = df[(df["dataset"] == dataset) & (df["scaling"] == scaling)].sort_values(["label", "seed"])
        for lab, runs in cell.groupby("label", sort=True):
            for i, curve in enumerate(runs["train_bound_curve"]):
                if curve:
                    y = np.array([np.nan if v is None else v for v in curve], float)
                    ax.plot(np.arange(1, len(y) + 1), y, color=colours[lab], alpha=0.7, label=lab if i == 0 else None)
        ax.set_title(f"{dataset} ({scaling})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training bound (nats / image)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def sigma_vs_tau(df: pd.DataFrame, path: Path) -> Path:
    """Per run: the smallest, 1st-percentile and median decoder sigma against tau (log scale)."""
    scaled = df[df["sigma_min"].notna()].sort_values(["label", "dataset", "scaling", "seed"])
    labels = _order(scaled["label"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(labels), 4) + 1.5))
    for i, lab in enumerate(labels):
        runs = scaled[scaled["label"] == lab]
        for offset, key, marker in ((-0.2, "sigma_min", "v"), (0.0, "sigma_p01", "o"), (0.2, "sigma_median", "^")):
            ax.scatter(
                runs[key],
                np.full(len(runs), i + offset),
                marker=marker,
                s=14,
                label=key if i == 0 else None,
                color={"v": "C3", "o": "C1", "^": "C0"}[marker],
            )
    for tau in sorted(set(scaled["tau"].round(6))):
        ax.axvline(tau, color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("decoder sigma (dashed: tau = bin / sqrt(12))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def sigma_histograms(df: pd.DataFrame, path: Path) -> Path:
    """Histogram of every test pixel's decoder sigma, pooled over seeds, one panel per
    decoder with a scale, one line per scaling, against tau (dashed)."""
    from tfp_vae.records import SIGMA_LOG10_EDGES

    scaled = df[df["sigma_log10_hist"].notna()]
    labels = _order(scaled["label"])
    cols = 4
    rows = max(1, -(-len(labels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False, sharex=True)
    centres = 10 ** ((SIGMA_LOG10_EDGES[:-1] + SIGMA_LOG10_EDGES[1:]) / 2)
    for ax, lab in zip(axes.flat, labels):
        runs = scaled[scaled["label"] == lab]
        for i, (key, group) in enumerate(sorted(runs.groupby(["dataset", "scaling"]), key=lambda kv: kv[0])):
            counts = np.sum(np.stack([np.asarray(h, float) for h in group["sigma_log10_hist"]]), axis=0)
            ax.step(centres, counts / counts.sum(), where="mid", color=f"C{i}", label=f"{key[0]} {key[1]}")
            ax.axvline(float(group["tau"].iloc[0]), color=f"C{i}", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(lab, fontsize=9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.supxlabel("decoder sigma over all test pixels (dashed: tau = bin / sqrt(12))")
    fig.tight_layout()
    return _save(fig, path)


def loglik_vs_rmse(df: pd.DataFrame, path: Path) -> Path:
    """Test iwae_ll against rmse, one point per run, one colour per decoder, one panel per data set,
    scaling and kind of likelihood (a density, a probability of the grey levels, or Bernoulli's
    unnormalised number), so no axis holds numbers that are not comparable; crosses are runs
    flagged as collapsed."""
    ok = df[df["iwae_ll"].notna()].sort_values(["label", "dataset", "scaling", "seed"])
    kinds = ok["decoder"].map(likelihood_kind)
    data_columns, kind_list = sorted(set(zip(ok["dataset"], ok["scaling"]))), sorted(set(kinds))
    fig, axes = plt.subplots(
        len(data_columns), len(kind_list), figsize=(5 * len(kind_list), 4 * len(data_columns)), squeeze=False
    )
    colours = {lab: plt.cm.tab20(i % 20) for i, lab in enumerate(_order(ok["label"]))}
    for (r, (dataset, scaling)), (c, kind) in itertools.product(enumerate(data_columns), enumerate(kind_list)):
        ax = axes[r][c]
        panel = ok[(ok["dataset"] == dataset) & (ok["scaling"] == scaling) & (kinds == kind)]
        if panel.empty:
            ax.axis("off")
            continue
        for lab in _order(panel["label"]):
            runs = panel[panel["label"] == lab]
            flagged = runs["variance_collapse"].astype(bool)
            ax.scatter(runs["rmse"][~flagged], runs["iwae_ll"][~flagged], s=16, color=colours[lab], label=lab)
            ax.scatter(runs["rmse"][flagged], runs["iwae_ll"][flagged], s=28, marker="x", color=colours[lab])
        ax.set_title(f"{dataset} {scaling}: {kind} (x: flagged as collapsed)", fontsize=9)
        ax.set_xlabel("rmse of the decoder mean")
        ax.set_ylabel("iwae_ll (nats / image)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def _curves(runs: pd.Series) -> np.ndarray:
    """Per-epoch curves of several seeds as one (seeds, epochs) array, NaN-padded where a seed
    stopped early or a value is missing."""
    length = max((len(c) for c in runs if c), default=0)
    out = np.full((len(runs), length), np.nan)
    for i, curve in enumerate(runs):
        for e, v in enumerate(curve or []):
            out[i, e] = np.nan if v is None else v
    return out


def collapse_over_epochs(df: pd.DataFrame, path: Path) -> Path:
    """The question of the suite, one row per decoder: its training bound and its validation
    excess-density fraction against epoch, mean (line) and range (band) over seeds, for each data
    set and scaling, one colour per backend. Dashed on the bound panels of a density of dequantized
    data: D ln L, the most a model of the discrete levels can reach; dotted on excess panels: the
    collapse threshold. A likelihood that climbs without bound on raw pixels climbs here while its
    excess-density fraction leaves zero."""
    data_columns = sorted(set(zip(df["dataset"], df["scaling"])))
    labels, backends = _order(df["label"]), sorted(set(df["backend"]))
    panels = [(d, kind) for d in data_columns for kind in ("train_bound_curve", "val_excess_curve")]
    fig, axes = plt.subplots(
        len(labels), len(panels), figsize=(3.2 * len(panels), 1.9 * len(labels) + 0.6), squeeze=False, sharex=True
    )
    for (r, lab), (c, ((dataset, scaling), key)) in itertools.product(enumerate(labels), enumerate(panels)):
        ax = axes[r][c]
        cell = df[(df["label"] == lab) & (df["dataset"] == dataset) & (df["scaling"] == scaling)].sort_values("seed")
        drawn, top = False, 0.0
        for i, backend in enumerate(backends):
            values = _curves(cell[cell["backend"] == backend][key])
            if not values.size or np.isnan(values).all():
                continue
            drawn, epochs = True, np.arange(1, values.shape[1] + 1)
            ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), alpha=0.25, color=f"C{i}", lw=0)
            ax.plot(epochs, np.nanmean(values, 0), color=f"C{i}", lw=1.2, label=backend if len(backends) > 1 else None)
            top = max(top, float(np.nanmax(values)))
        if drawn and key == "val_excess_curve":  # a fraction: from 0, and the threshold always in view
            threshold = float(cell["collapse_threshold"].dropna().iloc[0])
            ax.axhline(threshold, color="C3", ls=":", lw=0.8)
            ax.set_ylim(0, 1.1 * max(2 * threshold, top))
        if not drawn:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        elif (
            key == "train_bound_curve"
            and scaling == "dequantized"
            and cell["discrete_limit_nats"].notna().any()
            and likelihood_kind(cell["decoder"].iloc[0]) == "density"
        ):  # a probability is at most 0 nats already
            ax.axhline(float(cell["discrete_limit_nats"].dropna().iloc[0]), color="k", ls="--", lw=0.8)
        if r == 0:
            what = "training bound" if key == "train_bound_curve" else "val excess density"
            ax.set_title(f"{dataset} {scaling}\n{what}", fontsize=8)
            if c == 0 and len(backends) > 1:
                ax.legend(fontsize=6)
        if c == 0:  # wrapped: a label with several parameters is taller than its row
            ax.set_ylabel("\n".join(textwrap.wrap(lab, 24, break_long_words=False)), fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


FIGURES = {
    "collapse_over_epochs": collapse_over_epochs,
    "training_curves": training_curves,
    "sigma_histograms": sigma_histograms,
    "sigma_vs_tau": sigma_vs_tau,
    "loglik_vs_rmse": loglik_vs_rmse,
}
