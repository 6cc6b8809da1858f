"""The report's tables, as pure functions of the records' DataFrame.

Each table returns a `Table`: a numeric long-form frame (for CSV) and a display
grid of strings (for Markdown, LaTeX, HTML), rows and columns in a stable order.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from tfp_vae.decoders import DECODERS
from tfp_vae.records import SCALE_CONVERGENCE_RTOL, SENSITIVITY_C
from tfp_vae.report.stats import (
    ALPHA,
    MIN_SEEDS_FOR_INTERVAL,
    MIN_SEEDS_FOR_IQM_INTERVAL,
    equivalence,
    fisher_p,
    iqm,
    iqm_interval,
    mean_std,
    tied_with_best,
    welch_p,
    wilson,
    worse_than,
)


@dataclass
class Table:
    name: str
    caption: str
    numbers: pd.DataFrame  # long form, one row per cell
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of best entries, ties included
    tied: set[tuple[int, int]] = field(default_factory=set)  # those of `bold` tied with the best, not it
    notes: list[str] = field(default_factory=list)


def _order(labels) -> list[str]:
    """Decoders in registry order, then by label."""
    rank = {name: i for i, name in enumerate(DECODERS)}
    return sorted(set(labels), key=lambda lab: (rank.get(lab.split("(")[0], len(rank)), lab))


class Column(NamedTuple):
    """One column of results: never mixes data sets, scalings, backends, precisions or devices."""

    dataset: str
    scaling: str
    backend: str
    precision: str = "float32"
    device: str = "cpu"

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        return df[
            (df["dataset"] == self.dataset)
            & (df["scaling"] == self.scaling)
            & (df["backend"] == self.backend)
            & (df["precision"] == self.precision)
            & (df["device"].str.split(":").str[0] == self.device)
        ]

    def fields(self) -> dict[str, str]:
        return {
            "dataset": self.dataset,
            "scaling": self.scaling,
            "backend": self.backend,
            "precision": self.precision,
            "device": self.device,
        }

    def title(self, df: pd.DataFrame) -> str:
        """'digits raw', with the backend, precision and device named when the records hold more than one."""
        kinds = df["device"].str.split(":").str[0]
        named = [
            v
            for v, n in (
                (self.backend, df["backend"].nunique()),
                (self.precision, df["precision"].nunique()),
                (self.device, kinds.nunique()),
            )
            if n > 1
        ]
        return f"{self.dataset} {self.scaling}" + (f" ({', '.join(named)})" if named else "")


def _columns(df: pd.DataFrame) -> list[Column]:
    kinds = df["device"].str.split(":").str[0]  # gpu:0 and gpu:1 are one kind of device
    return [Column(*c) for c in sorted(set(zip(df["dataset"], df["scaling"], df["backend"], df["precision"], kinds)))]


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _mixed(cell: pd.DataFrame) -> str | None:
    """A warning when a cell pools records from different code or library versions."""
    parts = [
        f"{len(set(cell[k]))} {k}s" for k in ("commit", "tensorflow", "cpu_model") if cell[k].nunique(dropna=False) > 1
    ]
    return ", ".join(parts) or None


def _cells(ok: pd.DataFrame):
    """(label, (dataset, scaling), records of that cell) for every non-empty cell, in table order."""
    for lab in _order(ok["label"]):
        for col in _columns(ok):
            cell = col.select(ok[ok["label"] == lab])
            if not cell.empty:
                yield lab, col, cell


def _interval(ci: tuple[float, float] | None, digits: int = 2) -> str:
    return "n/a" if ci is None else f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def likelihood_kind(decoder: str) -> str:
    """What a decoder's log-likelihood is: "probability" of the discrete grey levels, "density"
    (a proper density on [0, 1]^D) or "not normalised" (Bernoulli's cross-entropy of grey levels)."""
    cls = DECODERS.get(decoder)
    if cls is None:  # a record of a decoder this version does not register: say so, assume nothing
        return "unknown"
    return "probability" if cls.discrete else "density" if cls.proper_density else "not normalised"


#: Marks of the log-likelihood table's cells, each explained in its caption.
COLLAPSED_MARK, NOT_NORMALISED_MARK = "†", "‡"

RANKING_RULE = (
    f"Ranked only where likelihoods stand on the same footing: in dequantized columns by bits per "
    f"dimension (lower is better; densities of dequantized data and probabilities of the discrete levels "
    f"alike). Bold: the lowest mean bpd; '(tied)': not significantly worse than it (Welch t-test, "
    f"p >= {ALPHA:g})."
)
RAW_RULE = (
    "Raw columns are not ranked: densities of raw pixels are unbounded, so the highest score is the worst collapse."
)


def _loglik_cells(ok: pd.DataFrame) -> tuple[list[dict], dict, dict, list[str]]:
    """(numbers, grid of numbers by (label, column), bpd values of dequantized cells, notes)."""
    numbers, notes, grid, bpds = [], [], {}, {}
    for lab, col, cell in _cells(ok):
        values = cell["iwae_ll"].dropna().to_numpy(float)
        if not len(values):
            continue
        m, s = mean_std(values)
        ci = iqm_interval(values)
        bpd = cell["bpd"].dropna().to_numpy(float)
        row = {
            "decoder": lab,
            **col.fields(),
            "n": len(values),
            "iwae_ll_mean": m,
            "iwae_ll_std": s,
            "iwae_ll_iqm": iqm(values),
            "iwae_ll_iqm_lo": ci and ci[0],
            "iwae_ll_iqm_hi": ci and ci[1],
            "bpd_mean": mean_std(bpd)[0] if len(bpd) else None,
            "bpd_std": mean_std(bpd)[1] if len(bpd) else None,
            "iwae_k": int(cell["iwae_k"].iloc[0]),
            "collapsed": int(cell["variance_collapse"].astype(bool).sum()),
            "kind": likelihood_kind(cell["decoder"].iloc[0]),
            "rank": None,
        }
        numbers.append(row)
        grid[lab, col] = row
        if len(bpd) and col.scaling == "dequantized":
            bpds[lab, col] = bpd
        if w := _mixed(cell):
            notes.append(f"{lab} on {col.dataset}/{col.scaling} pools records from {w}")
    return numbers, grid, bpds, notes


def _rank(grid: dict, bpds: dict, labels: list[str], cols: list) -> None:
    """Mark each column's lowest mean bpd "best" and the entries tied with it "tied" (RANKING_RULE)."""
    for col in cols:
        ranked = [lab for lab in labels if (lab, col) in bpds]
        if not ranked:
            continue
        best = min(ranked, key=lambda lab: grid[lab, col]["bpd_mean"])
        grid[best, col]["rank"] = "best"
        for lab in ranked:
            if lab != best and tied_with_best(bpds[best, col], bpds[lab, col]):
                grid[lab, col]["rank"] = "tied"


def _loglik_text(r: dict) -> str:
    """One cell's display string."""
    text = f"{fmt(r['iwae_ll_mean'])} ± {fmt(r['iwae_ll_std'])} (n = {r['n']}"
    if r["iwae_ll_iqm_lo"] is not None:
        text += f"; IQM {fmt(r['iwae_ll_iqm'])} {_interval((r['iwae_ll_iqm_lo'], r['iwae_ll_iqm_hi']))}"
    text += ")"
    text += f" {COLLAPSED_MARK}{r['collapsed']}" if r["collapsed"] else ""
    text += f" {NOT_NORMALISED_MARK}" if r["kind"] == "not normalised" else ""
    if r["bpd_mean"] is not None:
        text += f"; {fmt(r['bpd_mean'], 3)} bpd"
    return text + (" (tied)" if r["rank"] == "tied" else "")


def loglik_table(df: pd.DataFrame) -> Table:
    """iwae_ll (nats) and bpd per decoder x (data set, scaling): mean ± std over n seeds and the IQM
    with a 95 % bootstrap interval (MIN_SEEDS_FOR_IQM_INTERVAL or more seeds); cells holding
    collapsed runs and likelihoods that are not normalised are marked. Ranking: see RANKING_RULE."""
    ok = df[df["status"] != "error"]
    cols, labels = _columns(ok), _order(ok["label"])
    numbers, grid, bpds, notes = _loglik_cells(ok)
    _rank(grid, bpds, labels, cols)
    header = ["decoder"] + [col.title(ok) for col in cols]
    rows = [[lab] + [_loglik_text(grid[lab, col]) if (lab, col) in grid else "" for col in cols] for lab in labels]
    marked = {
        (i, j): grid[lab, col]["rank"]
        for i, lab in enumerate(labels)
        for j, col in enumerate(cols, 1)
        if (lab, col) in grid
    }
    bold = {cell for cell, rank in marked.items() if rank}
    tied = {cell for cell, rank in marked.items() if rank == "tied"}
    k = sorted({int(x) for x in ok["iwae_k"].dropna()})
    rule = RANKING_RULE + (" " + RAW_RULE if any(col.scaling == "raw" for col in cols) else "")
    caption = (
        f"Test log-likelihood (importance-weighted bound, K = {', '.join(map(str, k))}, nats per image): "
        f"mean ± std over the n seeds, and with {MIN_SEEDS_FOR_IQM_INTERVAL} or more seeds the IQM with its "
        "95 % percentile-bootstrap interval (with fewer, the IQM is the mean and the interval the range, so "
        f"neither is shown); bits per dimension where defined. {COLLAPSED_MARK}k: k of the n seeds were "
        "flagged as collapsed (collapse table): their number is an unbounded density, not a better fit. "
        f"{NOT_NORMALISED_MARK}: not a normalised likelihood of these pixel values (Bernoulli's "
        f"cross-entropy of grey levels), comparable with nothing else. {rule}"
    )
    return Table("loglik", caption, pd.DataFrame(numbers), header, rows, bold, tied, notes)


def _collapse_numbers(ok: pd.DataFrame) -> list[dict]:
    """One row of numbers per cell: k/n flagged, Wilson interval, onset, rule, seed means, endings, CPUs."""
    numbers = []
    for lab, col, cell in _cells(ok):
        n, k = len(cell), int(cell["variance_collapse"].astype(bool).sum())
        ci = wilson(k, n)
        reasons = Counter(str(r).split(":")[0] for r in cell["collapse_reason"].dropna())
        excess, frac = cell["excess_density_frac"].dropna(), cell["frac_below_tau"].dropna()
        onsets = cell["collapse_onset_epoch"].dropna() if "collapse_onset_epoch" in cell else pd.Series([], dtype=float)
        numbers.append(
            {
                "decoder": lab,
                **col.fields(),
                "collapsed": k,
                "n": n,
                "wilson_lo": ci and ci[0],
                "wilson_hi": ci and ci[1],
                "onset_seeds": len(onsets),
                "onset_epoch_median": float(onsets.median()) if len(onsets) else None,
                "top_reason": reasons.most_common(1)[0][0] if reasons else "",
                "excess_density_frac_mean": float(excess.mean()) if len(excess) else None,
                "frac_below_tau_mean": float(frac.mean()) if len(frac) else None,
                "active_units_mean": float(cell["active_units"].mean()),
                **{f"ended_{e}": int((cell["ending"] == e).sum()) for e in ENDINGS},
                "cpu_generations": "; ".join(sorted(set(cell["cpu_generation"]))),
            }
        )
    return numbers


def _collapse_row(r: dict, ok: pd.DataFrame) -> list[str]:
    """The display strings of one row of _collapse_numbers (`ok`: the records, for the column's title)."""
    onset = f"{r['onset_seeds']}/{r['n']}" + (f", epoch {r['onset_epoch_median']:g}" if r["onset_seeds"] else "")
    rule = r["top_reason"] or "-"
    if rule == "excess_density" and r["scaling"] == "dequantized":
        rule = "excess_density (local concentration)"  # bounded there: density <= D ln L on average
    ci = None if r["wilson_lo"] is None else (r["wilson_lo"], r["wilson_hi"])
    return [
        r["decoder"],
        Column(**{k: r[k] for k in Column._fields}).title(ok),
        f"{r['collapsed']}/{r['n']}",
        _interval(ci),
        onset,
        rule,
        fmt(r["excess_density_frac_mean"], 4),
        fmt(r["frac_below_tau_mean"], 4),
        fmt(r["active_units_mean"], 1),
        _endings(r),
        r["cpu_generations"],
    ]


COLLAPSE_HEADER = [
    "decoder",
    "data",
    "collapsed",
    "Wilson 95 %",
    "validation onset (seeds, median epoch)",
    "most common rule",
    "excess density frac (seed mean)",
    "sd below tau frac (seed mean)",
    "active units (seed mean)",
    "runs ended",
    "CPU",
]


def _collapse_caption(ok: pd.DataFrame) -> str:
    thresholds = " or ".join(f"{t:.2%}".replace(".00%", " %") for t in sorted(set(ok["collapse_threshold"].dropna())))
    cs = " or ".join(f"{c:g}" for c in sorted(set(ok["density_c"].dropna())))
    caption = (
        "Variance collapse: runs flagged over runs, with the Wilson 95 % interval (only with "
        f"{MIN_SEEDS_FOR_INTERVAL} or more runs). A run is flagged when a training loss or gradient was "
        f"non-finite (nonfinite), when more than {thresholds or 'the threshold'} of test pixels have a decoder "
        f"density above c / bin (c = {cs or 'n/a'}) at the posterior mean (excess_density), or when the "
        "training bound on dequantized "
        "data exceeded D ln L at any epoch (bound_above_discrete_limit). Validation onset: the seeds whose "
        "validation excess-density fraction passed the same threshold at some epoch, and the median over them "
        "of the first such epoch (collapse_onset_epoch); a seed can pass it and come back below by the epoch "
        "the verdict is judged at, the best validation epoch. The fraction of decoder standard "
        "deviations below tau describes the fit and is not the verdict: a healthy fit of dequantized data "
        "sits at tau. On dequantized pixels the expected log density cannot exceed D ln L, so density above "
        "c / bin there is local concentration of a bounded density (named so), not an unbounded likelihood. "
        f"Runs ended: {ENDING_WORDS}; a verdict of capped runs describes their epoch budget "
        f"({_budgets(ok)}), not the decoder. CPU: the generations the cell's runs ran on (one model name "
        "covers several); cells of different generations are not bit-for-bit comparable."
    )
    return caption


def collapse_table(df: pd.DataFrame) -> Table:
    """Variance-collapse frequency k/n with its Wilson 95 % interval, the most common rule that
    fired, and the means of excess_density_frac, frac_below_tau and active units."""
    ok = df[df["status"] != "error"]
    numbers = _collapse_numbers(ok)
    rows = [_collapse_row(r, ok) for r in numbers]
    return Table("collapse", _collapse_caption(ok), pd.DataFrame(numbers), COLLAPSE_HEADER, rows)


#: How a run ends (report.load.ending), in the order tables list them.
ENDINGS = ("stopped", "capped", "diverged")
ENDING_WORDS = (
    "stopped (early stopping fired: converged by the stopping rule), capped (the epoch budget ran "
    "out first) or diverged (a non-finite loss, or a validation bound that fell below its first epoch's "
    "after the best epoch)"
)


def _endings(row: dict) -> str:
    return ", ".join(f"{row[f'ended_{e}']} {e}" for e in ENDINGS if row[f"ended_{e}"])


def _budgets(ok: pd.DataFrame) -> str:
    epochs = sorted(set(int(e) for e in ok["epochs"].dropna()))
    return " or ".join(map(str, epochs)) + " epochs" if epochs else "unknown"


#: The collapse threshold (fraction of test pixels) and limit c the sensitivity table varies.
SENSITIVITY_THRESHOLDS = (0.001, 0.005, 0.01, 0.02, 0.05)


def sensitivity_table(df: pd.DataFrame) -> Table:
    """Each cell's collapse verdict k/n as the threshold runs over SENSITIVITY_THRESHOLDS (at the
    records' c) and as c runs over SENSITIVITY_C (at the records' threshold; records made before
    they stated the fraction at other c show n/a). The rules that do not depend on either
    (nonfinite, bound_above_discrete_limit) count at every value."""
    ok = df[(df["status"] != "error") & df["excess_density_frac"].notna()]
    numbers, rows = [], []
    for lab, col, cell in _cells(ok):
        fixed = cell["collapse_reason"].fillna("").str.contains("nonfinite|bound_above_discrete_limit")
        row = {"decoder": lab, **col.fields(), "n": len(cell)}
        for t in SENSITIVITY_THRESHOLDS:
            row[f"threshold_{t:g}"] = int((fixed | (cell["excess_density_frac"] > t)).sum())
        for c in SENSITIVITY_C:
            fracs = [None if not by_c else by_c.get(f"{c:g}") for by_c in cell["excess_by_c"]]
            row[f"c_{c:g}"] = (
                None
                if any(f is None for f in fracs)
                else int(sum(bool(x) or f > t for x, f, t in zip(fixed, fracs, cell["collapse_threshold"])))
            )
        numbers.append(row)
        n = len(cell)
        rows.append(
            [
                lab,
                col.title(ok),
                *(f"{row[f'threshold_{t:g}']}/{n}" for t in SENSITIVITY_THRESHOLDS),
                *("n/a" if row[f"c_{c:g}"] is None else f"{row[f'c_{c:g}']}/{n}" for c in SENSITIVITY_C),
            ]
        )
    header = [
        "decoder",
        "data",
        *(f"threshold {t:.1%}" for t in SENSITIVITY_THRESHOLDS),
        *(f"c = {c:g}" for c in SENSITIVITY_C),
    ]
    cs = " or ".join(f"{c:g}" for c in sorted(set(ok["density_c"].dropna())))
    thresholds = " or ".join(f"{t:.2%}" for t in sorted(set(ok["collapse_threshold"].dropna())))
    caption = (
        "Sensitivity of the collapse verdict: runs flagged over runs as the fraction of test pixels that "
        f"must exceed c / bin varies (at c = {cs or 'n/a'}), and as c varies (at the threshold "
        f"{thresholds or 'n/a'}); n/a where the records predate the fractions at other c. A verdict that "
        "changes across a row hangs on the chosen value."
    )
    return Table("sensitivity", caption, pd.DataFrame(numbers), header, rows)


def _contrast_pairs(ok: pd.DataFrame):
    """(what differs, config, column title, records of one cell, records of the other) for each pair of
    cells that differ in one thing only: the learning rate (same model, same data column) or the
    scaling (same label, data set, backend, precision and device; only where a run of either is
    flagged, since the two likelihoods are of different data and 0/n against 0/n says nothing)."""
    for config in _order(ok["config"]):
        for col in _columns(ok):
            cell = col.select(ok[ok["config"] == config])
            rates = sorted(set(cell["learning_rate"].dropna()), reverse=True)
            for i, a in enumerate(rates):
                for b in rates[i + 1 :]:
                    yield (
                        f"lr {a:g} vs {b:g}",
                        config,
                        col.title(ok),
                        cell[cell["learning_rate"] == a],
                        cell[cell["learning_rate"] == b],
                    )
    columns = _columns(ok)
    for lab in _order(ok["label"]):
        runs = ok[ok["label"] == lab]
        for col in (c for c in columns if c.scaling == "raw" and c._replace(scaling="dequantized") in columns):
            raw, deq = col.select(runs), col._replace(scaling="dequantized").select(runs)
            if len(raw) and len(deq) and (raw["variance_collapse"].any() or deq["variance_collapse"].any()):
                yield "raw vs dequantized", lab, col.title(ok).replace(" raw", ""), raw, deq


def contrast_table(df: pd.DataFrame) -> Table:
    """Every pair of cells that differ in the learning rate or in the scaling only: their collapse
    counts with Fisher's exact test and, between learning rates (the same data), their mean iwae_ll
    with Welch's t-test, each worded by its p-value at ALPHA."""
    ok = df[df["status"] != "error"]
    numbers = []
    for differs, config, data, a, b in _contrast_pairs(ok):
        ka, kb = (int(c["variance_collapse"].astype(bool).sum()) for c in (a, b))
        same_data = not differs.startswith("raw")
        numbers.append(
            {
                "decoder": config,
                "data": data,
                "contrast": differs,
                "collapsed_a": ka,
                "n_a": len(a),
                "collapsed_b": kb,
                "n_b": len(b),
                "fisher_p": fisher_p(ka, len(a), kb, len(b)),
                "iwae_ll_mean_a": float(a["iwae_ll"].mean()) if same_data else None,
                "iwae_ll_mean_b": float(b["iwae_ll"].mean()) if same_data else None,
                "welch_p": welch_p(a["iwae_ll"].dropna(), b["iwae_ll"].dropna()) if same_data else None,
            }
        )

    def reading(p: float | None) -> str:
        return "n/a" if p is None else ("differ" if p < ALPHA else "no evidence of a difference")

    rows = [
        [
            r["decoder"],
            r["data"],
            r["contrast"],
            f"{r['collapsed_a']}/{r['n_a']} vs {r['collapsed_b']}/{r['n_b']}",
            f"{r['fisher_p']:.3g} ({reading(r['fisher_p'])})",
            "n/a" if r["iwae_ll_mean_a"] is None else f"{fmt(r['iwae_ll_mean_a'])} vs {fmt(r['iwae_ll_mean_b'])}",
            "n/a" if r["welch_p"] is None else f"{r['welch_p']:.3g} ({reading(r['welch_p'])})",
        ]
        for r in numbers
    ]
    header = ["decoder", "data", "contrast", "collapsed", "Fisher p", "iwae_ll (mean)", "Welch p"]
    fewest = min((min(r["n_a"], r["n_b"]) for r in numbers), default=None)
    floor = (
        f" (with {fewest} runs a cell, even {fewest}/{fewest} against 0/{fewest} gives p = "
        f"{fisher_p(fewest, fewest, 0, fewest):.2g})"
        if fewest
        else ""
    )
    caption = (
        "Contrasts: every pair of cells that differ only in the learning rate, and those that differ only in "
        "the scaling where a run of either is flagged. "
        f"Collapse counts are compared with Fisher's exact test, two-sided, read at {ALPHA:g}{floor}; mean "
        "iwae_ll with Welch's t-test, only between learning rates, since raw and dequantized likelihoods are of "
        "different data."
    )
    return Table("contrasts", caption, pd.DataFrame(numbers), header, rows)


#: The faithfulness test's default reference: the homoscedastic decoder whose one scale is learned.
#: (`fixed` at sigma 1 is posterior-collapsed wherever the data's variance is below 1, and a
#: reference with no active latent units says nothing about a decoder's mean.)
FAITHFULNESS_REFERENCE = "shared"
#: A reference run with fewer active units than this fraction of its latent dimensions is refused.
MIN_REFERENCE_ACTIVE_FRACTION = 0.5


def _latent(network: str) -> int | None:
    try:
        return int(json.loads(network)["latent"])
    except (ValueError, KeyError, TypeError):
        return None


def _refused_references(ok: pd.DataFrame, ref_runs: pd.DataFrame, reference: str) -> tuple[set, list[str]]:
    """The data columns whose reference runs have posterior-collapsed latents, and a note for each."""
    refused, notes = set(), []
    for col in _columns(ok):
        ref = col.select(ref_runs)
        latent = [_latent(n) for n in ref["network"]] if "network" in ref else []
        if any(
            k is not None and a < MIN_REFERENCE_ACTIVE_FRACTION * k for a, k in zip(ref.get("active_units", []), latent)
        ):
            refused.add(col)
            units = ", ".join(f"{a:g}" for a in ref["active_units"])
            notes.append(
                f"faithfulness: reference {reference!r} on {col.title(ok)} has {units} active units of "
                f"{latent[0]} latent dimensions (fewer than {MIN_REFERENCE_ACTIVE_FRACTION:.0%} in some "
                f"seed): its posterior has collapsed, so it is no reference for a decoder's mean; no verdicts "
                f"for this column (choose another reference decoder)"
            )
    return refused, notes


def _faithfulness_numbers(ok: pd.DataFrame, ref_runs: pd.DataFrame, reference: str, refused: set) -> list[dict]:
    """Per decoder and column, the paired one-sided test of its rmse against the reference's."""
    numbers = []
    for lab, col, cell in _cells(ok[ok["config"] != reference]):
        if col in refused:
            continue
        # a decoder trained at several learning rates meets the reference trained at the same rate
        pairs = cell.merge(
            col.select(ref_runs), on=["network", "seed", "learning_rate"], suffixes=("", "_ref")
        ).sort_values("seed")
        if pairs.empty:  # no reference run in this column: nothing to say, so no row (and no table at all)
            continue
        test = worse_than(pairs["rmse"].to_numpy(float), pairs["rmse_ref"].to_numpy(float))
        numbers.append(
            {
                "decoder": lab,
                **col.fields(),
                "reference": reference,
                "pairs": len(pairs),
                "rmse_mean": float(pairs["rmse"].mean()),
                "reference_rmse_mean": float(pairs["rmse_ref"].mean()),
                "p_value": test and test[1],
                "worse": test and test[0],
            }
        )
    return numbers


def _faithfulness_row(r: dict, ok: pd.DataFrame) -> list[str]:
    tested = r["worse"] is not None
    return [
        r["decoder"],
        Column(**{k: r[k] for k in Column._fields}).title(ok),
        str(r["pairs"]),
        fmt(r["rmse_mean"], 4),
        fmt(r["reference_rmse_mean"], 4),
        f"{r['p_value']:.3g}" if tested else "n/a",
        ("worse" if r["worse"] else "not worse") if tested else "n/a (fewer than 2 pairs)",
    ]


def faithfulness_table(df: pd.DataFrame, reference: str = FAITHFULNESS_REFERENCE) -> Table:
    """Each decoder's test rmse against the `reference` decoder (a label) of the same data, scaling,
    network and seed: paired over seeds, one-sided t-test that the mean is worse, at ALPHA. A data
    column whose reference runs have fewer active units than MIN_REFERENCE_ACTIVE_FRACTION of the
    latent dimensions gets no rows, and a note that says why."""
    ok = df[(df["status"] != "error") & df["rmse"].notna()]
    ref_runs = ok[ok["config"] == reference]
    refused, notes = _refused_references(ok, ref_runs, reference)
    numbers = _faithfulness_numbers(ok, ref_runs, reference, refused)
    rows = [_faithfulness_row(r, ok) for r in numbers]
    header = [
        "decoder",
        "data",
        "paired seeds",
        "rmse",
        f"rmse of {reference}",
        "p (one-sided)",
        f"mean vs {reference}",
    ]
    caption = (
        f"Faithfulness: is the decoder mean as good as that of the reference decoder, {reference}? Test rmse "
        "of the decoder mean at the posterior mean, against the reference of the same data, scaling, network, "
        f"learning rate and seed; paired over seeds, one-sided t-test at {ALPHA:g}: 'worse' means significantly "
        "worse than "
        f"{reference}. A reference with fewer active latent units than "
        f"{MIN_REFERENCE_ACTIVE_FRACTION:.0%} of its latent dimensions is refused."
    )
    return Table("faithfulness", caption, pd.DataFrame(numbers), header, rows, notes=notes)


def convergence_table(df: pd.DataFrame) -> Table:
    """The final-epoch change of the validation bound, and for decoders with a global learned
    scale that scale against its closed-form optimum (converged k/n)."""
    ok = df[df["status"] != "error"]
    numbers, rows = [], []
    for lab, col, cell in _cells(ok):
        change = cell["val_bound_final_change"].dropna()
        scaled = cell[cell["global_scale"].notna()]
        conv = int(scaled["global_scale_converged"].astype(bool).sum()) if len(scaled) else None
        row = {
            "decoder": lab,
            **col.fields(),
            "n": len(cell),
            "val_bound_final_change_median": float(change.median()) if len(change) else None,
            "global_scale_mean": float(scaled["global_scale"].mean()) if len(scaled) else None,
            "global_scale_optimum_mean": float(scaled["global_scale_optimum"].mean()) if len(scaled) else None,
            "global_scale_converged": conv,
        }
        numbers.append(row)
        rows.append(
            [
                lab,
                col.title(ok),
                str(len(cell)),
                fmt(row["val_bound_final_change_median"], 3),
                fmt(row["global_scale_mean"], 4),
                fmt(row["global_scale_optimum_mean"], 4),
                "n/a" if conv is None else f"{conv}/{len(scaled)}",
            ]
        )
    header = [
        "decoder",
        "data",
        "seeds",
        "last-epoch change of val bound (median)",
        "global scale (seed mean)",
        "its optimum (seed mean)",
        "scale converged",
    ]
    caption = (
        "Convergence: median over seeds of the last epoch's change of the validation bound (nats); for a "
        "decoder with one learned scale for all pixels, that scale and its closed-form optimum given the "
        "mean (root mean squared error at sampled z on the training split), converged when within "
        f"{SCALE_CONVERGENCE_RTOL:.0%} of it."
    )
    return Table("convergence", caption, pd.DataFrame(numbers), header, rows)


#: Two backends agree on a cell when an equivalence test shows their mean test iwae_ll within
#: this many nats per pixel of each other (1.28 nats on 8x8 digits, 15.7 on 28x28 images): a
#: fiftieth of a nat per dimension, about 0.03 bits per dimension, is below the differences
#: between decoders the tables are read for.
BACKEND_MARGIN_NATS_PER_DIM = 0.02


def _backend_numbers(ok: pd.DataFrame, first: str, second: str) -> list[dict]:
    """Per decoder, data set and scaling run under both backends: means, equivalence test, collapse counts."""
    numbers = []
    for lab in _order(ok["label"]):
        for dataset, scaling in sorted(set(zip(ok["dataset"], ok["scaling"]))):
            a, b = (Column(dataset, scaling, be).select(ok[ok["label"] == lab]) for be in (first, second))
            if a.empty or b.empty:
                continue
            margin = BACKEND_MARGIN_NATS_PER_DIM * float(a["dims"].iloc[0])
            test = equivalence(a["iwae_ll"], b["iwae_ll"], margin)
            ka, kb = (int(c["variance_collapse"].astype(bool).sum()) for c in (a, b))
            numbers.append(
                {
                    "decoder": lab,
                    "dataset": dataset,
                    "scaling": scaling,
                    f"{first}_mean": float(a["iwae_ll"].mean()),
                    f"{second}_mean": float(b["iwae_ll"].mean()),
                    "difference": float(b["iwae_ll"].mean() - a["iwae_ll"].mean()),
                    "margin": margin,
                    "verdict": test and test[0],
                    "p_equivalence": test and test[1],
                    "p_difference": test and test[2],
                    f"{first}_collapsed": ka,
                    f"{second}_collapsed": kb,
                    f"{first}_runs": len(a),
                    f"{second}_runs": len(b),
                    "n": f"{len(a)}/{len(b)}",
                    "verdicts_identical": ka * len(b) == kb * len(a),
                }
            )
    return numbers


def _backend_row(r: dict, first: str, second: str) -> list[str]:
    na, nb = r[f"{first}_runs"], r[f"{second}_runs"]
    return [
        r["decoder"],
        f"{r['dataset']} {r['scaling']}",
        f"{na}/{nb}",
        fmt(r[f"{first}_mean"]),
        fmt(r[f"{second}_mean"]),
        f"{r['difference']:+.2f}",
        "n/a (fewer than 2 seeds)"
        if r["verdict"] is None
        else f"{r['verdict']} (p {r['p_equivalence']:.2g} / {r['p_difference']:.2g})",
        f"{r[f'{first}_collapsed']}/{na} vs {r[f'{second}_collapsed']}/{nb}",
        "yes" if r["verdicts_identical"] else "NO",
    ]


def backend_agreement_table(df: pd.DataFrame) -> Table:
    """TensorFlow against JAX for each decoder, data set and scaling, as an equivalence test: their
    random streams differ, so equal numbers are not expected, only means within a stated margin
    (stats.equivalence: agree / differ / undetermined), and the same collapse counts. float32
    runs only (bfloat16 is a precision question, not a backend one). Empty for one backend."""
    ok = df[(df["status"] != "error") & df["iwae_ll"].notna() & (df["precision"] == "float32")]
    backends = sorted(set(ok["backend"]))
    first, second = (backends + ["-", "-"])[:2]
    numbers = _backend_numbers(ok, first, second) if len(backends) == 2 else []
    rows = [_backend_row(r, first, second) for r in numbers]
    header = [
        "decoder",
        "data",
        "seeds",
        f"iwae_ll {first} (mean)",
        f"iwae_ll {second} (mean)",
        f"{second} - {first}",
        "means (p equivalent / p different)",
        "collapsed",
        "same verdicts",
    ]
    margins = {r["dataset"]: r["margin"] for r in numbers}
    margin_text = ", ".join(f"{m:.2f} nats on {d}" for d, m in sorted(margins.items())) or "n/a"
    compilers = ok["compiler"] if "compiler" in ok else pd.Series(None, index=ok.index, dtype=object)
    compiled = "; ".join(
        f"{be} compiled with {', '.join(sorted(set(compilers[ok['backend'] == be].dropna()))) or 'n/a'}"
        for be in backends
    )
    caption = (
        f"Backends: the same specs under TensorFlow and JAX (TFP's JAX substrate; {compiled}). Their random "
        "streams differ, "
        "so their means are compared with an equivalence margin of "
        f"{BACKEND_MARGIN_NATS_PER_DIM:g} nats per pixel ({margin_text}): 'agree' when two one-sided Welch "
        f"t-tests show the difference of mean test iwae_ll inside the margin (p equivalent < {ALPHA:g}); "
        f"'differ' when not, and a two-sided Welch test finds a difference (p different < {ALPHA:g}); "
        "'undetermined' when neither: the seeds are too few or too spread to tell. 'same verdicts': the "
        "same fraction of seeds flagged as collapsed."
    )
    return Table("backends", caption, pd.DataFrame(numbers), header, rows)


def _throughput_numbers(ok: pd.DataFrame) -> list[dict]:
    """Medians per (decoder, data set, device, backend, precision, machine)."""
    numbers = []
    # one row per machine too: a median over two CPU generations is a speed no machine ran at
    fields = ("label", "dataset", "device", "backend", "precision", "machine")
    ok = ok.assign(machine=ok["cpu_model"].fillna("unknown CPU") + ", " + ok["cpu_generation"])
    keys = sorted(set(zip(*(ok[f] for f in fields))), key=lambda t: (_order(ok["label"]).index(t[0]), t[1:]))
    for key in keys:
        cell = ok[np.logical_and.reduce([ok[f] == v for f, v in zip(fields, key)])]
        rates = cell["train_examples_per_s"].dropna()
        numbers.append(
            {
                **dict(zip(("decoder", *fields[1:]), key)),
                "train_examples_per_s_min": float(rates.min()) if len(rates) else None,
                "train_examples_per_s_max": float(rates.max()) if len(rates) else None,
                "runs": len(cell),
                "seeds_per_step_median": float(cell["seeds_per_step"].median()),
                **{
                    f"{k}_median": float(cell[k].median())
                    for k in ("train_examples_per_s", "eval_examples_per_s", "compile_s")
                },
                "peak_memory_mib_max": float(cell["peak_memory_mib"].max()),
            }
        )
    return numbers


def _throughput_row(r: dict) -> list[str]:
    low, high = r["train_examples_per_s_min"], r["train_examples_per_s_max"]
    return [
        r["decoder"],
        r["dataset"],
        f"{r['device']} / {r['backend']} / {r['precision']}",
        r["machine"],
        str(r["runs"]),
        f"{r['seeds_per_step_median']:g}",
        f"{r['train_examples_per_s_median']:.0f}",
        "n/a" if low is None else f"{low:.0f}-{high:.0f}",
        f"{r['eval_examples_per_s_median']:.0f}",
        f"{r['compile_s_median']:.2f}",
        f"{r['peak_memory_mib_max']:.0f}",
    ]


THROUGHPUT_HEADER = [
    "decoder",
    "data",
    "device / backend / precision",
    "machine",
    "runs",
    "seeds per step",
    "train ex/s per model",
    "train ex/s range",
    "eval ex/s",
    "compile s",
    "peak MiB",
]
THROUGHPUT_CAPTION = (
    "Throughput: medians over runs (steady-state training, compile time apart; evaluation of the test "
    "split). Training is per model: a step of a seed group trains `seeds per step` models, so it "
    "processes that many times as many examples. One row per machine (CPU model and generation); where the "
    "records predate naming the generation ('unrecorded') a row may pool generations, and its range shows it."
)


def throughput_table(df: pd.DataFrame) -> Table:
    """Medians over runs of training and evaluation throughput, compile time, and peak memory."""
    numbers = _throughput_numbers(df[df["status"] != "error"])
    rows = [_throughput_row(r) for r in numbers]
    return Table("throughput", THROUGHPUT_CAPTION, pd.DataFrame(numbers), THROUGHPUT_HEADER, rows)


TABLES: dict[str, Callable[[pd.DataFrame], Table]] = {
    "loglik": loglik_table,
    "collapse": collapse_table,
    "sensitivity": sensitivity_table,
    "contrasts": contrast_table,
    "faithfulness": faithfulness_table,
    "convergence": convergence_table,
    "backends": backend_agreement_table,
    "throughput": throughput_table,
}
