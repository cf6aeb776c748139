"""The payer's pages are served in the payer's language, and the status a page reads shows
the payment; a merchant's enrollment link enrolls its user once, and never replaces factors."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.helpers import answers
from tests.server.harness import running_app
from zeropay_server.pages import LANGUAGES, choose_language, data_block, render, strings


async def test_the_pages_and_their_assets_are_served_and_nothing_else() -> None:
    async with running_app() as h:
        enroll = await h.call("GET", "/enroll")
        assert enroll.status == 200
        assert enroll.headers["Content-Type"].startswith("text/html")
        assert "/static/zeropay.js" in enroll.text
        script = await h.call("GET", "/static/zeropay.js")
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert (await h.call("GET", "/static/style.css")).status == 200
        missing = await h.call("GET", "/static/..%2fapp.py")
        assert missing.status == 404
        pay = await h.call("GET", "/pay/anything")
        assert pay.status == 200  # the page asks the API, which judges the session id
        assert pay.headers["Content-Language"] == "en"
        assert pay.headers["Vary"] == "Accept-Language"
        german = await h.call("GET", "/pay/anything", headers={"Accept-Language": "de-CH,de;q=0.9"})
        assert german.headers["Content-Language"] == "de"
        assert '<html lang="de">' in german.text
        assert "Diese Zahlung freigeben" in german.text
        chosen = await h.call("GET", "/enroll?lang=en", headers={"Accept-Language": "de"})
        assert '<html lang="en">' in chosen.text  # the payer's own choice wins


def test_every_language_has_every_string_and_the_same_placeholders() -> None:
    english = strings("en")
    for language in LANGUAGES:
        table = strings(language)
        assert set(table) == set(english), language
        for key, text in english.items():
            assert re.findall(r"\{(\w+)\}", table[key]) == re.findall(r"\{(\w+)\}", text), key
        for template in ("pay.html", "enroll.html"):
            page = render(template, language, demo=False).decode()
            assert "{{" not in page, (language, template)
            data = page.split('id="strings">', 1)[1].split("</script>", 1)[0]
            assert json.loads(data) == table


@pytest.mark.parametrize(
    ("header", "asked", "language"),
    [
        (None, None, "en"),
        ("de-DE,de;q=0.9,en;q=0.8", None, "de"),
        ("fr-FR, en;q=0.5, de;q=0.7", None, "de"),
        ("de;q=0, en;q=0.1", None, "en"),
        ("*", None, "en"),
        ("de;q=oops", None, "en"),
        ("de", "en", "en"),
        ("en", "xx", "en"),
    ],
)
def test_the_language_is_the_payers_choice_else_their_browsers(
    header: str | None, asked: str | None, language: str
) -> None:
    assert choose_language(header, asked) == language


def test_a_page_quotes_its_strings_as_data_never_as_markup() -> None:
    hostile = {"a": "</script><script>alert(1)</script> & more"}
    block = data_block(hostile)
    assert not set(block) & set("<>&")
    assert json.loads(block) == hostile


async def test_the_status_shows_what_the_payer_is_asked_to_authorise() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        await h.enroll(user)
        started = await h.initiate(user, amount=4250, currency="EUR")
        status = await h.call("GET", f"/v1/verification/status/{started.body['session_id']}")
        assert status.body["required_factors"] == started.body["required_factors"]
        assert status.body["payment"] == {
            "amount": 4250,
            "currency": "EUR",
            "exponent": 2,
            "payee": "demo-shop",
            "payee_name": "Demo Shop",  # what the payer reads
        }


async def test_the_status_gives_the_pay_page_the_way_back_to_the_merchant() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        back, cancel = "http://127.0.0.1:9000/done?order=7", "https://shop.example/cart"
        started = await h.initiate(user, return_url=back, cancel_url=cancel)
        assert started.status == 200, started.text
        status = await h.call("GET", f"/v1/verification/status/{started.body['session_id']}")
        assert (status.body["return_url"], status.body["cancel_url"]) == (back, cancel)
        refused = await h.initiate(user, return_url="http://shop.example/done")
        assert (refused.status, refused.body["field"]) == (400, "return_url")


async def test_a_merchants_enrollment_link_enrolls_its_user_once() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        made = await h.call("POST", "/v1/enrollment/grants", {"user_uuid": user})
        assert made.status == 201, made.text
        grant = made.body["grant"]
        assert made.body["enroll_url"] == f"/enroll?grant={grant}"
        assert 0 < made.body["expires_in"] <= 900
        read = await h.call("GET", f"/v1/enrollment/grants/{grant}")
        assert (read.status, read.body["user_uuid"]) == (200, user)
        enrolled = await h.enroll(user, grant=grant)
        assert enrolled.status == 201, enrolled.text
        # Once: even after the user deletes their enrollment, the link enrolls no one.
        token = (await h.pay(user, (await h.initiate(user)).body)).body["auth_token"]
        deleted = await h.call(
            "DELETE", f"/v1/enrollment/delete/{user}", headers={"Authorization": f"Bearer {token}"}
        )
        assert deleted.status == 200, deleted.text
        again = await h.enroll(user, grant=grant)
        assert (again.status, again.body["code"]) == (409, "GRANT_USED")
        assert (await h.enroll(user)).status == 201  # the user may enroll anew themself


async def test_a_grant_never_replaces_factors_nor_enrolls_another_user() -> None:
    async with running_app() as h:
        user, other = str(uuid.uuid4()), str(uuid.uuid4())
        await h.enroll(user)
        grant = (await h.call("POST", "/v1/enrollment/grants", {"user_uuid": user})).body["grant"]
        taken = await h.enroll(user, grant=grant)
        assert (taken.status, taken.body["code"]) == (409, "ALREADY_ENROLLED")
        stolen = await h.enroll(other, grant=grant)
        assert (stolen.status, stolen.body["code"], stolen.body["field"]) == (
            400,
            "GRANT_INVALID",
            "grant",
        )
        forged = grant[:-4] + ("AAAA" if not grant.endswith("AAAA") else "BBBB")
        for bad in (forged, "zpg_", "zpg_!!"):
            refused = await h.call("GET", f"/v1/enrollment/grants/{bad}")
            assert (refused.status, refused.body["code"]) == (400, "GRANT_INVALID"), bad
        unsigned = await h.call(
            "POST", "/v1/enrollment/grants", {"user_uuid": user}, headers={"X-API-Key": ""}
        )
        assert unsigned.status == 401  # merchants only
        factors = answers(user, ["PIN", "COLOUR", "EMOJI"])
        update = {"user_uuid": user, "factors": factors, "device_id": "d", "grant": grant}
        replaced = await h.call("PUT", "/v1/enrollment/update", update)
        # A grant never stands in for the user's token.
        assert (replaced.status, replaced.body["field"]) == (400, "grant")
