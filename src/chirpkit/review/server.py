"""The review web app: a Starlette app over one ``detect`` output folder, served by uvicorn.

Routes (JSON unless said otherwise; errors are JSON ``{"error": ...}`` with a 4xx status):

=====================================  ================================================================
``GET /``                              the page (plain HTML/JS/CSS, every asset served from here)
``GET /api/session``                   folder, classes, label choices, recordings, strategies, the
                                       token the page must send with POSTs
``GET /api/items``                     the queue: ``strategy``, ``label``, ``file`` (a recording's
                                       name), ``min_score``, ``max_score``, ``reviewed``
                                       (true/false), ``bins``, ``per_bin``, ``limit``, ``offset``
``GET /api/items/{id}``                one item with its review and history
``GET /api/items/{id}/spectrogram.png``  the clip's spectrogram, the detection boxed
``GET /api/items/{id}/audio``          the clip as WAV (the detection plus context)
``GET /api/reviews``                   the current review of every reviewed item
``POST /api/reviews``                  ``{"id", "verdict": accept|reject|relabel|clear, "label"?,
                                       "reviewer"?}`` → 201
``GET /api/progress``                  per class: detections, queued, reviewed, accepted, ...
=====================================  ================================================================

Security: requests name item ids (12 hex digits), never paths; an item reads only its own
recording, a file of the detect run. The ``Host`` header must name this server (no DNS
rebinding). A POST needs the session token in ``X-Chirpkit-Token``, a JSON body, and — when the
browser says where it comes from (``Origin``, ``Sec-Fetch-Site``) — the same origin: a page on
another site can neither read the token nor forge a review. With ``require_token`` (any host but
loopback), every request needs the token: the ``Authorization: Bearer`` or ``X-Chirpkit-Token``
header, or the cookie set by opening ``/?token=TOKEN``.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from chirpkit.errors import AudioDecodeError, DataError
from chirpkit.review.db import REVIEW_COLUMNS, VERDICTS, ReviewDB
from chirpkit.review.items import DetectFolder, load_detect_folder
from chirpkit.review.queue import STRATEGIES, review_queue
from chirpkit.review.render import read_clip, spectrogram_png, wav_bytes

__all__ = ["ReviewState", "create_app"]

log = logging.getLogger("chirpkit")

_MAX_BODY = 16 * 1024
_STATIC = {"app.js": "application/javascript", "app.css": "text/css"}
_COOKIE = "chirpkit_token"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@dataclass
class ReviewState:
    """Everything the routes share: the folder, its reviews, settings and a small render cache."""

    det: DetectFolder
    db: ReviewDB
    token: str
    require_token: bool = False
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    strategy: str = "stratified"
    bins: int = 10
    per_bin: int | None = None
    seed: int = 0
    reviewer: str = ""
    context_s: float = 1.5
    max_freq_hz: float | None = None
    _cache: OrderedDict[tuple[str, str], bytes] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rendered(self, id: str, kind: str, make: Callable[[], bytes]) -> bytes:
        key = (id, kind)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = make()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return data


def _state(request: Request) -> ReviewState:
    state: ReviewState = request.app.state.review
    return state


class _Guard(BaseHTTPMiddleware):
    """Host check, token check (reads, when required), and cross-site protection of POSTs."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        st = _state(request)
        host = request.headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        hostname = hostname.strip("[]").lower()
        if hostname not in st.allowed_hosts:
            return _error(400, f"Host {host!r} is not this review server")
        sent = request.headers.get("x-chirpkit-token") or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            sent = sent or auth[7:].strip()
        if st.require_token:
            if request.url.path == "/" and request.method == "GET" and "token" in request.query_params:
                if not hmac.compare_digest(request.query_params["token"], st.token):
                    return _error(401, "wrong token")
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(_COOKIE, st.token, httponly=True, samesite="strict")
                return resp
            have = sent or request.cookies.get(_COOKIE, "")
            if not hmac.compare_digest(have, st.token):
                return _error(401, "this server needs its token: open the URL printed at start (…/?token=…)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            site = request.headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                return _error(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{host}":
                return _error(403, f"cross-origin request refused (Origin: {origin})")
            if not sent or not hmac.compare_digest(sent, st.token):
                return _error(403, "missing or wrong X-Chirpkit-Token header (GET /api/session gives it)")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return _error(415, "the body must be JSON (Content-Type: application/json)")
        return await call_next(request)


def _asset(name: str) -> str:
    return resources.files("chirpkit.review").joinpath("static", name).read_text(encoding="utf-8")


def index(request: Request) -> Response:
    st = _state(request)
    page = _asset("index.html")
    page = page.replace("{{TOKEN}}", html.escape(st.token, quote=True))
    page = page.replace("{{TITLE}}", html.escape(st.det.root.name))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        return _error(404, "no such asset")
    return Response(_asset(name), media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})


