"""The README's copies of generated tables (scripts/readme_copies.py) are those tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("readme_copies", ROOT / "scripts" / "readme_copies.py")
readme_copies = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_copies)

TABLE = """**t**: a caption.

| decoder | collapsed | x |
|---|---|---|
| a | 0/3 | 1 |
| b | 2/3 | 2 |
"""


def test_every_copy_in_the_readme_and_docs_equals_the_file_it_copies():
    copies = 0
    for doc in readme_copies.documents(ROOT):
        text, stale = readme_copies.refreshed(doc.read_text(), ROOT)
        copies += text.count(readme_copies.END)
        assert stale == [], f"{doc.name}: run python scripts/readme_copies.py ({stale})"
    assert copies >= 5  # the README's collapsed rows; the paper study's two tables, the quick study's two


def test_a_stale_copy_is_found_and_replaced_by_what_its_selection_takes(tmp_path):
    (tmp_path / "t.md").write_text(TABLE)
    readme = (
        "intro\n<!-- copied from t.md: table -->\n| old |\n<!-- end of copy -->\nmiddle\n"
        "<!-- copied from t.md: table, rows with a collapsed run -->\n<!-- end of copy -->\n"
        "<!-- copied from t.md: caption and table -->\n" + TABLE + "<!-- end of copy -->\nend\n"
    )
    text, stale = readme_copies.refreshed(readme, tmp_path)
    assert stale == ["t.md", "t.md"]  # the first two; the third is already the file
    lines = text.splitlines()
    first = lines[lines.index("<!-- copied from t.md: table -->") + 1 : lines.index("middle") - 1]
    assert first == ["| decoder | collapsed | x |", "|---|---|---|", "| a | 0/3 | 1 |", "| b | 2/3 | 2 |"]
    start = lines.index("<!-- copied from t.md: table, rows with a collapsed run -->")
    assert lines[start + 1 : start + 4] == ["| decoder | collapsed | x |", "|---|---|---|", "| b | 2/3 | 2 |"]
    assert lines[start + 4] == readme_copies.END and text.endswith("end\n")
    assert readme_copies.refreshed(text, tmp_path)[1] == []


@pytest.mark.parametrize(
    "readme,needle",
    [
        ("<!-- copied from t.md: everything -->\n<!-- end of copy -->\n", "'everything' is not one of table"),
        ("<!-- copied from t.md: table -->\n| a |\n", "has no '<!-- end of copy -->' line"),
    ],
)
def test_a_malformed_copy_is_one_clear_error(tmp_path, readme, needle):
    (tmp_path / "t.md").write_text(TABLE)
    with pytest.raises(SystemExit, match=needle):
        readme_copies.refreshed(readme, tmp_path)
