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
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups) + 3, 5), squeeze=False, layout="constrained")
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
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=9)  # beside the panels, covering none
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
    for (tau, scaling), style in zip(sorted(set(zip(scaled["tau"].round(6), scaled["scaling"]))), ("--", ":", "-.")):
        ax.axvline(tau, color="k", ls=style, lw=0.8, label=f"tau = {tau:.3g} ({scaling})")
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
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False, sharex=True, layout="constrained"
    )
    centres = 10 ** ((SIGMA_LOG10_EDGES[:-1] + SIGMA_LOG10_EDGES[1:]) / 2)
    for ax, lab in zip(axes.flat, labels):
        runs = scaled[scaled["label"] == lab]
        for i, (key, group) in enumerate(sorted(runs.groupby(["dataset", "scaling"]), key=lambda kv: kv[0])):
            counts = np.sum(np.stack([np.asarray(h, float) for h in group["sigma_log10_hist"]]), axis=0)
            ax.step(centres, counts / counts.sum(), where="mid", color=f"C{i}", label=f"{key[0]} {key[1]}")
            ax.axvline(float(group["tau"].iloc[0]), color=f"C{i}", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title("\n".join(textwrap.wrap(lab, 40, break_long_words=False)), fontsize=9)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.supxlabel("decoder sigma over all test pixels (dashed: tau = bin / sqrt(12))")
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
        len(data_columns),
        len(kind_list),
        figsize=(4.2 * len(kind_list) + 3.5, 4 * len(data_columns)),
        squeeze=False,
        layout="constrained",
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
        ax.set_title(f"{dataset} {scaling}\n{kind}", fontsize=10)
        ax.set_xlabel("rmse of the decoder mean")
        ax.set_ylabel("iwae_ll (nats / image)")
        ax.ticklabel_format(useOffset=False)  # the values themselves, not offsets from a shared one
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    legend = {}  # one legend beside the panels, covering no point
    for ax in axes.flat:
        legend.update(zip(ax.get_legend_handles_labels()[1], ax.get_legend_handles_labels()[0]))
    legend["flagged as collapsed"] = plt.Line2D([], [], color="grey", marker="x", ls="")
    fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize=9)
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


#: How the end of a run is marked: stopped by early stopping, capped by the epoch budget, diverged.
END_MARKERS = {"stopped": "o", "capped": ">", "diverged": "X"}
#: Excess-density fractions below this are drawn on the linear stretch of the log axis (0 included).
EXCESS_LINEAR_BELOW = 1e-4


def collapse_over_epochs(df: pd.DataFrame, path: Path) -> Path:
    """The question of the suite at a glance: for every decoder (one colour), each seed's training
    bound in nats per pixel (top; dashed on dequantized data: ln L, the most a model of the discrete
    levels reaches on average) and its validation excess-density fraction on a log axis (bottom;
    dotted: the collapse threshold), raw and dequantized side by side, one line style per backend.
    A run's last epoch is marked by how it ended (circle: stopped by early stopping, triangle:
    capped by its epoch budget, cross: diverged), in black where the run is flagged as collapsed."""
    data_columns = sorted(set(zip(df["dataset"], df["scaling"])), key=lambda d: (d[0], d[1] != "raw"))
    labels, backends = _order(df["label"]), sorted(set(df["backend"]))
    colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    styles = dict(zip(backends, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(
        2,
        len(data_columns),
        figsize=(6.2 * len(data_columns) + 3.2, 10),
        squeeze=False,
        sharex="col",
        layout="constrained",
    )
    for c, (dataset, scaling) in enumerate(data_columns):
        bound_ax, excess_ax = axes[0][c], axes[1][c]
        column = df[(df["dataset"] == dataset) & (df["scaling"] == scaling)]
        for i, lab in enumerate(labels):
            for backend in backends:
                cell = column[(column["label"] == lab) & (column["backend"] == backend)]
                for run in cell.itertuples():
                    _seed_lines(bound_ax, excess_ax, run, colours(i % colours.N), styles[backend])
        threshold = column["collapse_threshold"].dropna()
        if len(threshold):
            excess_ax.axhline(
                float(threshold.iloc[0]),
                color="k",
                ls=":",
                lw=1.0,
                label=f"collapse threshold {float(threshold.iloc[0]):.0%}",
            )
        limit = column["discrete_limit_nats"].dropna()
        if scaling == "dequantized" and len(limit):
            per_pixel = float(limit.iloc[0]) / float(column["dims"].dropna().iloc[0])
            bound_ax.axhline(per_pixel, color="k", ls="--", lw=1.0, label=f"ln L = {per_pixel:.2f} nats per pixel")
        excess_ax.set_yscale("symlog", linthresh=EXCESS_LINEAR_BELOW)
        excess_ax.set_ylim(0, 1)
        bound_ax.set_title(f"{dataset}, {scaling} pixels", fontsize=12)
        bound_ax.set_ylabel("training bound (nats per pixel)", fontsize=10)
        excess_ax.set_ylabel("validation excess-density fraction", fontsize=10)
        excess_ax.set_xlabel("epoch", fontsize=10)
        for ax in (bound_ax, excess_ax):
            ax.tick_params(labelsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=9, loc="lower right")
    handles = [plt.Line2D([], [], color=colours(i % colours.N), lw=2, label=lab) for i, lab in enumerate(labels)]
    handles += [plt.Line2D([], [], color="grey", ls=styles[b], label=b) for b in backends if len(backends) > 1]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=f"run {e}") for e, m in END_MARKERS.items()]
    handles += [plt.Line2D([], [], color="k", marker="o", ls="", label="flagged as collapsed")]
    fig.legend(handles=handles, loc="outside right center", fontsize=9)
    return _save(fig, path)


def _seed_lines(bound_ax, excess_ax, run, colour, style: str) -> None:
    """One seed's two curves, its last epoch marked by how the run ended."""
    bound = _curves(pd.Series([run.train_bound_curve]))[0] / float(run.dims or 1)
    excess = _curves(pd.Series([run.val_excess_curve]))[0]
    marker = END_MARKERS.get(run.ending or "", "o")
    edge = "k" if run.variance_collapse else colour
    for ax, values in ((bound_ax, bound), (excess_ax, excess)):
        if not values.size or np.isnan(values).all():
            continue
        epochs = np.arange(1, len(values) + 1)
        ax.plot(epochs, values, color=colour, ls=style, lw=0.9, alpha=0.85)
        last = int(np.flatnonzero(~np.isnan(values))[-1])
        ax.plot(
            epochs[last],
            values[last],
            marker=marker,
            color=edge,
            markerfacecolor=colour if not run.variance_collapse else "k",
            markersize=6,
            ls="",
        )


FIGURES = {
    "collapse_over_epochs": collapse_over_epochs,
    "training_curves": training_curves,
    "sigma_histograms": sigma_histograms,
    "sigma_vs_tau": sigma_vs_tau,
    "loglik_vs_rmse": loglik_vs_rmse,
}
