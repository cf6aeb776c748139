"""The SDK README's integration runs as written against a real server: the merchant starts
a checkout, the payer (here, the SDK on the payer's behalf) verifies, the merchant confirms."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from zeropay_client import ZeroPay, factor_digests

from tests.sdk.conftest import Server

README = Path(__file__).parent.parent.parent / "clients" / "python" / "README.md"
ANSWERS = {"PIN": "1357", "COLOUR": "blue,lime", "WORDS": "quiet harbour"}


def integration() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- integration -->\n```python\n(.*?)```\n<!-- /integration -->", text, re.S
    )
    assert found, "the SDK README's integration is marked <!-- integration -->"
    return found.group(1)


def test_the_integration_is_under_30_lines_and_runs(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = integration()
    assert len(code.strip().splitlines()) < 30
    monkeypatch.setenv("ZEROPAY_URL", server.url)
    monkeypatch.setenv("ZEROPAY_API_KEY", server.api_key)
    merchant: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), merchant)  # noqa: S102 - the README's own code
    user, order = str(uuid.uuid4()), uuid.uuid4().hex
    with ZeroPay(server.url) as payer:
        payer.enroll(user, factor_digests(user, ANSWERS))
        url = merchant["start_checkout"](order, user, 4250)
        assert merchant["start_checkout"](order, user, 4250) == url  # a retry: the same
        session_id = url.rsplit("/", 1)[1]
        assert merchant["on_return"](session_id) is False  # not paid yet, whatever the query
        done = payer.verify(session_id, user, factor_digests(user, ANSWERS))
    assert merchant["on_return"](session_id) is True
    assert merchant["on_return"](session_id, done["receipt_jws"]) is True
    merchant["zp"].close()
