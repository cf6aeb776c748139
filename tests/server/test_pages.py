"""The payer's pages are served as files, and the status a page reads shows the payment."""

from __future__ import annotations

import uuid

from tests.server.harness import running_app


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
