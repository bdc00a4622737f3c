"""Serving the review app: ``chirpkit review DIR`` in the foreground, or a background server for
scripts and tests (``with running(DIR) as server: ... server.url ...``)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chirpkit.errors import ConfigError

__all__ = ["RunningServer", "is_loopback", "running", "serve", "serve_review"]

log = logging.getLogger("chirpkit")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_host(host: str, token: str | None) -> bool:
    """Returns whether every request must carry the token."""
    if is_loopback(host):
        return token is not None
    if not token:
        raise ConfigError(
            f"--host {host} makes the review page reachable from other machines: that needs "
            "--token SECRET (every request must then carry it); or keep the default 127.0.0.1"
        )
    log.warning(
        "review: listening on %s — reachable from other machines; every request needs the token. "
        "Plain HTTP: use it only on a network you trust",
        host,
    )
    return True


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
            ) from exc


def _url(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(
    folder: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = True,
    **options: Any,
) -> None:
    """Serve the review page over a ``detect`` output folder until interrupted (Ctrl-C).

    ``options`` go to :func:`chirpkit.review.server.create_app` (``run``, ``audio_dir``,
    ``strategy``, ``bins``, ``per_bin``, ``seed``, ``reviewer``, ``context_s``, ``max_freq_hz``).

    Raises:
        ConfigError: a host other than loopback without a token, or a port in use.
    """
    import uvicorn

    from chirpkit.review.server import create_app

    require = _check_host(host, token)
    _check_port(host, port)
    app = create_app(folder, token=token, require_token=require, host=host, **options)
    url = _url(host, port, token if require else None)
    n = len(app.state.review.det.items)
    print(f"chirpkit review: {n} detection(s) in {app.state.review.det.root}")
    print(f"  open {url}   (keys: a accept, r reject, l relabel, space play, ←/→ previous/next, u undo)")
    print("  Ctrl-C stops the server; every review is already saved in reviews.db")
    if open_browser:
        threading.Timer(0.8, lambda: webbrowser.open(url)).start()
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning")


serve_review = serve  # the name chirpkit exports it under


@dataclass
class RunningServer:
    """A review server running in a background thread."""

    url: str
    token: str
    app: Any
    server: Any
    thread: threading.Thread


@contextlib.contextmanager
def running(
    folder: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    **options: Any,
) -> Iterator[RunningServer]:
    """Run the review app on ``host`` (a free port by default) in a thread, for scripts and tests."""
    import uvicorn

    from chirpkit.review.server import create_app

    require = _check_host(host, token)
    app = create_app(folder, token=token, require_token=require, host=host, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="chirpkit-review", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the review server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    state = app.state.review
    try:
        yield RunningServer(
            url=f"http://{host}:{bound}", token=state.token, app=app, server=server, thread=thread
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
