"""Threads that stop promptly, and the stop request that the ``chirpkit`` command's signal handler sets."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["check_stop", "request_stop", "reset_stop", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")


def thread_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, *, ahead: int = 2
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on ``workers`` threads, results in order, stopping promptly.

    At most ``workers * ahead`` items are queued. When the consumer stops (an exception in ``fn``,
    a ``KeyboardInterrupt``, or ``close()``), queued items are cancelled and only the ones already
    running are waited for, so an interrupt never waits for the whole queue. Call ``close()`` on the
    iterator (or exhaust it) to release the threads at once.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
            check_stop()
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in itertools.islice(source, workers * ahead):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            check_stop()  # a Ctrl-C that Python lost in a finaliser still stops here
            for item in itertools.islice(source, 1):
                pending.append(pool.submit(fn, item))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


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
