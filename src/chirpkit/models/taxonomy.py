"""Dataset classes → BirdNET V2.4 species: names, synonyms, label maps, suggestions.

:func:`match_classes` finds, for each class, the BirdNET label (``Latin name_Common name``) it
names, trying in turn:

1. a label map, when given: a mapping or a CSV ``class,name`` (any two columns), or an eBird
   taxonomy CSV (``SPECIES_CODE``, ``SCI_NAME``, optionally ``PRIMARY_COM_NAME``) whose species
   codes are the classes; the mapped name is then matched like a class name;
2. the full label, the Latin name or the common name, ignoring case, ``_`` vs space and repeated
   spaces (common names also ignoring hyphens and apostrophes: ``House-Martin`` = ``House Martin``);
3. the shipped synonym table (:func:`synonyms`, ``chirpkit/data_files/bird_synonyms.csv``): Latin
   names renamed since BirdNET V2.4's list was made (``Coloeus monedula`` → ``Corvus monedula``)
   or before it (``Sylvia communis`` → ``Curruca communis``), with each row's source.

Classes that match nothing get the closest BirdNET names (``difflib`` on Latin and common names)
as suggestions, e.g. for a typo.
"""

from __future__ import annotations

import difflib
import functools
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from chirpkit.errors import DataError

__all__ = ["Match", "match_classes", "read_label_map", "synonyms"]

SYNONYMS_FILE = "bird_synonyms.csv"


@dataclass
class Match:
    """The result of :func:`match_classes`.

    Attributes:
        mapping: class → index into the BirdNET labels.
        via: class → how it matched: ``full``, ``latin``, ``common`` or ``synonym``, prefixed by
            ``label_map+`` or ``ebird_code+`` when a label map named it first.
        unmatched: class → the closest BirdNET labels (best first; may be empty).
        labels: the BirdNET labels matched against.
    """

    mapping: dict[str, int] = field(default_factory=dict)
    via: dict[str, str] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    @property
    def names(self) -> dict[str, str]:
        """class → the BirdNET label it matched."""
        return {c: self.labels[i] for c, i in self.mapping.items()}

    def describe_unmatched(self) -> str:
        """One line per unmatched class with its suggestions (for messages and logs)."""
        return "; ".join(
            f"{c!r} (closest: {', '.join(s[:3])})" if s else f"{c!r} (nothing close)"
            for c, s in self.unmatched.items()
        )


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def _loose(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", _key(name))


@functools.cache
def _synonym_table() -> pd.DataFrame:
    text = resources.files("chirpkit").joinpath("data_files", SYNONYMS_FILE).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return pd.read_csv(io.StringIO("\n".join(lines)), dtype=str, keep_default_na=False)


def synonyms() -> pd.DataFrame:
    """The shipped synonym table: ``name, birdnet_name, source`` (one documented rename a row)."""
    return _synonym_table().copy()


@functools.cache
def _synonym_index() -> dict[str, tuple[str, ...]]:
    """Latin key → every name it is a synonym of (both directions)."""
    out: dict[str, set[str]] = {}
    for a, b in zip(_synonym_table()["name"], _synonym_table()["birdnet_name"], strict=True):
        out.setdefault(_key(a), set()).add(b)
        out.setdefault(_key(b), set()).add(a)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def read_label_map(label_map: Mapping[str, str] | str | os.PathLike[str]) -> tuple[dict[str, str], str]:
    """``(class → name, kind)`` from a mapping, a ``class,name`` CSV or an eBird taxonomy CSV.

    ``kind`` is ``label_map`` or ``ebird_code``. An eBird taxonomy maps ``SPECIES_CODE`` to
    ``SCI_NAME`` (and, when present, ``PRIMARY_COM_NAME`` is tried if the Latin name fails).

    Raises:
        MissingPathError: the file does not exist.
        DataError: the CSV cannot be read or has fewer than two columns.
    """
    if isinstance(label_map, Mapping):
        return {str(k): str(v) for k, v in label_map.items()}, "label_map"
    from chirpkit.utils.io import existing_path

    path = existing_path(label_map, "label map")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read label map {path} as CSV: {exc}") from exc
    cols = {c.strip().lower(): c for c in table.columns}
    if "species_code" in cols and "sci_name" in cols:
        codes, sci = table[cols["species_code"]], table[cols["sci_name"]]
        mapping = dict(zip(codes, sci, strict=True))
        if "primary_com_name" in cols:
            common = dict(zip(codes, table[cols["primary_com_name"]], strict=True))
            mapping = {k: f"{v}_{common[k]}" for k, v in mapping.items()}  # a BirdNET-style full label
        return mapping, "ebird_code"
    if len(table.columns) < 2:
        raise DataError(
            f"label map {path} needs two columns (class, BirdNET Latin or common name) or an eBird "
            f"taxonomy (SPECIES_CODE, SCI_NAME); it has {list(table.columns)}"
        )
    return dict(zip(table.iloc[:, 0], table.iloc[:, 1], strict=True)), "label_map"


class _Index:
    """Lookups over the BirdNET labels: full, Latin, common (exact and loose)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.full: dict[str, int] = {}
        self.latin: dict[str, int] = {}
        self.common: dict[str, int] = {}
        self.loose_common: dict[str, int] = {}
        for i, lab in enumerate(labels):
            latin, _, common = lab.partition("_")
            self.full.setdefault(_key(lab), i)
            self.latin.setdefault(_key(latin), i)
            if common:
                self.common.setdefault(_key(common), i)
                self.loose_common.setdefault(_loose(common), i)

    def find(self, name: str) -> tuple[int, str] | None:
        k = _key(name)
        if k in self.full:
            return self.full[k], "full"
        latin, sep, _ = name.partition("_")
        if sep and _key(latin) in self.latin:  # "Latin_Common" with another common name
            return self.latin[_key(latin)], "latin"
        if k in self.latin:
            return self.latin[k], "latin"
        if k in self.common:
            return self.common[k], "common"
        if _loose(name) in self.loose_common:
            return self.loose_common[_loose(name)], "common"
        for key in (k, _key(latin)) if sep else (k,):
            for other in _synonym_index().get(key, ()):
                if _key(other) in self.latin:
                    return self.latin[_key(other)], "synonym"
        return None


def _suggest(name: str, labels: Sequence[str], n: int = 3) -> list[str]:
    latin = {_key(lab.partition("_")[0]): lab for lab in labels}
    common = {_key(lab.partition("_")[2]): lab for lab in labels if "_" in lab}
    key = _key(name)
    scored: dict[str, float] = {}
    for table in (latin, common):
        for cand in difflib.get_close_matches(key, list(table), n=n, cutoff=0.6):
            lab = table[cand]
            scored[lab] = max(scored.get(lab, 0.0), difflib.SequenceMatcher(None, key, cand).ratio())
    return [lab for lab, _ in sorted(scored.items(), key=lambda kv: -kv[1])][:n]


def match_classes(
    classes: Sequence[str],
    birdnet_labels: Sequence[str],
    label_map: Mapping[str, str] | str | os.PathLike[str] | Path | None = None,
) -> Match:
    """Map dataset classes to BirdNET labels (see the module docstring for the order tried).

    Args:
        classes: the dataset's class names (Latin, common, full ``Latin_Common``, or codes of a
            label map).
        birdnet_labels: BirdNET's labels, ``Latin name_Common name``
            (:func:`chirpkit.models.birdnet.birdnet_labels`).
        label_map: a mapping or CSV ``class,name``, or an eBird taxonomy CSV
            (``SPECIES_CODE, SCI_NAME``); classes it does not list are matched by their own name.

    Returns:
        :class:`Match`: ``mapping`` (class → label index), ``via`` and ``unmatched`` with
        suggestions.
    """
    index = _Index(birdnet_labels)
    mapped, kind = read_label_map(label_map) if label_map is not None else ({}, "")
    out = Match(labels=list(birdnet_labels))
    for c in classes:
        hit = None
        if c in mapped:
            name = mapped[c]
            hit = index.find(name)
            if hit is None and kind == "ebird_code" and "_" in name:  # the common name of the taxonomy
                hit = index.find(name.partition("_")[2])
            if hit is not None:
                hit = (hit[0], f"{kind}+{hit[1]}")
        if hit is None:
            hit = index.find(c)
        if hit is None:
            out.unmatched[c] = _suggest(
                mapped.get(c, c).partition("_")[0] if c in mapped else c, birdnet_labels
            )
            continue
        out.mapping[c], out.via[c] = hit
    return out
