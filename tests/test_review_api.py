"""The review web app through Starlette's TestClient: every route, the queue strategies, bad ids,
traversal attempts, malformed bodies, cross-site and token protection, concurrent writes."""

from __future__ import annotations

import io
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from chirpkit.errors import ConfigError, DataError
from chirpkit.review.db import ReviewDB
from chirpkit.review.items import item_id, load_detect_folder
from chirpkit.review.queue import review_queue
from chirpkit.review.serve import running
from chirpkit.review.server import create_app
from tests.review_helpers import make_detect_folder, truth

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def det(tmp_path: Path) -> Path:
    return make_detect_folder(tmp_path)


@pytest.fixture
def client(det: Path) -> TestClient:
    return TestClient(create_app(det, token="t0ken", reviewer="tester"), base_url=BASE)


def post(c: TestClient, body: object, **headers: str) -> object:
    return c.post("/api/reviews", json=body, headers={"X-Chirpkit-Token": "t0ken", **headers})


def all_items(c: TestClient, **params: object) -> list[dict]:
    return c.get("/api/items", params={"limit": 10000, **params}).json()["items"]


def test_page_assets_session_and_items(client: TestClient, det: Path) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'content="t0ken"' in page.text
    assert "/static/app.js" in page.text and "http" not in page.text.replace(BASE, "")  # no CDN
    assert "X-Chirpkit-Token" in client.get("/static/app.js").text
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../server.py").status_code == 404
    s = client.get("/api/session").json()
    assert s["classes"] == ["high", "low"] and s["files"] == ["rec_a.wav", "rec_b.wav"]
    table = pd.read_csv(det / "detections.csv")
    assert s["detections"] == len(table) - 1  # the row naming a file outside the manifest is left out
    items = all_items(client)
    assert len(items) == s["detections"] and len({i["id"] for i in items}) == len(items)
    assert all(i["file"] != "private.wav" for i in items)
    one = items[0]
    assert one["id"] == item_id(
        str(det.parent / "audio" / one["file"]), one["start_s"], one["end_s"], one["label"]
    )
    body = client.get(f"/api/items/{one['id']}").json()
    assert body["review"] is None and body["history"] == [] and body["audio_found"]


def test_spectrogram_and_audio_hold_the_clip_with_context(client: TestClient) -> None:
    it = next(i for i in all_items(client, strategy="score") if i["start_s"] >= 5)
    png = client.get(f"/api/items/{it['id']}/spectrogram.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    wav = client.get(f"/api/items/{it['id']}/audio")
    assert wav.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(wav.content))
    assert sr == 16000 and len(y) == pytest.approx((1.0 + 2 * 1.5) * sr, abs=2)  # 1 s + 1.5 s each side


def test_reviews_are_stored_at_once_and_kept_across_restarts(client: TestClient, det: Path) -> None:
    items = all_items(client)
    a, b, c = items[0]["id"], items[1]["id"], items[2]["id"]
    assert post(client, {"id": a, "verdict": "accept"}).status_code == 201
    r = post(client, {"id": b, "verdict": "relabel", "label": "buzz", "reviewer": "ann"})
    assert r.status_code == 201 and r.json()["item"]["review"]["label"] == "buzz"
    assert post(client, {"id": c, "verdict": "reject"}).status_code == 201
    assert post(client, {"id": c, "verdict": "clear"}).json()["item"]["review"] is None  # undo
    # the row is in the database file now, read by a separate connection
    rows = (
        sqlite3.connect(det / "reviews.db").execute("SELECT item, verdict, reviewer FROM reviews").fetchall()
    )
    assert rows == [
        (a, "accept", "tester"),
        (b, "relabel", "ann"),
        (c, "reject", "tester"),
        (c, "clear", "tester"),
    ]
    again = TestClient(create_app(det, token="t0ken"), base_url=BASE)  # a restarted server
    state = {i["id"]: (i["verdict"], i["new_label"]) for i in all_items(again)}
    assert state[a] == ("accept", None) and state[b] == ("relabel", "buzz") and state[c] == (None, None)
    current = again.get("/api/reviews").json()
    assert current["total"] == 2 and {r["final_label"] for r in current["reviews"]} == {
        "buzz",
        items[0]["label"],
    }
    assert [h["verdict"] for h in again.get(f"/api/items/{c}").json()["history"]] == ["reject", "clear"]
    prog = {p["label"]: p for p in again.get("/api/progress").json()["classes"]}
    assert sum(p["reviewed"] for p in prog.values()) == 2
    assert sum(p["accepted"] + p["relabelled"] for p in prog.values()) == 2
    assert (
        len(all_items(again, reviewed="true")) == 2
        and len(all_items(again, reviewed="false")) == len(items) - 2
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/..%2F..%2Fetc%2Fpasswd",
        "/api/items/..%2F..%2Fetc%2Fpasswd/audio",
        "/api/items/%2Fetc%2Fpasswd/spectrogram.png",
        "/api/items/../../etc/passwd/audio",
        "/api/items/0123456789ab/audio",  # well-formed, unknown
        "/api/items/ABCDEF012345",  # upper case is not an id
        "/api/items/%00/audio",
        "/api/nope",
    ],
)
def test_bad_ids_and_traversal_get_json_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and "error" in r.json()


