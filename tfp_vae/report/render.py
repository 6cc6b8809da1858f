"""Writers for the report's formats: Markdown, LaTeX (booktabs), CSV and one
self-contained HTML page. Pure text functions: the same tables give the same bytes."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tfp_vae.report.tables import Table

LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def markdown(table: Table) -> str:
    def cell(i: int, j: int, text: str) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if (i, j) in table.bold and text else text

    lines = [f"**{table.name}**: {table.caption}", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join(["---"] * len(table.header)) + "|"]
    lines += ["| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    lines += [f"\nWarning: {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def latex(table: Table) -> str:
    def cell(i: int, j: int, text: str) -> str:
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if (i, j) in table.bold and text else text

    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.caption)}}}", rf"\label{{tab:{table.name}}}",
             r"\begin{tabular}{l" + "l" * (len(table.header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
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
    notes = "".join(f"<p class=\"warn\">Warning: {html.escape(n)}</p>" for n in table.notes)
    return (f"<section id=\"{table.name}\"><h2>{html.escape(table.name)}</h2><p>{html.escape(table.caption)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}</section>")


def html_page(title: str, tables: list[Table], figures: dict[str, Path], problems: list[str]) -> str:
    """One self-contained page: tables, and the figures embedded as base64 PNG."""
    figs = "".join(
        f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}\">"
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, path in figures.items())
    skipped = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #999;padding:.3em .6em;font-size:90%}th{background:#eee}.best{font-weight:bold}"
             ".warn{color:#a00}img{max-width:48em;border:1px solid #ccc}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(html_table(t) for t in tables)
            + f"<h2>Figures</h2>{figs}"
            + (f"<h2>Skipped records</h2><ul>{skipped}</ul>" if skipped else "")
            + "</body></html>\n")
