"""The README stays a page a newcomer reads first, and every relative link in it and in docs/
resolves: the file exists and, for ``file#anchor``, the file has a heading of that anchor (as
GitHub spells heading anchors)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)   # no headings inside code blocks
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [m.group(1) for m in LINK.finditer(text) if not re.match(r"[a-z]+:", m.group(1))]


def test_the_anchor_rule_matches_github():
    assert anchor("Objectives (`train_defaults.objective`, or per experiment under `train.objective`)") \
        == "objectives-train_defaultsobjective-or-per-experiment-under-trainobjective"
    assert anchor("What `make run` shows") == "what-make-run-shows"


def test_the_readme_is_one_page_a_newcomer_reads_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move reference to a page under docs/"
    headings = [line for line in lines if line.startswith("## ")]
    for needed in ("## What `make run` shows", "## Layout", "## Running parts of the study",
                   "## Going to paper scale", "## Where the rest is"):
        assert needed in headings, needed
    # every page under docs/ is reachable from the README
    linked = {(ROOT / link.split("#")[0]).resolve() for link in links(ROOT / "README.md")}
    assert set(p.resolve() for p in PAGES[1:]) <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for link in links(page):
        path, _, frag = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no file {target}")
        elif frag and target.suffix == ".md" and frag not in anchors(target):
            broken.append(f"{link}: no heading #{frag} in {target.name}")
    assert not broken, broken
