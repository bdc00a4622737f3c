"""MkDocs hook: make README sections, included page by page, read as the README does on GitHub.

The pages include README.md between its ``<!-- docs:NAME:start -->`` / ``<!-- docs:NAME:end -->``
markers (the include-markdown plugin runs first; hooks run after the configured plugins). Two
things then differ from GitHub's renderer, and this hook fixes both in the page's Markdown, outside
fenced code blocks, before MkDocs renders and validates it:

1. **Anchors that moved to another page.** The README links its own sections (``[Clusters](#clusters)``).
   Once sections live on separate pages such a link points into the wrong page. A ``#slug`` link
   whose heading is not on the page is rewritten to ``other-page.md#slug``, where the other page
   is the one that includes the README section holding that heading. Anything not found is left
   as it was, so MkDocs' link validation (``validation.links.anchors: warn``, ``--strict``) still
   fails on a genuinely broken link.
2. **Lists.** GitHub (CommonMark) starts a list right after a paragraph line and nests items
   indented by two spaces; Python-Markdown needs a blank line before a list and four spaces to
   nest. A blank line is put before a list that follows a paragraph line, and the indentation of
   indented lines inside a list is doubled.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify

log = logging.getLogger("mkdocs.hooks.readme_sections")

_INCLUDE = re.compile(r"\{%\s*include-markdown\s+\"([^\"]+)\"(.*?)%\}", re.S)
_ARG = re.compile(r"([\w-]+)=\"([^\"]*)\"")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_LINK = re.compile(r"\]\(#([^)\s]+)\)")
_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])\s")
_FENCE = re.compile(r"^\s*(```|~~~)")

# slug -> page src_uri (e.g. "verbs/ingest.md"), built once per build in on_files
_anchor_pages: dict[str, str] = {}


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line: True when it is Markdown text, False inside (or on) a fenced code block."""
    flags, fence = [], ""
    for line in lines:
        m = _FENCE.match(line)
        if fence:
            flags.append(False)
            if m and line.strip().startswith(fence):
                fence = ""
        elif m:
            flags.append(False)
            fence = m.group(1)
        else:
            flags.append(True)
    return flags


def _slugs(markdown: str) -> list[str]:
    lines = markdown.split("\n")
    return [
        slugify(m.group(2), "-")
        for line, text in zip(lines, _outside_fences(lines), strict=True)
        if text and (m := _HEADING.match(line))
    ]


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    """Map every heading slug of each included README section to the page that includes it."""
    _anchor_pages.clear()
    for file in files.documentation_pages():
        source = Path(file.abs_src_path).read_text(encoding="utf-8")
        for target, args in _INCLUDE.findall(source):
            path = (Path(file.abs_src_path).parent / target).resolve()
            options = dict(_ARG.findall(args))
            if path.name != "README.md" or "start" not in options or "end" not in options:
                continue
            text = path.read_text(encoding="utf-8")
            begin = text.find(options["start"])
            end = text.find(options["end"], begin + 1)
            if begin < 0 or end < 0:
                continue  # the include plugin reports the missing marker itself
            for slug in _slugs(text[begin + len(options["start"]) : end]):
                _anchor_pages.setdefault(slug, file.src_uri)
    return files


def _fix_anchors(line: str, own: set[str], page_uri: str) -> str:
    def repl(m: re.Match[str]) -> str:
        slug = m.group(1)
        other = _anchor_pages.get(slug)
        if slug in own or other is None or other == page_uri:
            return m.group(0)
        rel = posixpath.relpath(other, posixpath.dirname(page_uri) or ".")
        return f"]({rel}#{slug})"

    return _LINK.sub(repl, line)


def _fix_lists(lines: list[str], text: list[bool]) -> list[str]:
    out: list[str] = []
    in_list = prev_blank = False
    prev_text = ""
    for line, is_text in zip(lines, text, strict=True):
        if not is_text:
            in_list = False
            out.append(line)
            prev_blank, prev_text = False, ""
            continue
        blank = not line.strip()
        item = _ITEM.match(line)
        if blank:
            pass
        elif item and not item.group(1):  # a top-level item
            # after a paragraph line (CommonMark: an ordered list interrupts one only from 1)
            after_paragraph = (
                prev_text and not _HEADING.match(prev_text) and not prev_text.lstrip().startswith(("|", "<"))
            )
            if not in_list and after_paragraph and (item.group(2)[0] in "-*+" or item.group(2)[:-1] == "1"):
                out.append("")
            in_list = True
        elif in_list and line[0] == " ":
            indent = len(line) - len(line.lstrip(" "))
            line = " " * (2 * indent) + line.lstrip(" ")
        elif prev_blank:  # a paragraph after the list
            in_list = False
        out.append(line)
        prev_blank = blank
        prev_text = "" if blank else line
    return out


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    lines = markdown.split("\n")
    text = _outside_fences(lines)
    own = set(_slugs(markdown))
    lines = [
        _fix_anchors(line, own, page.file.src_uri) if t else line for line, t in zip(lines, text, strict=True)
    ]
    return "\n".join(_fix_lists(lines, text))
