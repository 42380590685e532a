"""README and docs/: short, name both test tiers, quote figures rather than keep their own, link to files
that exist, and .ci/run runs everything."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
FAST = 'python -m pytest -m "not slow" -q -n 2 --dist loadfile'
FULL = "python -m pytest -q -n 2 --dist loadfile"
DOCS = [REPO / "README.md", REPO / "research" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_short_and_names_both_test_tiers_and_setup():
    assert len(README.splitlines()) <= 300
    assert FAST in README and FULL in README and "bash setup.sh" in README
    assert "## Screening" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash setup.sh" in ci and ci.rstrip().endswith(FULL.replace("python ", "python3 "))  # CI runs everything


def test_readme_quotes_the_model_cards_figures():
    card = (REPO / "assets" / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    quoted = re.findall(r"\b0\.\d{3}\b", README)
    assert quoted and all(figure in card for figure in quoted), [f for f in quoted if f not in card]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_that_exist(doc):
    text = doc.read_text(encoding="utf-8")
    links = [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in m]
    missing = [link for link in links if not (doc.parent / link).exists()]
    assert not missing, missing
