"""Small shared helpers: atomic writes, JSON, hashing, environment facts, paths.

Nothing here imports torch: these helpers are used by the light verbs (ingest, split, prepare).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from chirpkit.errors import MissingPathError

__all__ = [
    "atomic_path",
    "check_stop",
    "environment",
    "existing_path",
    "read_json",
    "request_stop",
    "stable_hash",
    "write_json",
    "write_text",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    A crash or exception leaves ``path`` untouched (the old content, or nothing) and removes
    the temporary file, so readers never see a half-written output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


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


_TRACKED = (
    "chirpkit",
    "torch",
    "lightning",
    "torchmetrics",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "librosa",
    "soundfile",
    "soxr",
    "av",
    "matplotlib",
    "pydantic",
    "timm",
    "optuna",
    "onnxruntime",
)


def environment(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions of Python, the platform and the libraries that shape results."""
    versions: dict[str, str | None] = {}
    for name in _TRACKED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            env["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if extra:
        env.update(extra)
    return env


_STOP = threading.Event()


def request_stop(signum: int | None = None, frame: Any = None) -> None:
    """Signal handler (SIGINT, SIGTERM) of the ``chirpkit`` command: remember the request, then
    raise :class:`KeyboardInterrupt`.

    Python can lose that exception: a signal that arrives while a finaliser or weakref callback
    runs (garbage collection between Optuna trials, say) raises it inside the callback, where it
    is printed and ignored. Long loops therefore also call :func:`check_stop` at safe points."""
    _STOP.set()
    raise KeyboardInterrupt


def check_stop() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested (see :func:`request_stop`)."""
    if _STOP.is_set():
        raise KeyboardInterrupt


def reset_stop() -> None:
    _STOP.clear()
