#!/usr/bin/env python3
"""List chirpkit's longest functions, by lines of code (the docstring not counted).

Usage: python scripts/function_lengths.py [--top N] [--limit L] [SRC]   (SRC defaults to src/chirpkit)

Prints the N longest functions (default 20) as ``code-lines total-lines module:function`` and how
many public functions (name without a leading underscore, methods included) pass L code lines
(default 80). The test suite holds every public function to that limit: a verb computes in phases
(small private steps) and then writes.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import NamedTuple


class Length(NamedTuple):
    code: int
    total: int
    where: str
    public: bool


def lengths(src: Path) -> list[Length]:
    """Every function and method under ``src``, longest first."""
    rows = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            total = (node.end_lineno or node.lineno) - node.lineno + 1
            first = node.body[0]
            doc = (
                (first.end_lineno or first.lineno) - first.lineno + 1
                if isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                else 0
            )
            where = f"{path.relative_to(src).with_suffix('')}:{node.name}".replace("/", ".")
            rows.append(Length(total - doc, total, where, not node.name.startswith("_")))
    return sorted(rows, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parent.parent / "src" / "chirpkit"))
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--limit", type=int, default=80)
    args = ap.parse_args()
    rows = lengths(Path(args.src))
    for row in rows[: args.top]:
        print(f"{row.code:5d} {row.total:5d}  {row.where}{'' if row.public else '  (private)'}")
    over = [r for r in rows if r.public and r.code > args.limit]
    print(f"{len(rows)} functions; public over {args.limit} code lines: {len(over)}")


if __name__ == "__main__":
    main()
