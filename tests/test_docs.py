"""The README is a front door (at most 200 lines) and every relative link in README.md and docs/*.md points to a
file that exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_the_link_check_sees_links():
    assert "docs/benchmarks.md" in relative_links(ROOT / "README.md")
    assert "../README.md" in relative_links(ROOT / "docs" / "cli.md")


@pytest.mark.parametrize("page", ["docs/cli.md", "docs/http-api.md", "docs/models.md", "docs/decisions.md",
                                  "docs/scale-out.md", "docs/benchmarks.md", "docs/architecture.md",
                                  "docs/testing.md"])
def test_the_readme_links_every_doc_page(page):
    assert page in relative_links(ROOT / "README.md")
