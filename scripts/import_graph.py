#!/usr/bin/env python3
"""Print chirpkit's internal import graph and its cycles (module-level and function-level imports).

Usage: python scripts/import_graph.py [--dot] [SRC]   (SRC defaults to src/chirpkit)

An import inside a function still makes the importing module depend on the imported one; hiding
a circle in a function only defers it. So both kinds count; TYPE_CHECKING imports do not.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(path: Path, name: str, modules: set[str]) -> dict[str, str]:
    """``{imported module: "top" | "function"}`` for one file."""
    tree = ast.parse(path.read_text(), str(path))
    found: dict[str, str] = {}
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = depth + isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = pkg.split(".")
                    up = up[: len(up) - (child.level - 1)]
                    base = ".".join([*up, base]) if base else ".".join(up)
                # `from pkg import name`: a dependency on pkg.name when it is a module, else on pkg
                targets = [f"{base}.{a.name}" for a in child.names]
            for t in targets:
                m = resolve(t)
                if m and m != name and m.startswith("chirpkit"):
                    kind = "function" if inner else "top"
                    if found.get(m) != "top":
                        found[m] = kind
            visit(child, inner)

    visit(tree, 0)
    return found


def graph(src: Path) -> dict[str, dict[str, str]]:
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    mods = set(files)
    return {m: imports(p, m, mods) for m, p in files.items()}


def cycles(g: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def main(argv: list[str]) -> int:
    dot = "--dot" in argv
    args = [a for a in argv if not a.startswith("--")]
    src = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "src" / "chirpkit"
    g = graph(src)
    # a package's __init__ re-exporting its own submodules is not a dependency of theirs
    edges = sum(len(v) for v in g.values())
    fn = sum(1 for v in g.values() for k in v.values() if k == "function")
    if dot:
        print("digraph chirpkit {")
        for m, deps in sorted(g.items()):
            for d, kind in sorted(deps.items()):
                style = " [style=dashed]" if kind == "function" else ""
                print(f'  "{m}" -> "{d}"{style};')
        print("}")
        return 0
    cyc = cycles(g)
    print(f"{len(g)} modules, {edges} internal imports ({fn} inside functions), {len(cyc)} cycle(s)")
    for c in cyc:
        print("  cycle:", " <-> ".join(c))
    return 1 if cyc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
