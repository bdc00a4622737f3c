"""Reviews in SQLite: ``reviews.db`` beside the detections, one row per verdict, written at once.

The table is an append-only log: every verdict (``accept``, ``reject``, ``relabel``, or ``clear``,
which withdraws the item's review, e.g. on undo) is a new row with the item's detection copied in
(file, span, detected label, score), the reviewer and the time. An item's review is its latest row;
history is never lost. The database runs in WAL mode with full sync and a busy timeout, so several
reviewers (browser tabs, processes, scripts) can write to one folder, and a crash loses nothing
that was acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from chirpkit.errors import DataError

__all__ = ["REVIEW_COLUMNS", "VERDICTS", "ReviewDB", "check_label"]

VERDICTS = ("accept", "reject", "relabel", "clear")
REVIEW_COLUMNS = [
    "seq",
    "item",
    "file",
    "start_s",
    "end_s",
    "detected_label",
    "score",
    "verdict",
    "label",
    "reviewer",
    "time",
]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item TEXT NOT NULL,
    file TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    detected_label TEXT NOT NULL,
    score REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'relabel', 'clear')),
    label TEXT,
    reviewer TEXT NOT NULL DEFAULT '',
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_item ON reviews (item, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta VALUES ('schema', 'chirpkit-reviews/1');
"""
_MAX_LABEL = 100


def check_label(label: Any, what: str = "label") -> str:
    """A usable class name: a non-empty string without control characters or ``;`` (≤ 100 chars)."""
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{what} must be a non-empty string, got {label!r}")
    text = label.strip()
    if len(text) > _MAX_LABEL or any(ord(ch) < 32 for ch in text) or ";" in text:
        raise DataError(
            f"{what} {text[:40]!r} is not a usable class name: at most {_MAX_LABEL} characters, "
            "no control characters, no ';'"
        )
    return text


class ReviewDB:
    """The reviews of one detections folder (``folder/reviews.db``)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DataError(
                f"no reviews in {self.path.parent}: {self.path.name} does not exist "
                "(review the detections first: chirpkit review DIR)"
            )
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # one short-lived connection per operation: safe from any thread, and SQLite's own locking
        # (WAL, busy timeout) orders writers from several threads and processes
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    def add(
        self,
        item: Mapping[str, Any],
        verdict: str,
        *,
        label: str | None = None,
        reviewer: str = "",
    ) -> dict[str, Any]:
        """Store one verdict on ``item`` (a dict with ``id, file, start_s, end_s, label, score``).

        ``relabel`` needs ``label`` (the right class, which may be new or a background class).
        Returns the stored row.

        Raises:
            DataError: an unknown verdict, a missing or unusable label, or an unusable reviewer name.
        """
        if verdict not in VERDICTS:
            raise DataError(f"verdict {verdict!r} must be one of {list(VERDICTS)}")
        if verdict == "relabel":
            label = check_label(label, "relabel's label")
            if label == item["label"]:
                verdict, label = "accept", None  # relabelled to what was detected: that is an accept
        elif label is not None and label != "":
            raise DataError(f"only relabel takes a label; {verdict} got label={label!r}")
        else:
            label = None
        if not isinstance(reviewer, str) or len(reviewer) > _MAX_LABEL or any(ord(c) < 32 for c in reviewer):
            raise DataError(
                f"reviewer {str(reviewer)[:40]!r} must be a short name without control characters"
            )
        row = {
            "item": str(item["id"]),
            "file": str(item["file"]),
            "start_s": float(item["start_s"]),
            "end_s": float(item["end_s"]),
            "detected_label": str(item["label"]),
            "score": float(item["score"]),
            "verdict": verdict,
            "label": label,
            "reviewer": reviewer.strip(),
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        with self._connect() as con:
            cur = con.execute(
                f"INSERT INTO reviews ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            row["seq"] = cur.lastrowid
        return row

    def history(self, item: str | None = None) -> pd.DataFrame:
        """Every stored verdict, oldest first (of one item when ``item`` is given)."""
        query = f"SELECT {', '.join(REVIEW_COLUMNS)} FROM reviews"
        args: tuple[Any, ...] = ()
        if item is not None:
            query += " WHERE item = ?"
            args = (item,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY seq", args).fetchall()
        return pd.DataFrame(rows, columns=REVIEW_COLUMNS)

    def current(self) -> pd.DataFrame:
        """The review of every reviewed item (its latest verdict; items whose latest is ``clear``
        are not reviewed), indexed by item id, with ``correct`` (the detected label was right) and
        ``final_label`` (the label the window really has: the detected one, the corrected one, or
        None for a plain reject)."""
        query = f"""
            SELECT {", ".join(REVIEW_COLUMNS)} FROM reviews
            WHERE seq IN (SELECT MAX(seq) FROM reviews GROUP BY item)
            ORDER BY seq
        """
        with self._connect() as con:
            rows = con.execute(query).fetchall()
        df = pd.DataFrame(rows, columns=REVIEW_COLUMNS)
        df = df[df["verdict"] != "clear"].set_index("item", drop=False)
        df.index.name = "id"
        df["correct"] = df["verdict"] == "accept"
        df["final_label"] = [
            d if v == "accept" else (lab if v == "relabel" else None)
            for v, d, lab in zip(df["verdict"], df["detected_label"], df["label"], strict=True)
        ]
        return df

    def latest(self, item: str) -> dict[str, Any] | None:
        """The current review of one item, or None."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {', '.join(REVIEW_COLUMNS)} FROM reviews WHERE item = ? ORDER BY seq DESC LIMIT 1",
                (item,),
            ).fetchone()
        if row is None or row[REVIEW_COLUMNS.index("verdict")] == "clear":
            return None
        return dict(zip(REVIEW_COLUMNS, row, strict=True))

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM reviews").fetchone()[0])
