"""Every state of the payer's pages, in Chromium at a phone's width (390 px) and a laptop's
(1280 px), under the pages' own CSP: each is screenshot into ``.run/screenshots`` and checked
with axe-core (pinned, test-only, from the npm registry) for no serious or critical
violation; and a payer pays and enrolls with the keyboard alone.

The pay page's states: loading, invalid link, pending (the form and the countdown), a wrong
answer, the service unavailable (answers kept), account locked, attempts exhausted, expired,
verified (a receipt, then back to the shop). The enroll page's: the demo form (development
server), the merchant's link, an invalid link, no link (production), an error, enrolled.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route

from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_pages import (
    ANSWERS,
    BrowserThread,
    Shop,
    answer,
    browser,
    enroll_url,
    initiate,
    origin,
    shop,
    shop_site,
)
from tests.e2e.servers import DEMO_MERCHANT_KEY, running_server

__all__ = ["browser", "shop"]  # the fixtures, shared with the pages' flows

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / ".run" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
#: Where each state's axe-core result is appended (one JSON line per page, state and width).
AXE_REPORT = Path(os.environ.get("ZEROPAY_AXE_REPORT", ROOT / ".run" / "axe.jsonl"))
WIDTHS = (390, 1280)
WRONG = {"PIN": "0000", "COLOUR": "red", "WORDS": "wrong words"}

pytestmark = pytest.mark.skipif(
    not AXE.exists(), reason=f"NO AXE-CORE AT {AXE}: scripts/test installs it (npm)"
)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it stands (injected through the DevTools
    protocol, which the page's CSP does not govern: the page itself runs only its own
    script)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then((r) => r.violations.map("
        "(v) => ({id: v.id, impact: v.impact, nodes: v.nodes.length})))"
    )
    return result  # type: ignore[return-value]


def record(page: Page, name: str, state: str) -> None:
    """The state at each width: a screenshot, and axe-core finding nothing serious."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    AXE_REPORT.parent.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 844 if width == 390 else 800})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{state}-{width}.png"), full_page=True)
        violations = axe_violations(page)
        impacts = {
            impact: sum(1 for v in violations if v["impact"] == impact)
            for impact in ("minor", "moderate", "serious", "critical")
        }
        with AXE_REPORT.open("a") as sink:
            sink.write(json.dumps({"page": name, "state": state, "width": width, **impacts}))
            sink.write("\n")
        grave = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert not grave, (name, state, width, grave)


def poll(page: Page, holds: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        page.wait_for_timeout(25)


def enrolled_user(page: Page, shop: Shop) -> str:
    """A user enrolled with ANSWERS through the API (the page's states are what is tested)."""
    user = str(uuid.uuid4())
    page.goto(enroll_url(shop, user))
    page.wait_for_selector("#enrollment:not([hidden])")
    if shop.embedded:
        page.fill("input[name=user_uuid]", user)
    for factor, value in ANSWERS.items():
        answer(page, factor, value)
    page.click("button[type=submit]")
    page.wait_for_selector("#result.ok")
    return user


def open_pay_page(page: Page, shop: Shop, user: str, **extra: Any) -> dict[str, Any]:
    started = initiate(shop, user, **extra)
    page.goto(f"{origin(shop.server)}/pay/{started['session_id']}")
    page.wait_for_selector("#answers:not([hidden])")
    return started


def answer_all(page: Page, started: dict[str, Any], answers: dict[str, str]) -> None:
    for factor in started["required_factors"]:
        if factor != "PASSKEY":
            answer(page, factor, answers[factor])


def submit_and_wait(page: Page, outcome: str = "error") -> str:
    page.click("button[type=submit]")
    page.wait_for_selector(f"#result.{outcome}")
    return page.text_content("#result") or ""


@pytest.fixture
def page_shop(shop: Shop) -> Shop:
    """The shop whose pages show what every backend's show: the development server's (the
    backend changes nothing on the page but the enrollment link, tested on both)."""
    if not shop.embedded:
        pytest.skip("the same page on every backend: shown on the embedded one")
    return shop


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A development server whose sessions live 2 seconds: a session left alone expires."""
    env = {
        "PBKDF2_ITERATIONS": "1000",
        "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY,
        "REDIS_SESSION_TTL": "2",
    }
    with running_server(env, tmp_path_factory.mktemp("short")) as running:
        yield Shop(running, DEMO_MERCHANT_KEY, "demo-shop", "Demo Shop", embedded=True)


def test_the_pay_page_in_every_state(
    page_shop: Shop, short_lived: Shop, browser: BrowserThread
) -> None:
    shop = page_shop

    def steps(page: Page) -> None:
        user = enrolled_user(page, shop)
        # Loading: the status answer held back.
        held: list[Route] = []
        page.route("**/v1/verification/status/*", lambda route: held.append(route))
        started = initiate(shop, user, return_url="https://shop.example/done")
        page.goto(f"{origin(shop.server)}/pay/{started['session_id']}")
        poll(page, lambda: bool(held), "the status request")
        assert page.locator("#answers").is_hidden()
        record(page, "pay", "loading")
        held[0].continue_()
        page.unroute("**/v1/verification/status/*")
        page.wait_for_selector("#answers:not([hidden])")
        countdown = page.text_content("#countdown") or ""
        assert countdown.startswith("Expires in 4:5") or countdown.startswith("Expires in 5:0")
        assert page.locator("#passkey").is_hidden()  # no empty box where no passkey signs
        assert page.text_content("#payee") == shop.payee_name
        record(page, "pay", "pending")
        # A wrong answer: generic, and the form stays for the next attempt.
        answer_all(page, started, WRONG)
        assert submit_and_wait(page) == "Verification failed. Attempts left: 2."
        assert page.evaluate("document.activeElement.id") == "result"  # focus moved to it
        assert page.locator("#controls").is_enabled()
        record(page, "pay", "wrong-answer")
        # The service unavailable: the answers typed are kept.
        page.route(
            "**/v1/verification/verify",
            lambda route: route.fulfill(
                status=503,
                content_type="application/problem+json",
                headers={"Retry-After": "1"},
                body=json.dumps({"status": 503, "code": "SERVICE_UNAVAILABLE", "retry_after": 1}),
            ),
        )
        page.fill("[data-factor=PIN] input", "4827")
        text = submit_and_wait(page)
        assert text.startswith("We could not check your answers just now.")
        assert page.input_value("[data-factor=PIN] input") == "4827"
        assert page.locator("#controls").is_enabled()
        record(page, "pay", "unavailable")
        page.unroute("**/v1/verification/verify")
        # Attempts exhausted: two more wrong answers close the session.
        for _ in range(2):
            answer_all(page, started, WRONG)
            text = submit_and_wait(page)
        assert text == "No attempts left: this payment was not authorised."
        assert page.locator("#answers").is_hidden()
        assert page.get_attribute("#back", "href") == (
            f"https://shop.example/done?session_id={started['session_id']}&status=failed"
        )
        record(page, "pay", "exhausted")
        # Locked: two wrong answers in a new session make five; the sixth is refused.
        started = open_pay_page(page, shop, user, return_url="https://shop.example/done")
        for _ in range(3):
            answer_all(page, started, WRONG)
            text = submit_and_wait(page)
        assert text == "Too many failed attempts. Try again in 15 min."
        assert page.locator("#answers").is_hidden()
        record(page, "pay", "locked")
        # Invalid: a malformed link and an unknown session say so, with no form.
        for link in ("not-a-session", "A" * 43):
            page.goto(f"{origin(shop.server)}/pay/{link}")
            page.wait_for_selector("#result.error")
            assert page.text_content("#result") == (
                "This payment link is not valid. Check the link the shop sent you."
            )
            assert page.locator("#answers").is_hidden()
        record(page, "pay", "invalid")

    browser.on_page(steps)

    def verified_and_expired(page: Page) -> None:
        arrived = shop_site(page)
        user = enrolled_user(page, short_lived)
        # Expired: a session left alone past its life; the countdown ends it.
        started = open_pay_page(page, short_lived, user, return_url="https://shop.example/done")
        page.wait_for_selector("#result.error")
        assert page.text_content("#result") == (
            "This payment request has expired. Nothing was authorised."
        )
        assert page.get_attribute("#back", "href", timeout=1000) == (
            f"https://shop.example/done?session_id={started['session_id']}&status=expired"
        )
        record(page, "pay", "expired")
        # Verified: a receipt, and back to the shop after a countdown.
        started = initiate(short_lived, user, return_url="https://shop.example/done")
        page.goto(f"{origin(short_lived.server)}/pay/{started['session_id']}")
        page.wait_for_selector("#answers:not([hidden])")
        answer_all(page, started, ANSWERS)
        assert submit_and_wait(page, "ok") == "Payment authorised."
        assert page.text_content("#receipt-amount") == "€42.50"
        assert page.text_content("#receipt-payee") == "Demo Shop"
        assert (page.text_content("#returning") or "").startswith("Back to the shop in ")
        record(page, "pay", "verified")
        page.wait_for_url("https://shop.example/**")
        assert arrived[-1].endswith(f"session_id={started['session_id']}&status=verified")

    browser.on_page(verified_and_expired)


def test_the_enroll_page_in_every_state(shop: Shop, browser: BrowserThread) -> None:
    name = "enroll" if shop.embedded else "enroll-production"

    def steps(page: Page) -> None:
        if not shop.embedded:
            page.goto(f"{origin(shop.server)}/enroll")
            page.wait_for_selector("#result.error")
            assert page.text_content("#result") == "Open the enrollment link your shop sent you."
            assert page.locator("#enrollment").is_hidden()
            record(page, name, "no-link")
            page.goto(f"{origin(shop.server)}/enroll?grant=zpg_forged")
            page.wait_for_selector("#result.error")
            assert page.text_content("#result") == (
                "This enrollment link is not valid or has expired. Ask the shop for a new one."
            )
            record(page, name, "invalid-link")
        user = str(uuid.uuid4())
        page.goto(enroll_url(shop, user))
        page.wait_for_selector("#enrollment:not([hidden])")
        assert page.locator("#demo").is_visible() is shop.embedded
        record(page, name, "form")
        page.set_viewport_size({"width": 390, "height": 844})
        answer(page, "PIN", "4827")
        page.click("button[type=submit]")
        page.wait_for_selector("#result.error")
        assert page.text_content("#result") == "Answer at least three factors."
        # At a phone's width the message is where the payer is taken: focused, on screen.
        assert page.evaluate("document.activeElement.id") == "result"
        box = page.locator("#result").bounding_box()
        assert box is not None
        assert 0 <= box["y"] < 844
        record(page, name, "error")
        if shop.embedded:
            page.fill("input[name=user_uuid]", user)
        for factor, value in ANSWERS.items():
            answer(page, factor, value)
        page.click("button[type=submit]")
        page.wait_for_selector("#result.ok")
        assert page.locator("#enrollment").is_hidden()
        record(page, name, "enrolled")

    browser.on_page(steps)


def test_pickers_are_radio_groups_of_named_44_pixel_choices(
    page_shop: Shop, browser: BrowserThread
) -> None:
    shop = page_shop

    def steps(page: Page) -> None:
        page.goto(f"{origin(shop.server)}/enroll")
        page.wait_for_selector("#enrollment:not([hidden])")
        for factor, count in (("COLOUR", 16), ("EMOJI", 20)):
            radios = page.locator(f"[data-factor={factor}] [role=radio]")
            assert radios.count() == count
            assert page.locator(f"[data-factor={factor}] [role=radio][tabindex='0']").count() == 1
            for index in range(count):
                radio = radios.nth(index)
                assert radio.get_attribute("aria-label")
                box = radio.bounding_box()
                assert box is not None
                assert box["width"] >= 44
                assert box["height"] >= 44
        labels = page.evaluate(
            "[...document.querySelectorAll('input:not([type=hidden])')]"
            ".every((i) => i.labels && i.labels.length === 1 && i.labels[0].offsetParent)"
        )
        assert labels  # every input has one visible label

    browser.on_page(steps)


def tab_to(page: Page, selector: str, limit: int = 40) -> int:
    """Press Tab until the focus is on ``selector``; how many presses it took."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return presses
    raise AssertionError(f"Tab never reached {selector}")


def pick_with_keys(page: Page, factor: str, names: list[str], palette: list[str]) -> None:
    """Choose ``names`` in a picker with arrows and Space, the focus already in it."""
    for name in names:
        at = page.evaluate("document.activeElement.dataset.pick")
        moves = palette.index(name) - palette.index(at)
        for _ in range(abs(moves)):
            page.keyboard.press("ArrowRight" if moves > 0 else "ArrowLeft")
        assert page.evaluate("document.activeElement.dataset.pick") == name
        page.keyboard.press("Space")


COLOURS = [
    "red",
    "orange",
    "amber",
    "yellow",
    "lime",
    "green",
    "teal",
    "cyan",
    "blue",
    "indigo",
    "violet",
    "pink",
    "brown",
    "grey",
    "black",
    "white",
]


def type_answer_with_keys(page: Page, factor: str, value: str) -> None:
    if factor == "COLOUR":
        tab_to(page, "[data-factor=COLOUR] [role=radio][tabindex='0']")
        pick_with_keys(page, factor, value.split(","), COLOURS)
        # The whole group is one Tab stop: the next one is the group's "remove" button.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "secondary"
    else:
        tab_to(page, f"[data-factor={factor}] input")
        page.keyboard.type(value)


def test_a_payer_enrolls_and_pays_with_the_keyboard_alone(
    page_shop: Shop, browser: BrowserThread
) -> None:
    shop = page_shop

    def steps(page: Page) -> None:
        user = str(uuid.uuid4())
        page.goto(f"{origin(shop.server)}/enroll")
        page.wait_for_selector("#enrollment:not([hidden])")
        tab_to(page, "input[name=user_uuid]")
        page.keyboard.press("Control+A")
        page.keyboard.type(user)
        for factor in ("PIN", "COLOUR", "WORDS"):
            type_answer_with_keys(page, factor, ANSWERS[factor])
        assert page.text_content("[data-factor=COLOUR] .chosen") == "Chosen: teal, amber"
        tab_to(page, "button[type=submit]")
        page.keyboard.press("Enter")
        page.wait_for_selector("#result.ok")
        assert page.text_content("#result") == "Enrolled 3 factors."
        started = initiate(shop, user)
        page.goto(f"{origin(shop.server)}/pay/{started['session_id']}")
        page.wait_for_selector("#answers:not([hidden])")
        for factor in started["required_factors"]:
            type_answer_with_keys(page, factor, ANSWERS[factor])
        tab_to(page, "button[type=submit]")
        page.keyboard.press("Enter")
        page.wait_for_selector("#result.ok")
        assert page.text_content("#result") == "Payment authorised."

    browser.on_page(steps)


def test_the_pages_speak_german_when_the_browser_asks(
    page_shop: Shop, browser: BrowserThread
) -> None:
    shop = page_shop

    def steps(page: Page) -> None:
        user = enrolled_user(page, shop)
        started = open_pay_page(page, shop, user)
        assert page.text_content("h1") == "Diese Zahlung freigeben"
        assert page.text_content("#amount") == "42,50\u00a0€"
        assert (page.text_content("#countdown") or "").startswith("Läuft ab in ")
        assert page.text_content("[data-factor=PIN] label") == "Ihre PIN"
        record(page, "pay-de", "pending")
        # The switch on the page: English, keeping the page's address.
        page.click("a[data-lang=en]")
        page.wait_for_selector("#answers:not([hidden])")
        assert page.url.endswith(f"/pay/{started['session_id']}?lang=en")
        assert page.text_content("h1") == "Authorise this payment"

    browser.on_page(steps, locale="de-DE")  # Chromium then asks for German first
