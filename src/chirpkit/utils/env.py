"""Facts about the environment a run ran in: Python, platform, library versions, devices."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

__all__ = ["environment", "trim_heap"]

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


@functools.cache
def _malloc_trim() -> Any:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    except OSError:
        return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    After many small objects are built and freed, glibc keeps the freed pages: a process's memory
    then stays at its high-water mark although Python holds far less."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
