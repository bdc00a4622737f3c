"""Running work units: on this machine, on a Dask cluster, or as one shard of a job array.

The pieces every batch verb shares (``detect`` and ``prepare`` use them):

* :func:`dask_client` — a ``dask.distributed`` client: to a scheduler address (``tcp://HOST:8786``),
  to a cluster object (e.g. ``dask_jobqueue.SLURMCluster``), or to a local cluster of worker
  processes started here; imported lazily (``pip install 'chirpkit[dask]'``).
* :func:`run_on_dask` / :func:`map_on_dask` — one task per work unit; each result or failure is
  handed to a callback (or yielded) as it arrives; failing tasks are retried by Dask (``retries``;
  a task whose worker dies is rescheduled by the scheduler), cancelled when the caller stops.
* :func:`worker_cached` — a per-process cache, so each worker loads a model once.
* :func:`parse_shard` / :func:`assign_shards` — ``--shard I/N`` for job arrays without a scheduler:
  a deterministic, duration-balanced split of the work units.
* :func:`interruptible` — SIGTERM stops the job like Ctrl-C (outputs so far stay complete).
* :func:`output_guard` — a failure to write outputs (disk full, permission denied) becomes an
  :class:`~chirpkit.errors.OutputError` that stops the job; it is never blamed on an input.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

from chirpkit.errors import ConfigError, OutputError, RunError

__all__ = [
    "assign_shards",
    "dask_client",
    "interruptible",
    "keep",
    "map_on_dask",
    "output_guard",
    "parse_shard",
    "run_on_dask",
    "worker_cached",
]

log = logging.getLogger("chirpkit")

T = TypeVar("T")
R = TypeVar("R")


def keep(value: T) -> T:
    """``value`` itself: submitted as a task, it makes data that a cluster can compute again when
    the worker holding it dies (scattered data cannot be)."""
    return value


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 ≤ I < N; I may be ``$SLURM_ARRAY_TASK_ID``) → ``(I, N)``.

    Raises:
        ConfigError: anything else.
    """
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        parts = str(text).split("/")
        try:
            shard = (int(parts[0]), int(parts[1])) if len(parts) == 2 else None
        except ValueError:
            shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise ConfigError(
            f"--shard {text!r} must be I/N with 0 <= I < N, e.g. --shard 3/16 "
            "(with Slurm: --shard $SLURM_ARRAY_TASK_ID/16 and --array=0-15)"
        )
    return shard