def test_the_private_file_is_never_served(client: TestClient, det: Path) -> None:
    private = str(det.parent / "audio" / "private.wav")
    r = client.get(f"/api/items/{item_id(private, 0.0, 1.0, 'low')}/audio")
    assert r.status_code == 404
    assert post(client, {"id": item_id(private, 0.0, 1.0, "low"), "verdict": "accept"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ("[1, 2]", 422),
        ('"accept"', 422),
        ('{"id": "0123456789ab", "verdict": "accept"}', 404),
        ('{"id": "../../etc/passwd", "verdict": "accept"}', 404),
        ('{"id": 12, "verdict": "accept"}', 404),
        ('{"verdict": "accept"}', 404),
        ('{"id": "ID", "verdict": "maybe"}', 422),
        ('{"id": "ID"}', 422),
        ('{"id": "ID", "verdict": "relabel"}', 422),
        ('{"id": "ID", "verdict": "relabel", "label": "  "}', 422),
        ('{"id": "ID", "verdict": "relabel", "label": "a;b"}', 422),
        ('{"id": "ID", "verdict": "relabel", "label": 5}', 422),
        ('{"id": "ID", "verdict": "accept", "label": "x"}', 422),
        ('{"id": "ID", "verdict": "accept", "reviewer": ["x"]}', 422),
        ('{"id": "ID", "verdict": "accept", "path": "/etc/passwd"}', 422),
    ],
)
def test_malformed_bodies_get_4xx_json(client: TestClient, body: str, status: int) -> None:
    good = all_items(client)[0]["id"]
    r = client.post(
        "/api/reviews",
        content=body.replace("ID", good).encode(),
        headers={"X-Chirpkit-Token": "t0ken", "Content-Type": "application/json"},
    )
    assert r.status_code == status and "error" in r.json()
    assert client.get("/api/reviews").json()["total"] == 0


def test_oversized_bodies_are_refused(client: TestClient) -> None:
    good = all_items(client)[0]["id"]
    big = {"id": good, "verdict": "relabel", "label": "x", "reviewer": "r" * 20_000}
    assert post(client, big).status_code == 413
    assert client.get("/api/reviews").json()["total"] == 0


def test_queries_are_validated(client: TestClient) -> None:
    for params in (
        {"strategy": "best"},
        {"min_score": "high"},
        {"limit": "0"},
        {"reviewed": "maybe"},
        {"per_bin": "-1"},
    ):
        r = client.get("/api/items", params=params)
        assert r.status_code == 422 and "error" in r.json(), params
    r = client.post("/api/items", json={}, headers={"X-Chirpkit-Token": "t0ken"})
    assert r.status_code == 405 and "error" in r.json()


