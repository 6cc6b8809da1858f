"""The report's tables, as pure functions of the records' DataFrame.

Each table returns a `Table`: a numeric long-form frame (for CSV) and a display
grid of strings (for Markdown, LaTeX, HTML), rows and columns in a stable order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from tfp_vae.decoders import DECODERS
from tfp_vae.report.stats import iqm, iqm_interval, mean_std, wilson


@dataclass
class Table:
    name: str
    caption: str
    numbers: pd.DataFrame  # long form, one row per cell
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of best entries
    notes: list[str] = field(default_factory=list)


def _order(labels) -> list[str]:
    """Decoders in registry order, then by label."""
    rank = {name: i for i, name in enumerate(DECODERS)}
    return sorted(set(labels), key=lambda lab: (rank.get(lab.split("(")[0], len(rank)), lab))


def _columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(df["dataset"], df["scaling"])))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _mixed(cell: pd.DataFrame) -> str | None:
    """A warning when a cell pools records from different code or library versions."""
    parts = [f"{len(set(cell[k]))} {k}s" for k in ("commit", "tensorflow", "cpu_model") if cell[k].nunique(dropna=False) > 1]
    return ", ".join(parts) or None


def loglik_table(df: pd.DataFrame) -> Table:
    """iwae_ll (nats) and bpd per decoder x (data set, scaling): mean ± std over seeds,
    and the IQM with a 95 % stratified-bootstrap interval. Best mean per column in bold."""
    ok = df[df["status"] != "error"]
    cols, labels = _columns(ok), _order(ok["label"])
    numbers, notes = [], []
    grid = {}
    for lab in labels:
        for col in cols:
            cell = ok[(ok["label"] == lab) & (ok["dataset"] == col[0]) & (ok["scaling"] == col[1])]
            values = cell["iwae_ll"].dropna().to_numpy(float)
            if not len(values):
                continue
            m, s = mean_std(values)
            lo, hi = iqm_interval([values])
            bpd = cell["bpd"].dropna().to_numpy(float)
            row = {"decoder": lab, "dataset": col[0], "scaling": col[1], "n": len(values), "iwae_ll_mean": m,
                   "iwae_ll_std": s, "iwae_ll_iqm": iqm(values), "iwae_ll_iqm_lo": lo, "iwae_ll_iqm_hi": hi,
                   "bpd_mean": mean_std(bpd)[0] if len(bpd) else None, "bpd_std": mean_std(bpd)[1] if len(bpd) else None,
                   "iwae_k": int(cell["iwae_k"].iloc[0])}
            numbers.append(row)
            grid[lab, col] = row
            if (w := _mixed(cell)):
                notes.append(f"{lab} on {col[0]}/{col[1]} pools records from {w}")
    header = ["decoder"] + [f"{d} {s}" for d, s in cols]
    rows, bold = [], set()
    for i, lab in enumerate(labels):
        line = [lab]
        for col in cols:
            r = grid.get((lab, col))
            if r is None:
                line.append("")
                continue
            text = f"{_fmt(r['iwae_ll_mean'])} ± {_fmt(r['iwae_ll_std'])} (IQM {_fmt(r['iwae_ll_iqm'])} [{_fmt(r['iwae_ll_iqm_lo'])}, {_fmt(r['iwae_ll_iqm_hi'])}])"
            if r["bpd_mean"] is not None:
                text += f"; {_fmt(r['bpd_mean'], 3)} bpd"
            line.append(text)
        rows.append(line)
    for j, col in enumerate(cols, start=1):
        scored = [(grid[lab, col]["iwae_ll_mean"], i) for i, lab in enumerate(labels) if (lab, col) in grid]
        if scored:
            bold.add((max(scored)[1], j))
    k = sorted({int(x) for x in ok["iwae_k"].dropna()})
    caption = (f"Test log-likelihood (importance-weighted bound, K = {', '.join(map(str, k))}, nats per image): "
               "mean ± std over seeds, IQM with 95 % stratified-bootstrap interval; bits per dimension where defined. "
               "Bold: highest mean per column (on raw scaling densities are unbounded, so high is not better).")
    return Table("loglik", caption, pd.DataFrame(numbers), header, rows, bold, notes)


def collapse_table(df: pd.DataFrame) -> Table:
    """Variance-collapse frequency k/n with its Wilson 95 % interval, the most common reason,
    mean frac_below_tau and mean active units."""
    ok = df[df["status"] != "error"]
    numbers, rows = [], []
    for lab in _order(ok["label"]):
        for col in _columns(ok):
            cell = ok[(ok["label"] == lab) & (ok["dataset"] == col[0]) & (ok["scaling"] == col[1])]
            if cell.empty:
                continue
            n, k = len(cell), int(cell["variance_collapse"].astype(bool).sum())
            lo, hi = wilson(k, n)
            reasons = Counter(str(r).split(" ")[0] for r in cell["collapse_reason"].dropna())
            frac = cell["frac_below_tau"].dropna()
            row = {"decoder": lab, "dataset": col[0], "scaling": col[1], "collapsed": k, "n": n, "wilson_lo": lo,
                   "wilson_hi": hi, "top_reason": reasons.most_common(1)[0][0] if reasons else "",
                   "frac_below_tau_mean": float(frac.mean()) if len(frac) else None,
                   "active_units_mean": float(cell["active_units"].mean())}
            numbers.append(row)
            rows.append([lab, f"{col[0]} {col[1]}", f"{k}/{n}", f"[{lo:.2f}, {hi:.2f}]", row["top_reason"] or "-",
                         _fmt(row["frac_below_tau_mean"], 4), _fmt(row["active_units_mean"], 1)])
    header = ["decoder", "data", "collapsed", "Wilson 95 %", "most common reason", "frac_below_tau", "active units"]
    caption = ("Variance collapse: runs flagged (non-finite values, frac_below_tau above the threshold, or a training "
               "bound above D ln L on dequantized data) over runs, with the Wilson 95 % interval.")
    return Table("collapse", caption, pd.DataFrame(numbers), header, rows)


def throughput_table(df: pd.DataFrame) -> Table:
    """Medians over runs of training and evaluation throughput, compile time, and peak memory."""
    ok = df[df["status"] != "error"]
    numbers, rows = [], []
    keys = sorted(set(zip(ok["label"], ok["dataset"], ok["device"], ok["backend"])),
                  key=lambda t: (_order(ok["label"]).index(t[0]), t[1:]))
    for lab, dataset, device, backend in keys:
        cell = ok[(ok["label"] == lab) & (ok["dataset"] == dataset) & (ok["device"] == device) & (ok["backend"] == backend)]
        row = {"decoder": lab, "dataset": dataset, "device": device, "backend": backend, "runs": len(cell),
               **{f"{k}_median": float(cell[k].median()) for k in ("train_examples_per_s", "eval_examples_per_s", "compile_s")},
               "peak_memory_mib_max": float(cell["peak_memory_mib"].max())}
        numbers.append(row)
        rows.append([lab, dataset, f"{device} / {backend}", str(len(cell)), f"{row['train_examples_per_s_median']:.0f}",
                     f"{row['eval_examples_per_s_median']:.0f}", f"{row['compile_s_median']:.2f}",
                     f"{row['peak_memory_mib_max']:.0f}"])
    header = ["decoder", "data", "device / backend", "runs", "train ex/s", "eval ex/s", "compile s", "peak MiB"]
    caption = "Throughput: medians over runs (steady-state training, compile time apart; evaluation of the test split)."
    return Table("throughput", caption, pd.DataFrame(numbers), header, rows)


def benchmark_table(files: list) -> Table:
    """pytest-benchmark JSON files (results/benchmarks/): median time, examples/s and the
    fraction of the layer-shape matmul ceiling, per benchmark and machine."""
    import json
    from pathlib import Path

    numbers, rows = [], []
    for path in sorted(Path(f) for f in files):
        data = json.loads(path.read_text())
        info = data.get("machine_info", {}).get("tfp_vae", {})
        machine = f"{info.get('cpu_model', path.stem)} ({info.get('cpu_count', '?')} threads)"
        for b in sorted(data.get("benchmarks", []), key=lambda b: b["name"]):
            extra = b.get("extra_info", {})
            row = {"machine": machine, "benchmark": b["name"], "median_s": b["stats"]["median"],
                   "iqr_s": b["stats"]["iqr"], "examples_per_s": extra.get("examples_per_s"),
                   "ceiling_fraction": extra.get("ceiling_fraction"), "peak_mib": extra.get("peak_mib"),
                   "dequantization_overhead": extra.get("dequantization_overhead")}
            numbers.append(row)
            frac, over = row["ceiling_fraction"], row["dequantization_overhead"]
            rows.append([b["name"], f"{row['median_s'] * 1e3:.1f}", f"{row['iqr_s'] * 1e3:.1f}",
                         _fmt(row["examples_per_s"], 0), "n/a" if frac is None else f"{frac:.0%}",
                         "n/a" if over is None else f"{over:+.1%}", _fmt(row["peak_mib"], 0), machine])
    header = ["benchmark", "median ms", "IQR ms", "examples/s", "of matmul ceiling", "dequantization overhead",
              "peak MiB", "machine"]
    caption = ("Throughput benchmarks (pytest-benchmark): median and IQR per round, examples/s, and the fraction of "
               "the float32 matmul throughput at the same layer shapes measured in the same run.")
    return Table("benchmarks", caption, pd.DataFrame(numbers), header, rows)


TABLES: dict[str, Callable[[pd.DataFrame], Table]] = {
    "loglik": loglik_table,
    "collapse": collapse_table,
    "throughput": throughput_table,
}
