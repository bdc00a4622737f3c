"""End to end in a real headless browser: the system's Chromium, driven by Playwright.

Opens the review page, plays a clip, gives verdicts with the keyboard (accept, reject, relabel,
undo), reloads, and checks that the verdicts are still there (on the page and in reviews.db).
Skips when Chromium or the Playwright package is missing (``.ci/run`` installs both). Set
``CHIRPKIT_SCREENSHOT=path.png`` to keep the screenshot (the picture in docs/review-loop.md is made that way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api")  # the dev extra installs it
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
if CHROMIUM is None and os.environ.get("CHIRPKIT_REQUIRE_BROWSER"):  # CI installs it: missing is a failure
    raise RuntimeError("CHIRPKIT_REQUIRE_BROWSER is set but there is no chromium (apt-get install chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium)")

from chirpkit.review.db import ReviewDB  # noqa: E402
from chirpkit.review.serve import running  # noqa: E402
from tests.review_helpers import make_detect_folder  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def _verdict(page: sync_api.Page, id_: str) -> str | None:
    return page.get_attribute(f'#queue li[data-id="{id_}"]', "data-verdict")


def test_review_in_the_browser_and_reload(tmp_path: Path) -> None:
    det = make_detect_folder(tmp_path)
    with running(det, reviewer="browser") as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(  # a request the page cancels itself (the next clip replaced it) is no error
                "requestfailed",
                lambda r: (
                    None if "ERR_ABORTED" in (r.failure or "") else errors.append(f"{r.url}: {r.failure}")
                ),
            )
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
            page.goto(server.url + "/")
            page.wait_for_selector("#queue li")
            page.wait_for_function(
                "document.querySelector('#spec').complete && document.querySelector('#spec').naturalWidth > 0"
            )
            first = page.evaluate("document.body.dataset.item")
            assert first and page.text_content("#i-verdict") == "not reviewed"

            page.keyboard.press(" ")  # play the clip
            page.wait_for_function(f"document.body.dataset.played === '{first}'", timeout=15000)
            page.wait_for_function("document.querySelector('#player').currentTime > 0", timeout=15000)

            page.keyboard.press("a")
            page.wait_for_selector(f'#queue li[data-id="{first}"][data-verdict="accept"]')
            page.wait_for_function(f"document.body.dataset.item !== '{first}'")
            second = page.evaluate("document.body.dataset.item")
            page.keyboard.press("r")
            page.wait_for_selector(f'#queue li[data-id="{second}"][data-verdict="reject"]')
            page.wait_for_function(f"document.body.dataset.item !== '{second}'")
            third = page.evaluate("document.body.dataset.item")
            page.keyboard.press("l")
            page.fill("#relabel-input", "buzz")
            page.keyboard.press("Enter")
            page.wait_for_selector(f'#queue li[data-id="{third}"][data-verdict="relabel"]')
            page.wait_for_function(f"document.body.dataset.item !== '{third}'")
            fourth = page.evaluate("document.body.dataset.item")
            page.keyboard.press("a")
            page.wait_for_selector(f'#queue li[data-id="{fourth}"][data-verdict="accept"]')
            page.keyboard.press("u")  # undo the last verdict: the fourth is not reviewed again
            page.wait_for_function(
                f"!document.querySelector('#queue li[data-id=\"{fourth}\"]').dataset.verdict"
            )
            page.wait_for_selector("#progress tbody tr")

            page.reload()
            page.wait_for_selector(f'#queue li[data-id="{first}"]')
            assert _verdict(page, first) == "accept"
            assert _verdict(page, second) == "reject"
            assert _verdict(page, third) == "relabel"
            assert _verdict(page, fourth) is None
            assert page.evaluate("document.body.dataset.item") == fourth  # it opens on the first not reviewed
            page.wait_for_function(
                "document.querySelector('#spec').complete && document.querySelector('#spec').naturalWidth > 0"
            )
            shot = tmp_path / "review.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("CHIRPKIT_SCREENSHOT"):
                shutil.copy(shot, os.environ["CHIRPKIT_SCREENSHOT"])
            assert errors == [] and outside == []  # every asset from the server itself
        finally:
            browser.close()
    cur = ReviewDB(det / "reviews.db").current()
    assert dict(zip(cur["item"], cur["verdict"], strict=True)) == {
        first: "accept",
        second: "reject",
        third: "relabel",
    }
    assert cur.set_index("item").loc[third, "label"] == "buzz" and set(cur["reviewer"]) == {"browser"}
