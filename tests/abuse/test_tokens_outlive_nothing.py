"""Tokens never outlive what they prove: an enrollment change (its factors or its passkeys)
ends every token issued before it, including one minted by a verification that was still
in flight when the change was made.

Found by attack: a verify with the old factors racing a PUT update with new ones left, in 4
of 60 rounds, a token that still validated after both had answered (the update replaced the
row, then revoked tokens; the conclusion minted one without checking the enrollment), and
one such token changed the enrollment back to the old factors. And after a passkey was added
or deleted the user's tokens stayed valid, so a stolen strong token could re-register a
passkey the user had just deleted.
"""

from __future__ import annotations

import uuid
from typing import Any

import trio

from tests.authenticator import SoftAuthenticator, b64decode
from tests.helpers import answers
from tests.server.harness import FACTORS, Harness, running_app
from zeropay_proto import b64url, derive_and_unwrap

ORIGIN = "http://localhost:8080"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _valid(h: Harness, user: str, token: str) -> bool:
    answer = await h.call("GET", "/v1/session/validate", headers=_bearer(token))
    return answer.status == 200 and answer.body.get("user_uuid", user) == user


async def test_a_verify_racing_an_update_mints_no_token_that_outlives_it() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        assert (await h.enroll(user)).status == 201
        step_up, _ = await h.verified_token(user)
        started = await h.initiate(user)
        in_crypto, updated = trio.Event(), trio.Event()
        real = h.runtime.crypto._run_sync

        async def paused(function: Any, *args: Any, limiter: Any = None) -> Any:
            """The verify's derivation waits until the update has answered: the widest
            possible race, made deterministic."""
            if function is derive_and_unwrap:
                in_crypto.set()
                await updated.wait()
            return await real(function, *args, limiter=limiter)

        h.runtime.crypto._run_sync = paused
        verified: dict[str, Any] = {}

        async def verify_with_old_factors() -> None:
            verified["answer"] = await h.pay(user, started.body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(verify_with_old_factors)
            await in_crypto.wait()
            body = {
                "user_uuid": user,
                "factors": answers(user, list(FACTORS), "new"),
                "device_id": "phone-2",
            }
            update = await h.call("PUT", "/v1/enrollment/update", body, headers=_bearer(step_up))
            assert update.status == 200, update.text
            updated.set()
        h.runtime.crypto._run_sync = real
        answer = verified["answer"]
        # The old factors proved an enrollment that no longer exists: a failure, no token.
        assert answer.status == 401, answer.text
        assert "auth_token" not in answer.body
        assert not await _valid(h, user, step_up)
        fresh, _ = await h.verified_token_with(user, "new")
        assert await _valid(h, user, fresh)


async def _registered(h: Harness, user: str, token: str, device: SoftAuthenticator) -> int:
    options = await h.call(
        "POST", "/v1/passkeys/options", {"user_uuid": user}, headers=_bearer(token)
    )
    if options.status != 200:
        return options.status
    credential = device.register(
        "localhost", ORIGIN, b64decode(options.body["options"]["challenge"])
    )
    done = await h.call(
        "POST",
        "/v1/passkeys",
        {"user_uuid": user, "credential": credential},
        headers=_bearer(token),
    )
    return done.status


async def test_adding_or_deleting_a_passkey_ends_the_users_tokens() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        assert (await h.enroll(user)).status == 201
        token, _ = await h.verified_token(user)
        stolen, _ = await h.verified_token(user)  # a second strong token, in a thief's hands
        device = SoftAuthenticator(credential_id=b"phone")
        assert await _registered(h, user, token, device) == 201
        assert not await _valid(h, user, token)
        assert not await _valid(h, user, stolen)
        token, _ = await h.verified_token(user)
        stolen, _ = await h.verified_token(user)
        path = f"/v1/passkeys/{user}/{b64url(b'phone')}"
        assert (await h.call("DELETE", path, headers=_bearer(token))).status == 200
        # The thief cannot put the deleted passkey back with a token from before the delete.
        assert await _registered(h, user, stolen, device) == 401
        assert await h.runtime.durable.passkeys(user) == []
