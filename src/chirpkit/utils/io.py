"""Files: atomic writes, output errors, text tables, JSON, hashing, paths.

Nothing here imports torch: these helpers are used by the light verbs (ingest, split, prepare).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chirpkit.errors import ChirpkitError, DataError, MissingPathError, OutputError

__all__ = [
    "atomic_path",
    "atomic_paths",
    "existing_path",
    "human_size",
    "is_output_failure",
    "output_dir",
    "output_error",
    "read_json",
    "read_text_table",
    "stable_hash",
    "write_csv",
    "write_json",
    "write_text",
]

log = logging.getLogger("chirpkit")

# errors of the writing side: they stop a job, and never mark an input file as bad
_OUTPUT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.EIO,
}
# some writers (pyarrow) raise OSError without an errno: recognise their messages
_OUTPUT_TEXTS = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "file too large": errno.EFBIG,
}


def _file_mode() -> int:
    mask = os.umask(0o022)  # read the umask (there is no other way), then put it back
    os.umask(mask)
    return 0o666 & ~mask


#: the mode new output files get (mkstemp's is 0600): what ``open()`` would give under the umask
FILE_MODE = _file_mode()

_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return code
    text = str(exc).lower()
    if _SHORT_WRITE.search(text):  # numpy's tofile on a full disk: a short write, no errno
        return errno.ENOSPC
    return next((v for k, v in _OUTPUT_TEXTS.items() if k in text), None)


def is_output_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to write (disk full, permission, read-only, ...)."""
    if isinstance(exc, OutputError):
        return True
    if not isinstance(exc, OSError) or isinstance(exc, ChirpkitError):
        return False
    return _errno_of(exc) in _OUTPUT_ERRNOS


def output_error(exc: BaseException, path: str | os.PathLike[str], action: str = "write") -> OutputError:
    """An :class:`OutputError` for ``exc``, naming ``path`` and what to do about it (``action``:
    "write", or "access" where it is not known whether the path was read or written)."""
    if isinstance(exc, OutputError):
        return exc
    code = _errno_of(exc)
    p = str(path)
    reason = os.strerror(code) if code else (str(exc) or type(exc).__name__)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space (or write to another disk)"
    elif code in (errno.EACCES, errno.EPERM):
        fix = "choose a folder you can write to, or fix its permissions"
    elif code == errno.EROFS:
        fix = "the file system is read-only: choose another output folder"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a folder is needed: remove it or choose another output path"
    elif code == errno.EISDIR:
        fix = "a folder stands where a file is needed: give a file name"
    else:
        fix = "check the disk and the path"
    return OutputError(
        p, f"cannot {action} {p}: {reason}; {fix}. Finished work is kept: run the same command again", code
    )


def _is_ours(exc: OSError, paths: Iterable[Path]) -> bool:
    """An OSError raised while writing the given paths (not one about some other, input file)."""
    name = getattr(exc, "filename", None)
    if name is None:
        return True
    names = {str(p) for p in paths} | {str(p.parent) for p in paths}
    return str(name) in names


def output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents); a clear :class:`OutputError` if it cannot be."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(
            str(p), f"the {what} {p} is a file, not a folder: remove it or choose another path", errno.EEXIST
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, p) from exc
    return p


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths``; when the block succeeds, rename each onto its target.

    Everything is written before anything is renamed, so a failure (a full disk half-way, an
    interrupt) leaves every target as it was: the old content, or nothing. Temporary files are
    always removed. Write failures become :class:`~chirpkit.errors.OutputError` naming the target.
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for target in targets:
            if target.is_dir():
                raise OutputError(
                    str(target), f"cannot write {target}: it is a folder; give a file name", errno.EISDIR
                )
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
            except OSError as exc:
                raise output_error(exc, target) from exc
            tmps.append(Path(tmp_name))
            try:
                os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; outputs get the usual umask mode
            finally:
                os.close(fd)
        try:
            yield tmps
            for tmp, target in zip(tmps, targets, strict=True):
                tmp.replace(target)
        except OSError as exc:
            if (
                not isinstance(exc, ChirpkitError)
                and is_output_failure(exc)
                and _is_ours(exc, tmps + targets)
            ):
                raise output_error(exc, targets[0] if len(targets) == 1 else targets[0].parent) from exc
            raise
    finally:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    A crash or exception leaves ``path`` untouched (the old content, or nothing) and removes
    the temporary file, so readers never see a half-written output. A failure to write (disk
    full, permission denied, read-only) becomes an :class:`~chirpkit.errors.OutputError` naming
    ``path``.
    """
    with atomic_paths([path]) as tmps:
        yield tmps[0]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")
    return Path(path)


def write_csv(path: str | os.PathLike[str], frame: Any, **to_csv: Any) -> Path:
    """Write a DataFrame as CSV (``to_csv`` keyword arguments pass through), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text_table(path: str | os.PathLike[str], what: str, error: type[DataError] = DataError) -> str:
    """The text of a table file, whatever spreadsheet saved it.

    Byte-order marks (UTF-8 as Excel's "CSV UTF-8", UTF-16, UTF-32) are honoured and removed;
    text that is not UTF-8 is read as Windows-1252 (Excel's "CSV" on Windows) with a warning that
    names the first undecodable line. Line ends (CRLF, CR) become ``\\n``.

    Raises:
        MissingPathError: the file does not exist.
        error: the file is a folder, cannot be read, is empty, or holds binary data.
    """
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise MissingPathError(f"{what} {p} is a broken symbolic link (to {p.readlink()})")
        raise MissingPathError(f"{what} not found: {p} (check the path; it is resolved from {Path.cwd()})")
    if p.is_dir():
        raise error(f"{what} {p} is a folder; give the table's file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise error(f"{what} {p} is empty ({len(data)} bytes): it needs a header line and one row per entry")
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data[:4096]:
        raise error(f"{what} {p} is not a text table (it holds binary data); give a CSV or text file")
    if encoding is not None:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise error(f"{what} {p} is not valid {encoding} text after its byte-order mark: {exc}") from exc
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            try:
                text = data.decode("cp1252")
                encoding = "Windows-1252"
            except UnicodeDecodeError:
                text = data.decode("latin-1")
                encoding = "Latin-1"
            log.warning(
                "%s %s is not UTF-8 (byte 0x%02x on line %d); read it as %s. Save it as UTF-8 to be sure "
                "of names with accents",
                what,
                p,
                data[exc.start],
                line,
                encoding,
            )
    text = text.lstrip("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def human_size(n: float) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, as disks are sold)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def stable_hash(obj: Any, *, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object, independent of dict key order."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def existing_path(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`MissingPathError` naming ``what``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingPathError(f"{what} not found: {p} (check the path; it is resolved from {Path.cwd()})")
    return p
