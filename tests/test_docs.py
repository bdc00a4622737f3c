"""The documentation site's sources stay consistent (fast; the site itself is built by .ci/run).

The pages include README.md between ``<!-- docs:NAME:start -->`` / ``<!-- docs:NAME:end -->``
markers (mkdocs.yml, docs/). These tests check the markers, the includes, the navigation and the
API reference's list of public names, without building the site.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import chirpkit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"<!-- docs:([a-z0-9-]+):(start|end) -->")
INCLUDE = re.compile(r"\{%\s*include-markdown\s+\"([^\"]+)\"(.*?)%\}", re.S)


def _readme_markers() -> list[tuple[int, str, str, bool]]:
    """(line number, name, start|end, in a fence or table) for every marker line of README.md."""
    found = []
    fence = False
    for number, line in enumerate((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if "<!-- docs:" in line:
            m = MARKER.fullmatch(line)
            assert m, f"README.md:{number}: a docs marker must be alone on its line: {line!r}"
            found.append((number, m.group(1), m.group(2), fence or line.startswith("|")))
    return found


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_readme_markers_pair_up() -> None:
    markers = _readme_markers()
    assert markers, "README.md has no docs markers"
    open_: dict[str, int] = {}
    closed: set[str] = set()
    for number, name, kind, in_block in markers:
        assert not in_block, f"README.md:{number}: marker {name} {kind} inside a code block or table"
        if kind == "start":
            assert name not in open_ and name not in closed, f"README.md:{number}: {name} starts twice"
            assert not open_, f"README.md:{number}: {name} starts inside {next(iter(open_))}"
            open_[name] = number
        else:
            assert name in open_, f"README.md:{number}: {name} ends without a start"
            del open_[name]
            closed.add(name)
    assert not open_, f"markers without an end: {sorted(open_)}"


def test_every_readme_heading_is_inside_markers() -> None:
    """A new README section outside every docs:* range would be missing from the site."""
    inside, fence, outside = None, False, []
    for number, line in enumerate((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif m := MARKER.fullmatch(line):
            inside = m.group(1) if m.group(2) == "start" else None
        elif not fence and line.startswith("#") and number > 1 and inside is None:
            outside.append(f"README.md:{number}: {line}")
    assert not outside, f"headings outside docs markers (add markers and a page): {outside}"


def test_includes_name_existing_markers_and_every_section_is_included() -> None:
    names = {name for _, name, _, _ in _readme_markers()}
    included: set[str] = set()
    for page in _pages():
        for target, args in INCLUDE.findall(page.read_text(encoding="utf-8")):
            assert (page.parent / target).resolve() == ROOT / "README.md", f"{page}: includes {target}"
            start = re.search(r'start="<!-- docs:([a-z0-9-]+):start -->"', args)
            end = re.search(r'end="<!-- docs:([a-z0-9-]+):end -->"', args)
            assert start and end and start.group(1) == end.group(1), f"{page}: include needs start/end"
            assert start.group(1) in names, f"{page}: no marker docs:{start.group(1)} in README.md"
            included.add(start.group(1))
    assert included == names, f"README sections on no page: {sorted(names - included)}"


def test_nav_pages_exist_and_every_page_is_in_the_nav() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"nav pages that do not exist: {missing}"
    pages = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert pages == set(nav), f"pages not in the nav: {sorted(pages - set(nav))}"


def test_api_reference_lists_every_public_name() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: ([\w.]+)$", text, re.M))
    public = {name for name in chirpkit.__all__ if name != "__version__"}
    assert {path.rsplit(".", 1)[1] for path in listed} == public
    for path in listed:
        module, name = path.rsplit(".", 1)
        assert chirpkit._LAZY[name] == module, f"{path}: chirpkit.{name} lives in {chirpkit._LAZY[name]}"


def test_mkdocs_config_loads() -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_include_markdown_plugin")
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))
    assert config["site_name"] == "chirpkit"
    assert {"include-markdown", "mkdocstrings"} <= set(config["plugins"])
