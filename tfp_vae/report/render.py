"""Writers for the report's formats: Markdown, LaTeX (booktabs), CSV and one
self-contained HTML page. Pure text functions: the same tables give the same bytes."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tfp_vae.report.tables import Table

LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def markdown(table: Table) -> str:
    """GitHub Markdown through tabulate; bold cells as **text**."""
    from tabulate import tabulate

    def cell(i: int, j: int, text: str) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if (i, j) in table.bold and text else text

    rows = [[cell(i, j, t) for j, t in enumerate(row)] for i, row in enumerate(table.rows)]
    body = tabulate(rows, headers=table.header, tablefmt="github", disable_numparse=True)
    lines = [f"**{table.name}**: {table.caption}", "", body]
    lines += [f"\nWarning: {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def latex(table: Table) -> str:
    """A booktabs table written out: tabulate's booktabs format escapes every cell, so it cannot bold one."""

    def cell(i: int, j: int, text: str) -> str:
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if (i, j) in table.bold and text else text

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\begin{tabular}{l" + "l" * (len(table.header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cell(i, j, t) for j, t in enumerate(row)) + r" \\" for i, row in enumerate(table.rows)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv(table: Table) -> str:
    return table.numbers.to_csv(index=False, lineterminator="\n", float_format="%.10g")


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        best = ' class="best"'
        cells = "".join(f"<td{best if (i, j) in table.bold else ''}>{html.escape(t)}</td>" for j, t in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    notes = "".join(f'<p class="warn">Warning: {html.escape(n)}</p>' for n in table.notes)
    return (
        f'<section id="{table.name}"><h2>{html.escape(table.name)}</h2><p>{html.escape(table.caption)}</p>'
        f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{notes}</section>'
    )


SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.title = "click to sort";
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
    var dir = th.dataset.dir === "asc" ? -1 : 1;
    th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    var key = function (row) {
      var text = row.cells[col] ? row.cells[col].textContent.trim() : "";
      var num = parseFloat(text.replace(/[^0-9eE+\\-.]/g, " ").trim().split(" ")[0]);
      return isNaN(num) ? text.toLowerCase() : num;
    };
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
});
"""


def answer_section(tables: list[Table]) -> str:
    """The page's opening: a decoder x data map of the fraction of seeds flagged as collapsed
    (from the collapse table, shaded by that fraction), and the best entry of every ranked
    column of the log-likelihood table. Empty when the records give neither."""
    by_name = {t.name: t for t in tables}
    parts = []
    collapse = by_name.get("collapse")
    if collapse is not None and collapse.rows:
        parts.append(f'<p id="answer-sentence">{html.escape(answer_sentence(collapse.numbers))}</p>')
        data = list(dict.fromkeys(row[1] for row in collapse.rows))
        decoders = list(dict.fromkeys(row[0] for row in collapse.rows))
        # from the table's numbers, not its display strings: row i of `numbers` is row i of `rows`
        found = {
            (row[0], row[1]): (int(n["collapsed"]), int(n["n"]))
            for row, (_, n) in zip(collapse.rows, collapse.numbers.iterrows())
        }

        def cell(decoder: str, column: str) -> str:
            if (decoder, column) not in found:
                return "<td></td>"
            k, n = found[(decoder, column)]
            # dark red behind white text from half the seeds on, light red behind black below
            style = f"background:rgba(180,0,0,{0.15 + 0.85 * k / n:.2f});color:{'#fff' if k / n >= 0.5 else '#000'}"
            return (
                f'<td class="frac" data-collapsed="{k}" data-runs="{n}" style="{style}">{k}/{n}</td>'
                if k
                else (f'<td class="frac" data-collapsed="0" data-runs="{n}">0/{n}</td>')
            )

        head = "".join(f"<th>{html.escape(d)}</th>" for d in data)
        body = "".join(f"<tr><th>{html.escape(dec)}</th>{''.join(cell(dec, d) for d in data)}</tr>" for dec in decoders)
        parts.append(
            "<h3>Seeds flagged as collapsed (darker: a larger fraction)</h3>"
            f'<table id="collapse-map"><thead><tr><th>decoder</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    loglik = by_name.get("loglik")
    if loglik is not None and loglik.bold:
        best = sorted((j, i) for i, j in loglik.bold - loglik.tied)
        items = "".join(
            f"<li><b>{html.escape(loglik.header[j])}</b>: {html.escape(loglik.rows[i][0])}, "
            f"{html.escape(loglik.rows[i][j])}</li>"
            for j, i in best
        )
        parts.append(f'<h3>Best entry of every ranked column</h3><ul id="best-entries">{items}</ul>')
    if not parts:
        return ""
    return (
        '<section id="answer"><h2>The answer</h2><p>Details and definitions: the collapse and loglik '
        "tables below.</p>" + "".join(parts) + "</section>"
    )


def answer_sentence(numbers) -> str:
    """The study's answer in words, from the collapse table's numbers: which cells have flagged runs,
    and whether the runs converged or only describe a budget."""
    flagged = numbers[numbers["collapsed"] > 0]
    runs, capped = int(numbers["n"].sum()), int(numbers.get("ended_capped", numbers["n"] * 0).sum())
    cells = (
        "; ".join(f"{r.decoder} on {r.scaling} pixels, {int(r.collapsed)} of {int(r.n)}" for r in flagged.itertuples())
        or "none"
    )
    budget = (
        f" {capped} of the {runs} runs reached their epoch budget without early stopping ending them, so their "
        "verdicts describe that budget, not the decoders."
        if capped
        else " Every run ended by early stopping or divergence, not by its epoch budget."
    )
    return (
        f"Of {len(numbers)} cells (decoder and data), {len(flagged)} have runs flagged as collapsed: {cells}." + budget
    )


def summary_list(summary: dict[str, str]) -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary.items())
    return f'<section id="summary"><h2>Runs and environments</h2><dl>{items}</dl></section>'


def html_page(
    title: str,
    tables: list[Table],
    figures: dict[str, tuple[Path, str]],
    problems: list[str],
    summary: dict[str, str] | None = None,
) -> str:
    """One self-contained page a researcher can share: the answer first (answer_section), a summary of runs and
    environments,
    sortable tables (click a header), and the figures embedded as base64 PNG with captions."""
    figs = "".join(
        f'<figure><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>"
        for name, (path, caption) in figures.items()
    )
    skipped = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    contents = "".join(f'<li><a href="#{t.name}">{html.escape(t.name)}</a></li>' for t in tables)
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:.3em .6em;font-size:90%}th{background:#eee;cursor:pointer}"
        "th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}"
        ".best{font-weight:bold}.warn{color:#a00}img{max-width:48em;border:1px solid #ccc}"
        "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}"
        "figure{margin:1em 0}figcaption{max-width:48em;font-size:90%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        + answer_section(tables)
        # a study with a published counterpart: that comparison belongs to the answer
        + "".join(html_table(t) for t in tables if t.name == "published")
        + (summary_list(summary) if summary else "")
        + f'<nav><ul>{contents}<li><a href="#figures">figures</a></li></ul></nav>'
        + "".join(html_table(t) for t in tables if t.name != "published")
        + f'<h2 id="figures">Figures</h2>{figs}'
        + (f"<h2>Skipped records</h2><ul>{skipped}</ul>" if skipped else "")
        + f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )
