"""The payer's pages in a real browser, against real server processes: the embedded default,
and Redis with PostgreSQL.

- the page's WebCrypto digests equal the core's test vectors;
- a user enrolls on the enroll page, then pays on the pay page, which shows the amount and
  the payee before anything is answered;
- a wrong PIN shows the one generic failure, with the attempts left and no factor named;
- with a passkey (Chromium's virtual authenticator, through CDP): the enroll page registers
  one, the pay page shows what it will sign and pays with both factors, and a signature over
  another amount (a tampered page) is one more failed attempt.

Each step leaves a screenshot in ``.run/screenshots``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

from tests.browser.conftest import CHROMIUM, SCREENSHOTS
from tests.e2e.servers import (
    DEMO_MERCHANT_KEY,
    ServerProcess,
    add_merchant,
    command,
    production_env,
    running_server,
)
from tests.faults.history import headers
from tests.services import REDIS_URL, delete_prefix, temporary_database, unique_prefix
from zeropay_proto import b64url
from zeropay_proto.passkeys import LinkedData

VECTORS = Path(__file__).parents[1] / "vectors" / "factor_digests.json"
ANSWERS = {"PIN": "4827", "COLOUR": "teal,amber", "WORDS": "blue harbour"}


@dataclass(frozen=True)
class Shop:
    """A running server, the merchant key that opens its sessions, that merchant's id and
    the name payers are shown for it; ``embedded``: the development server (whose enroll
    page offers a demo user id field; elsewhere a payer enrolls through a merchant's link)."""

    server: ServerProcess
    merchant_key: str
    payee: str
    payee_name: str
    embedded: bool


@pytest.fixture(scope="module", params=["embedded", "redis+postgresql"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """The pages against the embedded default, and against Redis and PostgreSQL."""
    workdir = tmp_path_factory.mktemp("browser")
    if request.param == "embedded":
        env = {"PBKDF2_ITERATIONS": "1000", "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY}
        with running_server(env, workdir) as running:
            yield Shop(running, DEMO_MERCHANT_KEY, "demo-shop", "Demo Shop", embedded=True)
        return
    prefix = unique_prefix()
    with temporary_database() as database_url:
        env = production_env(
            REDIS_URL,
            prefix,
            database_url,
            DB_AUTO_MIGRATE="true",
            WEBAUTHN_RP_ID="localhost",  # origins: http://localhost:<the bound port>
        )
        key = add_merchant(env, "browser-shop")
        named = command(env, "merchants", "name", "browser-shop", "Browser", "Shop")
        assert named.returncode == 0, named.stderr
        with running_server(env, workdir) as running:
            yield Shop(running, key, "browser-shop", "Browser Shop", embedded=False)
    delete_prefix(REDIS_URL, prefix)


class BrowserThread:
    """Chromium under Playwright's sync API, all in one thread of its own: Playwright runs an
    asyncio loop in the thread that drives it, and that loop must be neither in the test
    process's main thread nor one of trio-asyncio's, which the storage tests open there."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def _start(self) -> Browser:
        if self._browser is None:
            # trio-asyncio replaced the process's event loop policy: Playwright's own loop
            # must be a plain asyncio one, made under the default policy.
            policy = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
            try:
                self._playwright = sync_playwright().start()
            finally:
                asyncio.set_event_loop_policy(policy)
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
        return self._browser

    def on_page(self, steps: Callable[[Page], None], *, locale: str = "en-US") -> None:
        """Run ``steps`` on a fresh page of a browser speaking ``locale``, in the browser's
        thread."""

        def run() -> None:
            page = self._start().new_page(locale=locale)
            try:
                steps(page)
            finally:
                page.close()

        self._pool.submit(run).result()

    def close(self) -> None:
        def stop() -> None:
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        self._pool.submit(stop).result()
        self._pool.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserThread]:
    thread = BrowserThread()
    try:
        yield thread
    finally:
        thread.close()


def origin(server: ServerProcess) -> str:
    """The server as the browser sees it: localhost, the passkeys' relying party."""
    return server.url.replace("127.0.0.1", "localhost")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def answer(page: Page, factor: str, value: str) -> None:
    """Answer one factor the way a payer does: palettes by clicking, the rest by typing."""
    if factor == "COLOUR":
        for name in value.split(","):
            page.click(f"[data-factor=COLOUR] [data-pick={name}]")
    else:
        page.fill(f"input[name={factor}]", value)


def enroll_url(shop: Shop, user: str) -> str:
    """Where a payer enrolls ``user``: the merchant's enrollment link (a grant from the API),
    or on the development server the enroll page's demo user id field."""
    if shop.embedded:
        return f"{origin(shop.server)}/enroll"
    made = httpx.post(
        f"{shop.server.url}/v1/enrollment/grants",
        json={"user_uuid": user},
        headers=headers(shop.merchant_key),
    )
    assert made.status_code == 201, made.text
    return f"{origin(shop.server)}{made.json()['enroll_url']}"


def enroll_on_page(page: Page, shop: Shop, user: str, *, passkey: bool = False) -> None:
    """Enroll the ANSWERS on the enroll page, and a passkey too if ``passkey``."""
    page.goto(enroll_url(shop, user))
    page.wait_for_selector("#enrollment:not([hidden])")
    if shop.embedded:
        page.fill("input[name=user_uuid]", user)
    else:
        assert page.locator("input[name=user_uuid]").is_hidden()  # no id typed by the payer
    for factor, value in ANSWERS.items():
        answer(page, factor, value)
    if passkey:
        page.check("input[name=passkey]")
    page.click("button[type=submit]")
    page.wait_for_selector("#result.ok")


def pay_on_page(
    page: Page, started: dict[str, Any], *, answers: dict[str, str] = ANSWERS, outcome: str = "ok"
) -> str:
    """Answer the session's challenged factors on the pay page (a passkey signs by itself)
    and submit; wait for the ``outcome`` result and return its text."""
    for factor in started["required_factors"]:
        if factor != "PASSKEY":
            answer(page, factor, answers[factor])
    page.click("button[type=submit]")
    page.wait_for_selector(f"#result.{outcome}")
    return page.text_content("#result") or ""


def with_authenticator(page: Page) -> None:
    """A platform authenticator with user verification, as a phone's: Chromium's virtual
    one (CDP), which answers navigator.credentials without a person."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})


def shop_site(page: Page) -> list[str]:
    """Stand in for the shop at https://shop.example: the addresses the payer arrives at."""
    arrived: list[str] = []

    def shop_page(route: Route) -> None:
        arrived.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>thanks</p>")

    page.route("https://shop.example/**", shop_page)
    return arrived


def initiate(shop: Shop, user: str, **extra: Any) -> dict[str, Any]:
    body = {"user_uuid": user, "amount": 4250, "currency": "EUR", **extra}
    url = f"{shop.server.url}/v1/verification/initiate"
    made = httpx.post(url, json=body, headers=headers(shop.merchant_key))
    assert made.status_code == 200, made.text
    started: dict[str, Any] = made.json()
    return started


def test_the_pages_digests_equal_the_test_vectors(shop: Shop, browser: BrowserThread) -> None:
    server = shop.server
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]

    def steps(page: Page) -> None:
        page.goto(f"{origin(server)}/enroll")
        for vector in vectors:
            computed = page.evaluate(
                "([user, factor, answer]) => zeropay.factorDigest(user, factor, answer)",
                [vector["user_uuid"], vector["factor"], vector["answer"]],
            )
            assert computed == vector["digest_hex"], vector["note"]

    browser.on_page(steps)


def test_enroll_then_pay_on_the_pages(shop: Shop, browser: BrowserThread) -> None:
    server, user = shop.server, str(uuid.uuid4())

    def steps(page: Page) -> None:
        enroll_on_page(page, shop, user)
        assert page.text_content("#result") == "Enrolled 3 factors."
        shot(page, f"1-enrolled-{shop.payee}")
        started = initiate(shop, user)
        page.goto(f"{origin(server)}/pay/{started['session_id']}")
        page.wait_for_selector("#answers:not([hidden])")
        assert page.text_content("#amount") == "€42.50"  # 4250 minor units of EUR
        assert page.text_content("#payee") == shop.payee_name
        shot(page, f"2-payment-shown-{shop.payee}")
        assert pay_on_page(page, started) == "Payment authorised."
        shot(page, f"3-authorised-{shop.payee}")

    browser.on_page(steps)


def test_a_wrong_pin_shows_the_generic_failure(shop: Shop, browser: BrowserThread) -> None:
    server, user = shop.server, str(uuid.uuid4())

    def steps(page: Page) -> None:
        enroll_on_page(page, shop, user)
        started = initiate(shop, user)
        page.goto(f"{origin(server)}/pay/{started['session_id']}")
        page.wait_for_selector("#answers:not([hidden])")
        text = pay_on_page(page, started, answers={**ANSWERS, "PIN": "0000"}, outcome="error")
        assert text == "Verification failed. Attempts left: 2."
        assert not any(factor in text for factor in ANSWERS)
        shot(page, f"4-wrong-pin-{shop.payee}")

    browser.on_page(steps)


#: Hides the browser's own WebAuthn JSON methods, so that the page takes its fallback.
WITHOUT_NATIVE_JSON = (
    "delete PublicKeyCredential.parseCreationOptionsFromJSON;"
    "delete PublicKeyCredential.parseRequestOptionsFromJSON;"
)


@pytest.mark.parametrize("webauthn", ["native", "fallback"])
def test_enroll_with_a_passkey_and_pay_with_both_factors(
    shop: Shop, browser: BrowserThread, webauthn: str
) -> None:
    """With the browser's PublicKeyCredential.parse*FromJSON and toJSON(), and with the
    page's own conversions where a browser has none."""
    server, user = shop.server, str(uuid.uuid4())

    def steps(page: Page) -> None:
        if webauthn == "fallback":
            page.add_init_script(WITHOUT_NATIVE_JSON)
        with_authenticator(page)
        enroll_on_page(page, shop, user, passkey=True)
        assert page.text_content("#result") == "Enrolled 3 factors and a passkey."
        assert page.evaluate("zeropay.webauthn.path") == webauthn
        shot(page, f"5-enrolled-with-passkey-{shop.payee}")
        started = initiate(shop, user)
        assert started["required_factors"][-1] == "PASSKEY"
        page.goto(f"{origin(server)}/pay/{started['session_id']}")
        page.wait_for_selector("#passkey:not([hidden])")
        signed = page.text_content("#passkey")
        assert signed == f"Your passkey will sign: €42.50 to {shop.payee_name}."
        shot(page, f"6-passkey-will-sign-{shop.payee}")
        assert pay_on_page(page, started) == "Payment authorised."
        assert page.evaluate("zeropay.webauthn.path") == webauthn
        shot(page, f"7-authorised-with-passkey-{shop.payee}")
        status = httpx.get(f"{server.url}/v1/verification/status/{started['session_id']}")
        assert status.json()["status"] == "verified"

    browser.on_page(steps)


def test_a_passkey_signature_over_another_amount_is_refused(
    shop: Shop, browser: BrowserThread
) -> None:
    """A tampered page (its status answer rewritten in flight) has the passkey sign 4250 EUR
    for a session of 42.5 EUR: the server refuses it as one more failed attempt."""
    server, user = shop.server, str(uuid.uuid4())

    def tamper(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        linked = body["passkey"]["linked_data"]
        forged = LinkedData(
            session_id=linked["session_id"],
            amount=425000,
            currency=linked["currency"],
            payee=linked["payee"],
            attempt=linked["attempt"],
        )
        body["passkey"]["options"]["challenge"] = b64url(forged.challenge())
        body["passkey"]["linked_data"] = {**linked, "amount": 425000}
        route.fulfill(response=response, json=body)

    def steps(page: Page) -> None:
        with_authenticator(page)
        enroll_on_page(page, shop, user, passkey=True)
        started = initiate(shop, user)
        page.route("**/v1/verification/status/*", tamper)
        page.goto(f"{origin(server)}/pay/{started['session_id']}")
        page.wait_for_selector("#passkey:not([hidden])")
        assert "€4,250.00" in (page.text_content("#passkey") or "")
        refused = pay_on_page(page, started, outcome="error")
        assert refused == "Verification failed. Attempts left: 2."
        shot(page, f"8-other-amount-refused-{shop.payee}")
        status = httpx.get(f"{server.url}/v1/verification/status/{started['session_id']}")
        assert (status.json()["status"], status.json()["attempts_used"]) == ("pending", 1)

    browser.on_page(steps)


def test_amounts_are_exact_minor_units_in_the_payers_locale(
    shop: Shop, browser: BrowserThread
) -> None:
    def steps(page: Page) -> None:
        page.goto(f"{origin(shop.server)}/enroll")
        cases = [
            ([4250, "EUR", 2], "€42.50"),
            ([500, "JPY", 0], "¥500"),
            ([1250, "KWD", 3], "KWD\u00a01.250"),
            ([5, "EUR", 2], "€0.05"),
            ([999999999999999, "EUR", 2], "€9,999,999,999,999.99"),  # no float rounding
        ]
        for args, shown in cases:
            formatted = page.evaluate("(a) => zeropay.formatAmount(...a)", args)
            assert formatted == shown, args

    browser.on_page(steps)


def test_the_pay_page_sends_the_payer_back_to_the_merchant(
    shop: Shop, browser: BrowserThread
) -> None:
    """After the verification the page goes to ``return_url`` with the session and its
    status (a courtesy: the shop confirms with the API)."""
    server, user = shop.server, str(uuid.uuid4())

    def steps(page: Page) -> None:
        arrived = shop_site(page)
        enroll_on_page(page, shop, user)
        started = initiate(shop, user, return_url="https://shop.example/done?order=7")
        page.goto(f"{origin(server)}/pay/{started['session_id']}")
        page.wait_for_selector("#answers:not([hidden])")
        assert pay_on_page(page, started) == "Payment authorised."
        page.wait_for_url("https://shop.example/**")
        query = parse_qs(urlsplit(arrived[-1]).query)
        assert query == {
            "order": ["7"],
            "session_id": [started["session_id"]],
            "status": ["verified"],
        }
        status = httpx.get(f"{server.url}/v1/verification/status/{started['session_id']}")
        assert status.json()["status"] == "verified"  # what the shop checks, server-side

    browser.on_page(steps)
