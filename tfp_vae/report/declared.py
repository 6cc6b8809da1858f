"""Paper tables are declared, not written by hand: a TOML list of tables, each naming
its study, its kind (a table of the report registry), optional filters and row
order, and its caption. `tfp-vae paper TABLES.toml` regenerates every one of them
from the committed records."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from tfp_vae.config import read_toml
from tfp_vae.errors import ConfigError
from tfp_vae.report.build import FORMATS, _writable, _write
from tfp_vae.report.load import load_records
from tfp_vae.report.published import load_published, published_table
from tfp_vae.report.tables import TABLES, Table

KEYS = ("name", "study", "kind", "caption", "decoders", "datasets", "scalings", "reference_decoder", "published")
#: A declared-only kind: our records beside a published table (`published` = its file, relative to
#: the declarations file; tfp_vae.report.published).
PUBLISHED_KIND = "published"
KINDS = (*TABLES, PUBLISHED_KIND)


@dataclass(frozen=True)
class Declaration:
    name: str
    study: str
    kind: str
    caption: str | None = None
    decoders: tuple[str, ...] = ()  # decoder labels, in row order; empty = all
    datasets: tuple[str, ...] = ()
    scalings: tuple[str, ...] = ()
    reference_decoder: str | None = None  # faithfulness: the reference decoder (default FAITHFULNESS_REFERENCE)
    published: str | None = None  # kind "published": the published table's file


def load_declarations(path: str | Path) -> list[Declaration]:
    path = Path(path)
    data = read_toml(path, "table declarations")
    out = []
    for i, item in enumerate(data.get("table", [])):
        where = f"{path} [[table]] #{i + 1}"
        unknown = sorted(set(item) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
        for key in ("name", "study", "kind"):
            if not isinstance(item.get(key), str):
                raise ConfigError(f"{where}: {key} must be a string")
        if item["kind"] not in KINDS:
            raise ConfigError(f"{where}: kind = {item['kind']!r} is not allowed; expected one of {', '.join(KINDS)}")
        if (item["kind"] == PUBLISHED_KIND) != isinstance(item.get("published"), str):
            raise ConfigError(
                f"{where}: published = {item.get('published')!r}: a table of kind {PUBLISHED_KIND!r} "
                "names its published file, and no other kind takes one"
            )
        if "reference_decoder" in item and item["kind"] != "faithfulness":
            raise ConfigError(f"{where}: reference_decoder is a key of kind 'faithfulness' only, not {item['kind']!r}")
        out.append(Declaration(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}))
    if not out:
        raise ConfigError(f"{path}: no [[table]] declared")
    return out


def published_for(path: str | Path, study: str) -> Path | None:
    """The published table declared beside `study` in the declarations file `path`, if any (so the
    study's report page can show it without the file being named twice)."""
    path = Path(path)
    if not path.exists():
        return None
    found = [d for d in load_declarations(path) if d.kind == PUBLISHED_KIND and d.study == study]
    return path.parent / found[0].published if found else None


def reorder(table: Table, labels: tuple[str, ...]) -> Table:
    """Keep every row whose first cell (the decoder) is in `labels`, decoders in that order and
    each decoder's rows in their original order (a collapse table has one row per data column);
    bold and tied marks follow their rows."""
    picked = [i for lab in labels for i, row in enumerate(table.rows) if row[0] == lab]
    rows = [table.rows[i] for i in picked]
    bold, tied = (
        {(new, j) for new, old in enumerate(picked) for (i, j) in marks if i == old}
        for marks in (table.bold, table.tied)
    )
    numbers = table.numbers[table.numbers["decoder"].isin(labels)] if len(table.numbers) else table.numbers
    return replace(table, rows=rows, bold=bold, tied=tied, numbers=numbers.reset_index(drop=True))


def build_declared(
    path: str | Path,
    runs_root: str | Path,
    out: str | Path,
    warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> list[Path]:
    """Write every declared table. A table whose rows are refused (its notes say why) is an error;
    one with no rows yet, of a study still running, is skipped with a warning that says so."""
    out = Path(out)
    _writable(out)
    written = []
    for d in load_declarations(path):
        df = load_records(Path(runs_root) / d.study).frame
        df = df[df["status"] != "error"]
        for column, allowed in (("dataset", d.datasets), ("scaling", d.scalings)):
            if allowed:
                df = df[df[column].isin(allowed)]
        if df.empty:
            raise ConfigError(f"{path}: table {d.name!r} selects no records of study {d.study!r}")
        if d.kind == PUBLISHED_KIND:
            table = published_table(df, load_published(Path(path).parent / d.published))
        elif d.reference_decoder:
            table = TABLES[d.kind](df, reference=d.reference_decoder)
        else:
            table = TABLES[d.kind](df)
        if not table.rows and table.notes:  # e.g. a refused faithfulness reference: say why, publish nothing
            raise ConfigError(f"{path}: table {d.name!r} has no rows: {'; '.join(table.notes)}")
        if not table.rows:  # the decoders it needs have no records yet: a study in progress
            warn(
                f"{path}: table {d.name!r} skipped: no rows yet in the {len(df)} records of study {d.study!r} "
                f"(`tfp-vae status benchmarks/studies/{d.study}.toml` says what is still to run)"
            )
            continue
        if d.decoders:
            table = reorder(table, d.decoders)
        # the declared lead, then every definition the table's columns need, built from the records
        caption = f"{d.caption} {table.caption}" if d.caption else table.caption
        table = replace(table, name=d.name, caption=caption)
        for ext, fmt in FORMATS.items():
            written.append(_write(out / f"{d.name}.{ext}", fmt(table)))
    return written


__all__ = ["Declaration", "build_declared", "load_declarations"]
