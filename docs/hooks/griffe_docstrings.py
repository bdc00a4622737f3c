"""Griffe extension for the API reference: read chirpkit's docstrings as ``help()`` shows them.

mkdocstrings reads the source statically (nothing is imported). Two docstring habits of chirpkit
then read differently from what ``help(chirpkit.ingest)`` prints:

1. ``{options}``: functions decorated with ``chirpkit._options.takes_options`` get the help of
   their options written into the docstring at import time, where a line says ``{options}``. For
   those functions (only those), the module is imported and the runtime docstring is used.
2. ``a, b: description`` in an ``Args:`` section documents several parameters at once, which the
   Google-style parser would read as one parameter named ``a, b``. Such an entry becomes one entry
   per name, each with the description.
3. Sphinx cross-reference roles (``:func:`chirpkit.split```) are not Markdown: they become plain
   inline code (``chirpkit.split``).

Nothing in ``src/`` is changed; this only shapes what the documentation site renders.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import griffe

logger = griffe.get_logger("griffe_chirpkit_docstrings")

_OPTIONS_LINE = re.compile(r"(?m)^\s*\{options\}\s*$")
_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$"
)
_MULTI = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+)\s*:\s?(.*)$")
_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`~?([^`]+)`")


def _split_multi_names(doc: str) -> str:
    lines = doc.split("\n")
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _SECTION.match(line):
            section_indent = len(m.group(1))
            out.append(line)
            i += 1
            continue
        if section_indent is not None and line.strip() and len(line) - len(line.lstrip()) <= section_indent:
            section_indent = None  # left the section
        m = _MULTI.match(line) if section_indent is not None else None
        if m is None:
            out.append(line)
            i += 1
            continue
        indent = m.group(1)
        # the entry's continuation lines are indented deeper than its first line
        j = i + 1
        while j < len(lines) and lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) > len(indent):
            j += 1
        for name in re.split(r"\s*,\s*", m.group(2)):
            out.append(f"{indent}{name}: {m.group(3)}")
            out.extend(lines[i + 1 : j])
        i = j
    return "\n".join(out)


class ChirpkitDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if obj.is_function and _OPTIONS_LINE.search(value):
            try:
                runtime = griffe.dynamic_import(obj.path)
            except ImportError as error:
                logger.warning("%s: cannot import it to expand {options}: %s", obj.path, error)
            else:
                value = inspect.getdoc(runtime) or value
        docstring.value = _ROLE.sub(r"`\1`", _split_multi_names(value))
