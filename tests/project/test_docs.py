"""The README stays short, and it and the docs/ pages link only to what exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

# [text](target) and ![alt](target); the target ends at whitespace (a "title" may follow)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    kept, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and marker:
            fence = marker.group(1)
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None:
            kept.append(re.sub(r"(`+).*?\1", "", line))
    return "\n".join(kept)


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: markup and punctuation dropped, lower case, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's GitHub anchor in a Markdown file, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text()):
        if target.startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move details into docs/")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == [], page


def test_every_docs_page_is_linked_from_the_readme_or_the_index() -> None:
    index = DOCS / "README.md"
    assert index.is_file(), "docs/README.md lists the docs pages"
    linked = set()
    for page in (README, index):
        for target in links(page.read_text()):
            path_part = target.partition("#")[0]
            if path_part and not path_part.startswith(EXTERNAL):
                linked.add((page.parent / path_part).resolve())
    orphans = [p.name for p in sorted(DOCS.glob("*.md"))
               if p != index and p.resolve() not in linked]
    assert orphans == [], f"docs pages linked from neither README.md nor docs/README.md: {orphans}"


# -- the checks themselves ---------------------------------------------------------------------
def test_the_link_checks_catch_what_they_should(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Two words, punctuation!\n\n## Two words, punctuation\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n"
        "[ok](other.md) [ok](other.md#two-words-punctuation) [ok](other.md#two-words-punctuation-1)"
        " [ok](#top) [ok](https://example.com/missing.md) ![ok](other.md)\n"
        "`[not a link](nowhere.md)`\n\n```\n[not a link](nowhere.md)\n```\n\n"
        "[bad](missing.md) [bad](other.md#no-such-heading) [bad](#nope) ![bad](gone.png)\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "other.md#no-such-heading (no heading #no-such-heading in other.md)",
        "#nope (no heading #nope in page.md)",
        "gone.png (no such file)",
    ]
    assert github_anchor("The same stack on one workstation, without Docker") == (
        "the-same-stack-on-one-workstation-without-docker")
    assert github_anchor("Quantization at ViT-S/16 shapes") == "quantization-at-vit-s16-shapes"
    assert github_anchor("What a trial measures (and why the numbers can be trusted)") == (
        "what-a-trial-measures-and-why-the-numbers-can-be-trusted")
