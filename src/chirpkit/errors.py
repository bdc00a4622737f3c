"""Exceptions raised by chirpkit.

Every error a user can cause derives from :class:`ChirpkitError`, and also from the
built-in exception that matches it, so ``except ValueError`` keeps working::

    ChirpkitError
    ├── ConfigError          (ValueError)         bad or unknown configuration keys/values
    ├── DataError            (ValueError)         empty/single-class dataset, bad catalog, bad labels
    │   └── AnnotationError  (ValueError)         an annotation table that cannot be read
    ├── AudioDecodeError     (ValueError)         a file that no decoder can read (carries the path)
    ├── MissingPathError     (FileNotFoundError)  an input path that does not exist
    ├── OutputError          (OSError)            an output that cannot be written: disk full,
    │                                             permission denied, read-only, a file where a
    │                                             folder should be (carries ``.path``, ``.errno``)
    └── RunError             (RuntimeError)       a run folder or store that is incomplete/inconsistent

Messages say what went wrong, where (file, row, key), the offending value, and what to do next.
An :class:`OutputError` is never a reason to skip an input file: it stops the job, and a re-run
picks up where it stopped.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "AudioDecodeError",
    "ChirpkitError",
    "ConfigError",
    "DataError",
    "MissingPathError",
    "OutputError",
    "RunError",
]


class ChirpkitError(Exception):
    """Root of every chirpkit error."""


class ConfigError(ChirpkitError, ValueError):
    """A configuration file, key or value is invalid."""


class DataError(ChirpkitError, ValueError):
    """The data given cannot be used as it is (empty, one class, unknown labels, ...)."""


class AnnotationError(DataError):
    """An annotation table cannot be read (missing columns, unparseable values)."""


class AudioDecodeError(ChirpkitError, ValueError):
    """No decoder could read an audio file.

    Attributes:
        path: the file that failed.
        reason: a short, single-line reason (also used in skip reports).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode audio file {self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickles across processes (Dask)
        return type(self), (self.path, self.reason)


class MissingPathError(ChirpkitError, FileNotFoundError):
    """An input file or folder does not exist."""


class OutputError(ChirpkitError, OSError):
    """An output file or folder cannot be written (disk full, permission denied, read-only, ...).

    Attributes:
        path: the output that could not be written.
    """

    def __init__(self, path: str, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:  # pickles across processes (Dask)
        return type(self), (self.path, str(self.args[0]), self.errno)


class RunError(ChirpkitError, RuntimeError):
    """A run folder, checkpoint or prepared store is missing pieces or does not match."""