def _item_json(st: ReviewState, it: dict[str, Any], review: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": it["id"],
        "file": it["name"],
        "path": str(it["file"]),
        "start_s": it["start_s"],
        "end_s": it["end_s"],
        "label": it["label"],
        "score": it["score"],
        "audio_found": st.det.paths.get(str(it["file"])) is not None,
        "review": _review_json(review),
    }


def _review_json(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {k: r[k] for k in ("verdict", "label", "reviewer", "time", "seq")}


def session(request: Request) -> Response:
    st = _state(request)
    det = st.det
    return JSONResponse(
        {
            "folder": str(det.root),
            "run": str(det.run) if det.run else None,
            "token": st.token,
            "reviewer": st.reviewer,
            "strategy": st.strategy,
            "strategies": list(STRATEGIES),
            "verdicts": list(VERDICTS),
            "classes": sorted(det.items["label"].unique()),
            "label_choices": det.label_choices(),
            "background": det.background,
            "files": sorted(det.items["name"].unique()),
            "detections": len(det.items),
            "context_s": st.context_s,
        }
    )


def _get_item(request: Request) -> dict[str, Any]:
    it = _state(request).det.item(request.path_params["id"])
    if it is None:
        raise HTTPException(404, f"no item with id {request.path_params['id'][:40]!r}")
    return it


def _float(q: Any, key: str) -> float | None:
    v = q.get(key)
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        raise HTTPException(422, f"{key}={v[:20]!r} must be a number") from None


def _int(q: Any, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = q.get(key)
    if v in (None, ""):
        return default
    try:
        n = int(v)
    except ValueError:
        raise HTTPException(422, f"{key}={v[:20]!r} must be an integer") from None
    if not lo <= n <= hi:
        raise HTTPException(422, f"{key}={n} must be in [{lo}, {hi}]")
    return n


def items(request: Request) -> Response:
    st = _state(request)
    q = request.query_params
    strategy = q.get("strategy") or st.strategy
    if strategy not in STRATEGIES:
        raise HTTPException(422, f"strategy={strategy[:20]!r} must be one of {list(STRATEGIES)}")
    reviewed_text = (q.get("reviewed") or "all").lower()
    if reviewed_text not in ("true", "false", "all"):
        raise HTTPException(422, "reviewed must be true, false or all")
    reviewed = None if reviewed_text == "all" else reviewed_text == "true"
    limit = _int(q, "limit", 500, 1, 100_000)
    offset = _int(q, "offset", 0, 0, 10_000_000)
    queue = review_queue(
        st.det.items,
        st.db.current(),
        strategy=strategy,
        label=q.get("label") or None,
        name=q.get("file") or None,
        min_score=_float(q, "min_score"),
        max_score=_float(q, "max_score"),
        reviewed=reviewed,
        bins=_int(q, "bins", st.bins, 1, 100) or st.bins,
        per_bin=_int(q, "per_bin", st.per_bin, 1, 1_000_000),
        seed=st.seed,
    )
    assert limit is not None and offset is not None
    page = queue.iloc[offset : offset + limit]
    rows = [
        {
            "id": id,
            "file": r["name"],
            "start_s": r["start_s"],
            "end_s": r["end_s"],
            "label": r["label"],
            "score": r["score"],
            "verdict": _plain(r["verdict"]),
            "new_label": _plain(r["new_label"]),
        }
        for id, r in zip(page.index, page.to_dict("records"), strict=True)
    ]
    return JSONResponse({"strategy": strategy, "total": len(queue), "offset": offset, "items": rows})


def item(request: Request) -> Response:
    st = _state(request)
    it = _get_item(request)
    hist = st.db.history(it["id"])
    body = _item_json(st, it, st.db.latest(it["id"]))
    body["history"] = [
        {k: _plain(v) for k, v in r.items() if k in ("seq", "verdict", "label", "reviewer", "time")}
        for r in hist.to_dict("records")
    ]
    return JSONResponse(body)


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def _clip_or_error(st: ReviewState, it: dict[str, Any]) -> Any:
    path = st.det.paths.get(str(it["file"]))
    if path is None:
        raise HTTPException(404, f"recording of item {it['id']} not found: {it['name']}")
    try:
        return read_clip(path, it["start_s"], it["end_s"], context_s=st.context_s)
    except (AudioDecodeError, OSError) as exc:
        raise HTTPException(422, f"cannot decode the recording of item {it['id']}: {exc}") from exc


def spectrogram(request: Request) -> Response:
    st = _state(request)
    it = _get_item(request)

    def make() -> bytes:
        clip = _clip_or_error(st, it)
        title = f"{it['label']}  {it['score']:.3f}   {it['name']}  {it['start_s']:.2f}–{it['end_s']:.2f} s"
        fmax = st.max_freq_hz or (st.det.sample_rate / 2 if st.det.sample_rate else None)
        return spectrogram_png(clip, it["start_s"], it["end_s"], title=title, max_freq_hz=fmax)

    return Response(
        st.rendered(it["id"], "png", make), media_type="image/png", headers={"Cache-Control": "max-age=3600"}
    )


def audio(request: Request) -> Response:
    st = _state(request)
    it = _get_item(request)
    data = st.rendered(it["id"], "wav", lambda: wav_bytes(_clip_or_error(st, it)))
    return Response(data, media_type="audio/wav", headers={"Cache-Control": "max-age=3600"})


def reviews(request: Request) -> Response:
    cur = _state(request).db.current()
    cols = [c for c in REVIEW_COLUMNS if c != "seq"]
    cols.insert(cols.index("label") + 1, "final_label")
    rows = [{k: _plain(r[k]) for k in cols} for r in cur.to_dict("records")]
    return JSONResponse({"reviews": rows, "total": len(rows)})


async def post_review(request: Request) -> Response:
    st = _state(request)
    body_bytes = await request.body()
    if len(body_bytes) > _MAX_BODY:
        return _error(413, f"body over {_MAX_BODY} bytes")
    try:
        body = json.loads(body_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"malformed JSON: {exc}")
    if not isinstance(body, dict):
        return _error(422, 'the body must be a JSON object: {"id", "verdict", "label"?, "reviewer"?}')
    unknown = sorted(set(body) - {"id", "verdict", "label", "reviewer"})
    if unknown:
        return _error(422, f"unknown field(s) {unknown}; allowed: id, verdict, label, reviewer")
    it = st.det.item(body.get("id"))  # type: ignore[arg-type]
    if it is None:
        return _error(404, f"no item with id {str(body.get('id'))[:40]!r}")
    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        return _error(422, f"verdict must be one of {list(VERDICTS)}, got {str(verdict)[:20]!r}")
    reviewer = body.get("reviewer")
    if reviewer is None or reviewer == "":
        reviewer = st.reviewer
    if not isinstance(reviewer, str):
        return _error(422, "reviewer must be a string")
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        return _error(422, "label must be a string")
    try:
        row = await run_in_threadpool(st.db.add, it, verdict, label=label, reviewer=reviewer)
    except DataError as exc:
        return _error(422, str(exc))
    stored = None if row["verdict"] == "clear" else row
    return JSONResponse({"item": _item_json(st, it, stored), "review": _review_json(row)}, status_code=201)


def progress(request: Request) -> Response:
    st = _state(request)
    cur = st.db.current()
    queued = review_queue(
        st.det.items, cur, strategy=st.strategy, bins=st.bins, per_bin=st.per_bin, seed=st.seed
    )
    out = []
    for lab in sorted(st.det.items["label"].unique()):
        mask = st.det.items["label"] == lab
        ids = st.det.items.index[mask]
        rv = cur[cur.index.isin(ids)]
        q = queued[queued["label"] == lab]
        out.append(
            {
                "label": lab,
                "detections": int(mask.sum()),
                "queued": len(q),
                "queued_reviewed": int(q["verdict"].notna().sum()),
                "reviewed": len(rv),
                "accepted": int((rv["verdict"] == "accept").sum()),
                "rejected": int((rv["verdict"] == "reject").sum()),
                "relabelled": int((rv["verdict"] == "relabel").sum()),
            }
        )
    return JSONResponse({"strategy": st.strategy, "classes": out})


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, str(exc.detail))
    return _error(500, "internal error")


def create_app(
    folder: str | os.PathLike[str] | DetectFolder,
    *,
    run: str | os.PathLike[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    require_token: bool = False,
    host: str = "127.0.0.1",
    strategy: str = "stratified",
    bins: int = 10,
    per_bin: int | None = None,
    seed: int = 0,
    reviewer: str = "",
    context_s: float = 1.5,
    max_freq_hz: float | None = None,
) -> Starlette:
    """The review app over a ``detect`` output folder (serve it with uvicorn, or test it with
    Starlette's ``TestClient(app, base_url="http://127.0.0.1")``).

    ``token`` defaults to a random one (``app.state.review.token``); ``require_token`` makes every
    request need it (use it whenever ``host`` is not loopback). ``host`` joins the host names the
    ``Host`` header may carry. The spectrograms go up to ``max_freq_hz`` (default: what the model
    hears, half its sample rate, when the run says; else the file's Nyquist frequency).
    """
    if strategy not in STRATEGIES:
        raise DataError(f"strategy {strategy!r} must be one of {list(STRATEGIES)}")
    det = (
        folder
        if isinstance(folder, DetectFolder)
        else load_detect_folder(folder, run=run, audio_dir=audio_dir)
    )
    hosts = ("127.0.0.1", "localhost", "::1", host.strip("[]").lower())
    state = ReviewState(
        det=det,
        db=ReviewDB(det.db_path),
        token=token or secrets.token_urlsafe(24),
        require_token=require_token,
        allowed_hosts=tuple(dict.fromkeys(hosts)),
        strategy=strategy,
        bins=bins,
        per_bin=per_bin,
        seed=seed,
        reviewer=reviewer,
        context_s=context_s,
        max_freq_hz=max_freq_hz,
    )
    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/session", session, methods=["GET"]),
        Route("/api/items", items, methods=["GET"]),
        Route("/api/items/{id}", item, methods=["GET"]),
        Route("/api/items/{id}/spectrogram.png", spectrogram, methods=["GET"]),
        Route("/api/items/{id}/audio", audio, methods=["GET"]),
        Route("/api/reviews", reviews, methods=["GET"]),
        Route("/api/reviews", post_review, methods=["POST"]),
        Route("/api/progress", progress, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard)],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    app.state.review = state
    log.info("review: %d detection(s) in %s; reviews in %s", len(det.items), det.root, det.db_path)
    return app
