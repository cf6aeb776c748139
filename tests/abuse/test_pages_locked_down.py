"""The payer's pages cannot be framed, run no injected code and are never cached.

Found by attack: ``/pay`` and ``/enroll`` sent no CSP, ``X-Frame-Options``,
``Referrer-Policy`` or ``nosniff``, and a 4,250 EUR pay page rendered inside a frame on a
foreign origin (clickjacking).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import CHROMIUM
from tests.browser.test_pages import BrowserThread
from tests.e2e.servers import DEMO_MERCHANT_KEY, ServerProcess, running_server
from tests.server.harness import running_app

LOCKED_DOWN = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def assert_locked_down(headers: object, *, stored: bool) -> None:
    get = headers.get  # type: ignore[attr-defined]
    for name, value in LOCKED_DOWN.items():
        assert get(name) == value, name
    policy = get("Content-Security-Policy")
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    assert (get("Cache-Control") == "no-store") is not stored


@pytest.mark.parametrize("path", ["/enroll", "/pay/anything", "/static/zeropay.js"])
async def test_every_page_and_asset_is_locked_down(path: str) -> None:
    async with running_app() as h:
        answer = await h.call("GET", path)
        assert answer.status == 200
        assert_locked_down(answer.headers, stored=path.startswith("/static/"))


async def test_answers_carrying_a_session_or_a_token_are_never_stored() -> None:
    async with running_app() as h:
        user = "0b6f7d2e-57c1-4f7e-9a59-2f1d8f0c6a11"
        await h.enroll(user)
        started = await h.initiate(user)
        assert started.headers["Cache-Control"] == "no-store"
        verified = await h.pay(user, started.body)
        assert "auth_token" in verified.body
        assert_locked_down(verified.headers, stored=False)
        missing = await h.call("GET", "/no/such/page")
        assert missing.status == 404
        assert_locked_down(missing.headers, stored=False)
        keys = await h.call("GET", "/v1/keys")
        assert "no-store" not in keys.headers.get("Cache-Control", "")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"PBKDF2_ITERATIONS": "1000", "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY}
    with running_server(env, tmp_path_factory.mktemp("framed")) as server:
        yield server


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"NO BROWSER: {CHROMIUM} is missing")
def test_a_framed_pay_page_does_not_render(shop: ServerProcess, tmp_path: Path) -> None:
    """A foreign origin (a file page here) frames the pay page: Chromium refuses to render
    it, so a click-jacker has nothing to lay a decoy over."""
    attacker = tmp_path / "attacker.html"
    attacker.write_text(
        f'<html><body><h1>Win a prize</h1><iframe id="f" src="{shop.url}/pay/anything" '
        'width="800" height="600"></iframe></body></html>'
    )
    browser = BrowserThread()
    seen: dict[str, object] = {}

    def steps(page: Page) -> None:
        with page.expect_response(f"{shop.url}/pay/anything") as framed:
            page.goto(attacker.as_uri())
        seen["status"] = framed.value.status
        page.wait_for_load_state("load")
        frame = next(f for f in page.frames if f is not page.main_frame)
        # A blocked frame shows Chromium's own error page, never the payment.
        seen["frame_has_form"] = frame.url.startswith(shop.url) and bool(
            frame.evaluate("document.querySelector('form') !== null")
        )

    try:
        browser.on_page(steps)
    finally:
        browser.close()
    assert seen["status"] == 200  # served, and refused by the browser
    assert seen["frame_has_form"] is False
