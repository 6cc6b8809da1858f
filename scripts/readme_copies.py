"""Keep the copies of generated tables in README.md and docs/*.md equal to the files they copy:
`python scripts/readme_copies.py` rewrites them (tox -e report runs it after regenerating the
reports), `--check` only says which are stale and exits 1 (tests/test_readme_copies.py).

A copy sits between two comments:

    <!-- copied from results/tables/x.md: table -->
    ...
    <!-- end of copy -->

and what follows the colon says what is copied: `table` (the file's table lines), `caption and
table` (the whole file), or `table, rows with a collapsed run` (the header and the rows whose
`collapsed` cell is not 0/n)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY = re.compile(r"^<!-- copied from (?P<path>\S+): (?P<what>[^>]+?) -->$")
END = "<!-- end of copy -->"


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _collapsed_rows(text: str) -> list[str]:
    header, rule, *rows = _table(text)
    cells = [c.strip() for c in header.strip("|").split("|")]
    col = cells.index("collapsed")
    return [header, rule, *(r for r in rows if not r.strip("|").split("|")[col].strip().startswith("0/"))]


SELECTIONS = {
    "table": _table,
    "caption and table": lambda text: text.rstrip("\n").splitlines(),
    "table, rows with a collapsed run": _collapsed_rows,
}


def refreshed(readme: str, root: Path) -> tuple[str, list[str]]:
    """(the README with every copy refreshed, the paths whose copy changed)."""
    lines, out, stale = readme.splitlines(), [], []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        match = COPY.match(lines[i])
        i += 1
        if not match:
            continue
        path, what = match["path"], match["what"]
        if what not in SELECTIONS:
            raise SystemExit(f"README: copy of {path}: '{what}' is not one of {', '.join(SELECTIONS)}")
        end = next((j for j in range(i, len(lines)) if lines[j] == END), None)
        if end is None:
            raise SystemExit(f"README: the copy of {path} has no '{END}' line")
        fresh = SELECTIONS[what]((root / path).read_text())
        if lines[i:end] != fresh:
            stale.append(path)
        out.extend(fresh)
        i = end
    return "\n".join(out) + "\n", stale


def documents(root: Path = ROOT) -> list[Path]:
    """The files that hold copies: the README and the pages under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str]) -> int:
    failed = 0
    for doc in documents():
        text, stale = refreshed(doc.read_text(), ROOT)
        name = doc.relative_to(ROOT)
        if "--check" in argv:
            for path in stale:
                print(f"{name}: the copy of {path} is stale (python scripts/readme_copies.py refreshes it)")
            failed |= bool(stale)
            continue
        doc.write_text(text)
        print(f"{name}: {len(stale)} cop{'y' if len(stale) == 1 else 'ies'} refreshed")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
