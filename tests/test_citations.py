"""Every lesson a text cites exists: "lesson 09", "lessons 03–05", "Lessons 01, 02 and 04" in the notebooks'
markdown, the README, docs/ and the package's docstrings each name a notebook notebooks/NN_*.ipynb."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# "lesson 9", "lessons 03–05", "Lessons 01, 02 and 04", "lessons 06 to 08"
CITATION = re.compile(r"\b[Ll]essons?\s+(\d{1,2}(?:\s*(?:,|and|&|–|-|to)\s*\d{1,2}\b)*)")


def lessons() -> set[int]:
    return {int(p.name[:2]) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}


def cited(text: str) -> list[tuple[str, list[int]]]:
    """(the citation as written, the lesson numbers it names: a range counts every lesson in it)."""
    out = []
    for m in CITATION.finditer(text):
        nums, spec = [], m.group(1)
        for a, sep, b in re.findall(r"(\d{1,2})(?:\s*(–|-|to)\s*(\d{1,2}))?", spec):
            nums += list(range(int(a), int(b) + 1)) if b else [int(a)]
        out.append((m.group(0), nums))
    return out


def texts() -> dict[str, str]:
    """Where lessons are cited: each notebook's markdown, the README, docs/*.md, and the package's Python source."""
    out = {"README.md": (ROOT / "README.md").read_text()}
    out.update({str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))})
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        out[str(nb.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    out.update({str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "rlhf_nb").rglob("*.py"))})
    return out


def test_every_cited_lesson_exists():
    have = lessons()
    assert {0, 5, 10} <= have
    bad = [f"{where}: {phrase!r}" for where, text in texts().items() for phrase, nums in cited(text)
           if not nums or any(n not in have for n in nums)]
    assert bad == [], "cited lessons with no notebook:\n" + "\n".join(bad)


@pytest.mark.parametrize("text, want", [
    ("as lesson 09 shows", [9]),
    ("Lessons 03–05 built", [3, 4, 5]),
    ("lessons 01, 02 and 04", [1, 2, 4]),
    ("lesson 6 to 8", [6, 7, 8]),
    ("see lesson 42", [42]),
    ("the lessons of 2025", []),
])
def test_the_citation_reader(text, want):
    got = [n for _, nums in cited(text) for n in nums]
    assert got == want
