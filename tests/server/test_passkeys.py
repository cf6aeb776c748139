"""Passkey registration through the API: options, the browser's response, list and delete,
each behind a strong, fresh token of the user; a software authenticator plays the browser."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from tests.authenticator import SoftAuthenticator
from tests.helpers import answers
from tests.server.harness import Harness, running_app
from zeropay_proto import b64url
from zeropay_proto.passkeys import MAX_PASSKEYS_PER_USER

ORIGIN = "http://localhost:8080"


async def _enrolled_with_token(h: Harness) -> tuple[str, dict[str, str]]:
    user = str(uuid.uuid4())
    assert (await h.enroll(user)).status == 201
    token, _ = await h.verified_token(user)
    return user, {"Authorization": f"Bearer {token}"}


async def _register(
    h: Harness, user: str, auth: dict[str, str], device: SoftAuthenticator, origin: str = ORIGIN
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    options = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
    assert options.status == 200, options.text
    challenge = options.body["options"]["challenge"]
    response = device.register("localhost", origin, _b64decode(challenge))
    done = await h.call(
        "POST", "/v1/passkeys", {"user_uuid": user, "credential": response}, headers=auth
    )
    return options.body["options"], done.status, done.body


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_register_list_and_delete_a_passkey() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        device = SoftAuthenticator(credential_id=b"phone-passkey")
        options, status, body = await _register(h, user, auth, device)
        assert options["rp"] == {"id": "localhost", "name": "ZeroPay"}
        assert status == 201, body
        assert body["passkey"]["credential_id"] == b64url(b"phone-passkey")
        listed = await h.call("GET", f"/v1/passkeys/{user}", headers=auth)
        assert [p["credential_id"] for p in listed.body["passkeys"]] == [b64url(b"phone-passkey")]
        again = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
        excluded = [c["id"] for c in again.body["options"]["excludeCredentials"]]
        assert excluded == [b64url(b"phone-passkey")]
        path = f"/v1/passkeys/{user}/{b64url(b'phone-passkey')}"
        assert (await h.call("DELETE", path, headers=auth)).status == 200
        gone = await h.call("DELETE", path, headers=auth)
        assert (gone.status, gone.body["code"]) == (404, "PASSKEY_NOT_FOUND")
        listed = await h.call("GET", f"/v1/passkeys/{user}", headers=auth)
        assert listed.body["passkeys"] == []


async def test_a_challenge_answers_one_registration_and_a_wrong_origin_none() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        _, status, body = await _register(
            h, user, auth, SoftAuthenticator(credential_id=b"x1"), origin="https://evil.example"
        )
        assert (status, body["code"]) == (400, "PASSKEY_INVALID")
        replay = SoftAuthenticator(credential_id=b"x2").register("localhost", ORIGIN, bytes(32))
        late = await h.call(
            "POST", "/v1/passkeys", {"user_uuid": user, "credential": replay}, headers=auth
        )
        assert (late.status, late.body["code"]) == (409, "NO_PASSKEY_CHALLENGE")


async def test_the_limit_per_user_holds() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        for n in range(MAX_PASSKEYS_PER_USER):
            _, status, _ = await _register(
                h, user, auth, SoftAuthenticator(credential_id=bytes([n]))
            )
            assert status == 201
        full = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
        assert (full.status, full.body["code"]) == (409, "TOO_MANY_PASSKEYS")


async def test_registering_needs_a_strong_token_of_the_user() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        other, _ = await _enrolled_with_token(h)
        body = {"user_uuid": user}
        bare = await h.call("POST", "/v1/passkeys/options", body)
        assert bare.status == 401
        foreign = await h.call("POST", "/v1/passkeys/options", {"user_uuid": other}, headers=auth)
        assert foreign.status == 401
        started = await h.initiate(user, transaction_amount=5, risk_level="LOW")
        weak = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        weak_auth = {"Authorization": f"Bearer {weak.body['auth_token']}"}
        refused = await h.call("POST", "/v1/passkeys/options", body, headers=weak_auth)
        assert (refused.status, refused.body["code"]) == (403, "STEP_UP_REQUIRED")
        bad_id = await h.call("DELETE", f"/v1/passkeys/{user}/not*base64", headers=auth)
        assert (bad_id.status, bad_id.body["code"]) == (400, "INVALID_CREDENTIAL_ID")
