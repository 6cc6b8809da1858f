"""`tfp-vae report RUNS --out DIR`: every table in every format, the figures, one HTML page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from tfp_vae.errors import TfpVaeError
from tfp_vae.files import check_writable, write_atomic
from tfp_vae.report import render
from tfp_vae.report.figures import FIGURES
from tfp_vae.report.file_tables import benchmark_table, peers_table, reproduction_table, study_walltime_table
from tfp_vae.report.load import load_records
from tfp_vae.report.published import load_published, published_table
from tfp_vae.report.tables import TABLES

FORMATS = {"md": render.markdown, "tex": render.latex, "csv": render.csv}


def _writable(out: Path) -> None:
    try:
        check_writable(out)
    except OSError as exc:
        raise TfpVaeError(f"{out}: cannot write the report there ({exc.strerror})") from None


def _write(path: Path, text: str) -> Path:
    return write_atomic(path, text)


def run_summary(df) -> dict[str, str]:
    """What the records hold and where they came from, for the page's summary."""

    def values(column: str) -> str:
        counts = df[column].fillna("unknown").astype(str).value_counts().sort_index()
        return ", ".join(f"{k} ({v})" for k, v in counts.items())

    return {
        "runs": f"{len(df)} ({int((df['status'] == 'ok').sum())} ok, {int((df['status'] == 'nonfinite').sum())} "
        f"non-finite, {int((df['status'] == 'error').sum())} failed)",
        "data": values("dataset"),
        "scalings": values("scaling"),
        "decoders": str(df["label"].nunique()),
        "seeds": ", ".join(str(s) for s in sorted(df["seed"].unique())),
        "backends": values("backend"),
        "devices": values("device"),
        "CPU models": values("cpu_model"),
        "code (git commit)": values("commit"),
        "TensorFlow": values("tensorflow"),
        "JAX": values("jax"),
    }


def build_report(
    runs: str | Path,
    out: str | Path,
    warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    benchmarks: str | Path | None = None,
    reproductions: str | Path | None = None,
    published: str | Path | None = None,
) -> list[Path]:
    """Write the report of the records under `runs` into `out` (with the benchmark JSON
    files under `benchmarks` and the reproduction summaries of this study under
    `reproductions`/<machine>/<study>/, if given); returns the files written."""
    out = Path(out)
    _writable(out)
    loaded = load_records(runs, warn)
    df = loaded.frame
    failed = int((df["status"] == "error").sum())
    if failed:
        warn(f"{failed} failed run(s) are left out of the tables")
    tables = [t for t in (make(df) for make in TABLES.values()) if t.rows]  # e.g. no backends table for one backend
    if published:  # the study's published counterpart comes first, after the answer
        tables.insert(0, published_table(df[df["status"] != "error"], load_published(published)))
    repro_files = sorted(Path(reproductions).glob(f"*/{Path(runs).name}/summary.json")) if reproductions else []
    if repro_files:
        tables.append(reproduction_table(repro_files))
    machine_tables = _machine_tables(Path(benchmarks)) if benchmarks else []
    for t in tables + machine_tables:
        for note in t.notes:
            warn(f"warning: {note}")
    written = [_write(out / f"{t.name}.{ext}", fmt(t)) for t in tables + machine_tables for ext, fmt in FORMATS.items()]
    return written + _pages(df, loaded.problems, Path(runs).name, out, tables, machine_tables)


def _machine_tables(benchmarks: Path) -> list:
    """Speeds of machines, not results of the study (their own page): the benchmark, peers and
    study wall-time tables of the JSON files found under `benchmarks`."""
    sources = (
        (sorted(benchmarks.glob("*.json")), benchmark_table),
        (sorted((benchmarks / "peers").glob("*.json")), peers_table),
        (sorted((benchmarks / "study_walltime").glob("*.json")), study_walltime_table),
    )
    return [make(files) for files, make in sources if files]


def _pages(df, problems, study: str, out: Path, tables: list, machine_tables: list) -> list[Path]:
    """The figures, report.html, benchmarks.html (if there are machine tables) and README.md."""
    ok = df[df["status"] != "error"]
    figures = {
        name: (draw(ok, out / f"{name}.png"), " ".join((draw.__doc__ or "").split())) for name, draw in FIGURES.items()
    }
    written = [path for path, _ in figures.values()]
    title = f"tfp-vae report: {study} ({len(ok)} runs)"
    extra = {"benchmarks": "benchmarks.html, beside this page"} if machine_tables else {}
    page = render.html_page(title, tables, figures, problems, {**run_summary(df), **extra})
    written.append(_write(out / "report.html", page))
    if machine_tables:
        page = render.html_page(f"tfp-vae benchmarks beside {study}", machine_tables, {}, [])
        written.append(_write(out / "benchmarks.html", page))
    summary = [f"# {title}", ""] + [render.markdown(t) for t in tables + machine_tables]
    written.append(_write(out / "README.md", "\n".join(summary)))
    return written
