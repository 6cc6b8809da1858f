"""Do a study's conclusions hold on a rerun? Records in, one verdict per table cell out.

A field-by-field comparison says whether each rerun reproduced its record; a reader of a
paper wants to know whether what the tables conclude still stands. For every cell of the
log-likelihood table that holds a rerun seed (decoder x data set, scaling, backend,
precision, device), three checks, all on the seeds that were rerun:
- collapse: each rerun seed gets the collapse verdict its committed record has;
- spread: the mean test iwae_ll of the rerun seeds lies within the committed seeds' range in
  that cell, widened by the reproduction tolerance. The mean, not each rerun: on another CPU
  (or instruction set) training takes another path, so every seed rerun is a fresh draw, and
  of five fresh draws one often falls outside the range of five earlier ones while their
  mean does not unless the distribution moved;
- ranking: the cell keeps its mark (best, tied, or neither) when the reruns replace their
  committed records in the table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tfp_vae.report.load import frame_of
from tfp_vae.report.tables import Column, loglik_table

CELL = ("label", "dataset", "scaling", "backend", "precision", "device")


def _ranks(frame: pd.DataFrame) -> dict[tuple, str]:
    numbers = loglik_table(frame).numbers
    if numbers.empty:
        return {}
    return {
        (r["decoder"], r["dataset"], r["scaling"], r["backend"], r["precision"], r["device"]): r["rank"]
        if isinstance(r["rank"], str)
        else "-"
        for r in numbers.to_dict("records")
    }


def conclusions(
    committed: list[dict[str, Any]], reruns: list[dict[str, Any]], rtol: float = 0.0, atol: float = 0.0
) -> list[dict[str, Any]]:
    """One entry per cell with a rerun: the three checks of the module docstring and `holds`;
    the committed range is widened by max(rtol |end|, atol) at each end."""
    ok = lambda recs: [r for r in recs if r.get("status") != "error"]
    committed, reruns = ok(committed), ok(reruns)
    rerun_ids = {r["run_id"] for r in reruns}
    before = frame_of(committed)
    after = frame_of([r for r in committed if r["run_id"] not in rerun_ids] + reruns)
    fresh = frame_of(reruns)
    if before.empty or fresh.empty:
        return []
    for frame in (before, after, fresh):
        frame["device"] = frame["device"].str.split(":").str[0]
    ranks_before, ranks_after = _ranks(before), _ranks(after)
    slack = lambda v: max(rtol * abs(v), atol)
    out = []
    for key, cell in fresh.groupby(list(CELL), sort=True):
        label, dataset, scaling, backend, precision, device = key
        old = Column(dataset, scaling, backend, precision, device).select(before[before["label"] == label])
        old_by_run = old.set_index("run_id")
        same_collapse = all(
            bool(old_by_run.loc[r, "variance_collapse"]) == bool(v)
            for r, v in zip(cell["run_id"], cell["variance_collapse"])
            if r in old_by_run.index
        )
        lo, hi = old["iwae_ll"].min(), old["iwae_ll"].max()
        mean = cell["iwae_ll"].mean()
        inside = bool(lo - slack(lo) <= mean <= hi + slack(hi)) if old["iwae_ll"].notna().any() else None
        rank_key = (label, dataset, scaling, backend, precision, device)
        same_rank = ranks_before.get(rank_key, "-") == ranks_after.get(rank_key, "-")
        out.append(
            {
                "cell": f"{label} {dataset} {scaling} ({backend}, {precision}, {device})",
                "reruns": len(cell),
                "committed_seeds": len(old),
                "same_collapse": same_collapse,
                "inside_committed_range": inside,
                "committed_range": [lo, hi],
                "rank": ranks_before.get(rank_key, "-"),
                "same_rank": same_rank,
                "holds": same_collapse and inside is not False and same_rank,
            }
        )
    return out


def conclusion_lines(cells: list[dict[str, Any]]) -> list[str]:
    """The conclusions verdict as text: the cells that do not hold, then the count."""
    lines = []
    for c in cells:
        if not c["holds"]:
            why = [
                w
                for w, failed in (
                    ("collapse verdict changed", not c["same_collapse"]),
                    ("outside the committed range", c["inside_committed_range"] is False),
                    (f"rank {c['rank']} changed", not c["same_rank"]),
                )
                if failed
            ]
            lines.append(f"does not hold     {c['cell']}: {', '.join(why)}")
    lines.append(
        f"conclusions: {sum(c['holds'] for c in cells)} of {len(cells)} table cells hold (same collapse "
        "verdicts, the reruns' mean inside the committed range, same best and tied entries)"
    )
    return lines