def assign_shards(weights: Sequence[float], n: int) -> list[int]:
    """The shard (0…n-1) of each item: longest first, each to the least-loaded shard (ties to the
    lowest index). Deterministic: every process of a job array computes the same split."""
    order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
    load = [0.0] * n
    shard = [0] * len(weights)
    for i in order:
        s = min(range(n), key=lambda k: (load[k], k))
        shard[i] = s
        load[s] += max(weights[i], 1e-9)
    return shard


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM (a scheduler's kill, ``kill PID``) raises KeyboardInterrupt like
    Ctrl-C, so the job stops through the same clean-up. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_OUTPUT_HINTS = {
    errno.ENOSPC: "the disk is full: free space or give another --out",
    errno.EDQUOT: "the disk quota is exhausted: free space or give another --out",
    errno.EACCES: "permission denied: give a folder you can write to",
    errno.EPERM: "permission denied: give a folder you can write to",
    errno.EROFS: "the file system is read-only: give a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


@contextlib.contextmanager
def output_guard(
    where: os.PathLike[str] | str, *, resume_hint: str = "run the same command again"
) -> Iterator[None]:
    """Turn an :class:`OSError` raised while writing outputs under ``where`` into an
    :class:`OutputError` that says what happened and that finished work is kept."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        hint = _OUTPUT_HINTS.get(exc.errno or 0, "check that the folder can be written")
        raise OutputError(
            str(exc.filename or where),
            f"cannot write the outputs in {where}: {exc.strerror or exc} "
            f"({exc.filename or where}); {hint}. Finished work is kept: {resume_hint} to go on.",
            exc.errno,
        ) from exc


# --- per-process cache (a Dask worker loads a model once) -------------------------------------

_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()
_LOADS: dict[Any, int] = {}


def worker_cached(key: Any, loader: Callable[[], Any]) -> Any:
    """``loader()`` once per process and ``key`` (thread-safe); later calls return the same object."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = loader()
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _CACHE[key]


def cache_loads(key: Any) -> int:
    """How many times this process ran the loader for ``key`` (1 once cached)."""
    return _LOADS.get(key, 0)


def worker_name() -> str | int | None:
    """The Dask worker's name inside a task (an int on a local cluster), else None."""
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None


# --- Dask ------------------------------------------------------------------------------------------


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            "--engine dask needs dask.distributed: pip install 'chirpkit[dask]' "
            "(and 'dask-jobqueue' for Slurm/PBS/SGE clusters)"
        ) from exc
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: Any = None, *, workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client``.

    Args:
        scheduler: None (start a local cluster of ``workers`` processes, one thread each, on
            127.0.0.1), a scheduler address ``tcp://HOST:8786``, a cluster object (anything with
            a ``scheduler_address``, e.g. ``dask_jobqueue.SLURMCluster``) or a ``Client``.
        workers: processes of the local cluster.
    """
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    cluster = None
    if scheduler is None:
        if workers < 1:
            raise ConfigError(f"--workers {workers} must be at least 1")
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
        address: Any = cluster
    else:
        address = scheduler
    try:
        import dask

        client = distributed.Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise RunError(
            f"cannot reach the Dask scheduler at {scheduler}: {exc} (is `dask scheduler` running, "
            "and is the address tcp://HOST:PORT?)"
        ) from exc
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def map_on_dask(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    key: Callable[[T], str],
    on_error: Callable[[T, BaseException], R],
    engine: str = "dask",
    scheduler: Any = None,
    workers: int = 2,
    retries: int = 2,
) -> Generator[R, None, None]:
    """``fn(item)`` for each item on a Dask cluster (see :func:`dask_client`), results in the
    order they finish; a task that failed for good gives ``on_error(item, exc)``. Closing the
    generator (or Ctrl-C) cancels what is left and shuts a local cluster down.

    Raises:
        ConfigError: ``engine`` is not ``dask`` (what a verb's ``engine`` argument hands on).
    """
    if engine != "dask":
        raise ConfigError(f"engine={engine!r} must be 'local' or 'dask'")
    by_name = {key(item): item for item in items}
    with dask_client(scheduler, workers=workers) as client:
        tasks = [(name, (item,)) for name, item in by_name.items()]
        for name, ok, value in dask_results(client, fn, tasks, retries=retries):
            yield value if ok else on_error(by_name[name], value)


def run_on_dask(
    client: Any,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[str, tuple[Any, ...]]],
    *,
    retries: int,
    on_result: Callable[[str, Any], None],
    on_error: Callable[[str, BaseException], None],
) -> None:
    """Run ``fn(*args)`` for each ``(name, args)`` on the cluster; call ``on_result(name, value)``
    or, once Dask's retries are spent (or the task's workers kept dying), ``on_error(name, exc)``,
    in the order tasks finish. Anything the callbacks raise (or Ctrl-C) cancels what is left."""
    for name, ok, value in dask_results(client, fn, tasks, retries=retries):
        if ok:
            on_result(name, value)
        else:
            on_error(name, value)


def dask_results(
    client: Any, fn: Callable[..., Any], tasks: Sequence[tuple[str, tuple[Any, ...]]], *, retries: int
) -> Generator[tuple[str, bool, Any], None, None]:
    """``(name, True, result)`` or ``(name, False, exception)`` per task, as tasks finish;
    cancels the unfinished ones when closed."""
    distributed = _distributed()
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(fn, *args, key=f"chirpkit-{name}-{token}", retries=retries, pure=False): name
        for name, args in tasks
    }
    try:
        for fut in distributed.as_completed(list(futures)):
            name = futures[fut]
            if fut.status == "error":
                yield name, False, fut.exception()
            elif fut.status == "cancelled":  # dropped by the cluster, not by us
                yield name, False, RuntimeError(f"the cluster dropped the task of {name}")
            else:
                yield name, True, fut.result()
            fut.release()
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(pending, force=True)
