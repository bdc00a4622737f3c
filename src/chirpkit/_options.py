"""Options declared once: the fields of a frozen dataclass carry each option's type, default and
help; a function's keyword parameters are checked against them and documented from them, and the
command line's flags are built from them::

    @dataclass(frozen=True)
    class Options:
        seed: int = field(default=0, metadata=option("seed for background sampling", type=int))

    @takes_options(Options)  # needs `*, seed: int = 0`; writes the help where the docstring says {options}
    def run(*, seed: int = 0) -> None: ...

    add_options(parser, Options)  # --seed SEED, with the same help
    run(**options_from_args(Options, parser.parse_args()))
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["add_options", "option", "options_from_args", "takes_options"]

F = TypeVar("F", bound=Callable[..., Any])


def option(
    help: str,
    *,
    flags: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    **argparse_kwargs: Any,
) -> dict[str, Any]:
    """The metadata of an option's dataclass field: its ``help`` (where ``{name}`` names another
    option), and how the command line spells it: ``flags`` (default ``--name-with-dashes``),
    ``parse`` (the flag's text → the value, applied by :func:`options_from_args`) and
    ``add_argument`` keywords (``type``, ``nargs``, ``metavar``, ``choices``)."""
    return {"help": help, "flags": flags, "parse": parse, "argparse": argparse_kwargs}


class _Refs(dict[str, str]):
    """``{name}`` in a help text: another option, as the command line or a docstring spells it."""

    def __init__(self, cli: bool) -> None:
        self.cli = cli

    def __missing__(self, name: str) -> str:
        return "--" + name.replace("_", "-") if self.cli else f"``{name}``"


def _help(f: dataclasses.Field[Any], cli: bool) -> str:
    return str(f.metadata["help"]).format_map(_Refs(cli))


def _fields(cls: type, include: Iterable[str] | None) -> list[dataclasses.Field[Any]]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return list(fields.values()) if include is None else [fields[name] for name in include]


def takes_options(cls: type, include: Iterable[str] | None = None) -> Callable[[F], F]:
    """Check that the decorated function takes each field of ``cls`` (or those in ``include``) as
    a keyword-only parameter with the field's annotation and default (``TypeError`` if not), and
    write the fields' help into its docstring where a line says ``{options}``."""
    names = None if include is None else tuple(include)

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        for f in _fields(cls, names):
            p = params.get(f.name)
            if p is None or p.kind is not p.KEYWORD_ONLY or (p.annotation, p.default) != (f.type, f.default):
                raise TypeError(
                    f"{fn.__qualname__}() must take `*, {f.name}: {f.type} = {f.default!r}` as "
                    f"{cls.__name__} declares it"
                )

        def doc(m: re.Match[str]) -> str:
            indent = m.group(1)
            return "\n".join(
                textwrap.fill(
                    f"{f.name}: {_help(f, cli=False)}",
                    100,
                    initial_indent=indent,
                    subsequent_indent=indent + "    ",
                    break_on_hyphens=False,
                )
                for f in _fields(cls, names)
            )

        fn.__doc__ = re.sub(r"(?m)^( *)\{options\}$", doc, fn.__doc__ or "")
        return fn

    return decorate


def add_options(parser: argparse.ArgumentParser, cls: type, include: Iterable[str] | None = None) -> None:
    """One flag per field of ``cls`` (or those in ``include``): its help, its default, ``dest``
    the field's name."""
    for f in _fields(cls, include):
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        parser.add_argument(
            *flags, dest=f.name, default=f.default, help=_help(f, cli=True), **f.metadata["argparse"]
        )


def options_from_args(
    cls: type, args: argparse.Namespace, include: Iterable[str] | None = None
) -> dict[str, Any]:
    """The keyword arguments that the flags of :func:`add_options` give, each flag's text parsed."""
    values = {}
    for f in _fields(cls, include):
        value, parse = getattr(args, f.name), f.metadata["parse"]
        values[f.name] = parse(value) if parse is not None and value is not None else value
    return values