def test_cross_site_posts_are_refused(client: TestClient) -> None:
    good = {"id": all_items(client)[0]["id"], "verdict": "accept"}
    assert client.post("/api/reviews", json=good).status_code == 403  # no token
    assert post(client, good, **{"X-Chirpkit-Token": "wrong"}).status_code == 403
    assert post(client, good, Origin="http://evil.example").status_code == 403
    assert post(client, good, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    form = client.post(
        "/api/reviews",
        content=b"id=x&verdict=accept",
        headers={"X-Chirpkit-Token": "t0ken", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert post(client, good, Origin=BASE, **{"Sec-Fetch-Site": "same-origin"}).status_code == 201


def test_dns_rebinding_host_is_refused(det: Path) -> None:
    c = TestClient(create_app(det), base_url="http://attacker.example:8765")
    assert c.get("/api/session").status_code == 400


def test_token_mode_guards_every_request(det: Path) -> None:
    app = create_app(det, token="s3cret", require_token=True, host="192.0.2.10")
    c = TestClient(app, base_url="http://192.0.2.10:8765", follow_redirects=False)
    assert c.get("/api/items").status_code == 401
    assert c.get("/").status_code == 401
    assert c.get("/?token=nope").status_code == 401
    r = c.get("/?token=s3cret")
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/api/items").status_code == 200  # the cookie
    bearer = TestClient(app, base_url="http://192.0.2.10:8765")
    assert bearer.get("/api/items", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_other_hosts_need_a_token() -> None:
    with pytest.raises(ConfigError, match="--token"), running("unused", host="0.0.0.0"):
        pass


def test_concurrent_writes_from_threads_and_clients(client: TestClient, det: Path) -> None:
    items = all_items(client)[:40]
    errors: list[object] = []

    def reviewer(k: int) -> None:
        c = TestClient(create_app(det, token="t0ken"), base_url=BASE)  # a separate server process, in effect
        for it in items:
            r = post(c, {"id": it["id"], "verdict": "accept" if k % 2 else "reject", "reviewer": f"r{k}"})
            if r.status_code != 201:
                errors.append(r.text)

    threads = [threading.Thread(target=reviewer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    db = ReviewDB(det / "reviews.db")
    for it in items:  # and a direct writer at the same time
        db.add({**it, "file": "x"}, "relabel", label="other", reviewer="direct")
    for t in threads:
        t.join()
    assert errors == []
    hist = db.history()
    assert len(hist) == 5 * len(items) and hist["seq"].is_unique
    assert hist.groupby("reviewer").size().to_dict() == {"direct": 40, "r0": 40, "r1": 40, "r2": 40, "r3": 40}
    assert len(db.current()) == len(items)


def test_strategies_order_the_queue(det: Path) -> None:
    folder = load_detect_folder(det)
    db = ReviewDB(folder.db_path)
    items = folder.items
    strat = review_queue(items, db.current(), strategy="stratified", bins=5, per_bin=2, seed=1)
    for lab, g in strat.groupby("label"):
        scores = items.loc[items["label"] == lab, "score"]
        edges = pd.Series(pd.cut(scores, 5, labels=False), index=scores.index)
        assert (edges.loc[g.index].value_counts() <= 2).all()
        assert edges.loc[g.index].nunique() == edges.nunique()  # every non-empty bin is sampled
    first = strat.iloc[: strat.groupby("label").ngroups * 2]
    assert first["label"].nunique() == 2  # round robin: both classes come early
    again = review_queue(items, db.current(), strategy="stratified", bins=5, per_bin=2, seed=1)
    assert list(again.index) == list(strat.index)  # seeded
    by_score = review_queue(items, db.current(), strategy="score")
    assert by_score["score"].is_monotonic_decreasing and len(by_score) == len(items)
    rnd = review_queue(items, db.current(), strategy="random", seed=3)
    assert sorted(rnd.index) == sorted(items.index) and list(rnd.index) != list(by_score.index)
    # uncertainty: before reviews, scores nearest 0.5 first; after, the fitted P(correct) decides
    unc = review_queue(items, db.current(), strategy="uncertainty")
    assert (unc["score"] - 0.5).abs().is_monotonic_increasing
    for id_, r in items.iterrows():
        db.add(
            {"id": id_, **r.to_dict()},
            "accept" if truth(r["file"], r["start_s"], r["end_s"], r["label"]) else "reject",
        )
    unc = review_queue(items, db.current(), strategy="uncertainty")
    assert not (unc["score"] - 0.5).abs().is_monotonic_increasing  # it now follows the fit, not the score
    filt = review_queue(
        items, db.current(), strategy="score", label="low", name="rec_b.wav", min_score=0.7, reviewed=True
    )
    assert set(filt["label"]) == {"low"} and set(filt["name"]) == {"rec_b.wav"} and filt["score"].min() >= 0.7
    with pytest.raises(DataError, match="strategy"):
        review_queue(items, db.current(), strategy="best")


def test_a_real_server_over_http(det: Path) -> None:
    import httpx

    with running(det, token="tok") as server:
        assert server.url.startswith("http://127.0.0.1:")
        items = httpx.get(f"{server.url}/api/items", headers={"Authorization": "Bearer tok"}).json()["items"]
        r = httpx.post(
            f"{server.url}/api/reviews",
            json={"id": items[0]["id"], "verdict": "accept"},
            headers={"X-Chirpkit-Token": "tok"},
        )
        assert r.status_code == 201
    assert len(ReviewDB(det / "reviews.db").current()) == 1


def test_missing_folder_and_table_are_clear_errors(tmp_path: Path) -> None:
    from chirpkit.errors import MissingPathError

    with pytest.raises(MissingPathError):
        create_app(tmp_path / "nope")
    with pytest.raises(DataError, match=r"detections\.csv"):
        create_app(tmp_path)
    (tmp_path / "detections.csv").write_text("file,start_s,end_s,label,score\nx.wav,0,1,a,high\n")
    with pytest.raises(DataError, match="line 2: column 'score'"):
        create_app(tmp_path)
