"""Passkeys through the API: registration (options, the browser's response, list and delete,
each behind a strong, fresh token of the user), then payments that the passkey signs; a
software authenticator plays the browser."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.authenticator import SoftAuthenticator, b64decode
from tests.helpers import answers
from tests.server.harness import Harness, running_app
from zeropay_proto import b64url
from zeropay_proto.audit import AuditAction
from zeropay_proto.passkeys import (
    MAX_PASSKEYS_PER_USER,
    LinkedData,
    PossessionPolicy,
    decoy_credential_ids,
)
from zeropay_proto.receipt import RECEIPT_DOMAIN
from zeropay_server.runtime import DEMO_MERCHANT_ID

ORIGIN = "http://localhost:8080"


async def _enrolled_with_token(h: Harness) -> tuple[str, dict[str, str]]:
    user = str(uuid.uuid4())
    assert (await h.enroll(user)).status == 201
    return user, await _fresh_token(h, user)


async def _fresh_token(h: Harness, user: str) -> dict[str, str]:
    """A new strong token: every passkey change ends the tokens issued before it."""
    token, _ = await h.verified_token(user)
    return {"Authorization": f"Bearer {token}"}


async def _register(
    h: Harness, user: str, auth: dict[str, str], device: SoftAuthenticator, origin: str = ORIGIN
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    options = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
    assert options.status == 200, options.text
    challenge = options.body["options"]["challenge"]
    response = device.register("localhost", origin, b64decode(challenge))
    done = await h.call(
        "POST", "/v1/passkeys", {"user_uuid": user, "credential": response}, headers=auth
    )
    return options.body["options"], done.status, done.body


async def test_register_list_and_delete_a_passkey() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        device = SoftAuthenticator(credential_id=b"phone-passkey")
        options, status, body = await _register(h, user, auth, device)
        assert options["rp"] == {"id": "localhost", "name": "ZeroPay"}
        assert status == 201, body
        assert body["passkey"]["credential_id"] == b64url(b"phone-passkey")
        assert (await h.call("GET", f"/v1/passkeys/{user}", headers=auth)).status == 401
        auth = await _fresh_token(h, user)
        listed = await h.call("GET", f"/v1/passkeys/{user}", headers=auth)
        assert [p["credential_id"] for p in listed.body["passkeys"]] == [b64url(b"phone-passkey")]
        again = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
        excluded = [c["id"] for c in again.body["options"]["excludeCredentials"]]
        assert excluded == [b64url(b"phone-passkey")]
        path = f"/v1/passkeys/{user}/{b64url(b'phone-passkey')}"
        assert (await h.call("DELETE", path, headers=auth)).status == 200
        auth = await _fresh_token(h, user)
        listed = await h.call("GET", f"/v1/passkeys/{user}", headers=auth)
        assert listed.body["passkeys"] == []
        gone = await h.call("DELETE", path, headers=auth)
        assert (gone.status, gone.body["code"]) == (404, "PASSKEY_NOT_FOUND")


async def test_a_challenge_answers_one_registration_and_a_wrong_origin_none() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        options = await h.call("POST", "/v1/passkeys/options", {"user_uuid": user}, headers=auth)
        challenge = b64decode(options.body["options"]["challenge"])

        async def register(device: SoftAuthenticator, origin: str) -> tuple[int, str]:
            credential = device.register("localhost", origin, challenge)
            done = await h.call(
                "POST", "/v1/passkeys", {"user_uuid": user, "credential": credential}, headers=auth
            )
            return done.status, done.body.get("code", "")

        evil = await register(SoftAuthenticator(credential_id=b"x1"), "https://evil.example")
        assert evil == (400, "PASSKEY_INVALID")  # refused, and the challenge is not spent
        assert (await register(SoftAuthenticator(credential_id=b"x2"), ORIGIN))[0] == 201
        auth.update(await _fresh_token(h, user))  # the registration ended the old token
        late = await register(SoftAuthenticator(credential_id=b"x3"), ORIGIN)
        assert late == (409, "NO_PASSKEY_CHALLENGE")


async def test_the_limit_per_user_holds() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        for n in range(MAX_PASSKEYS_PER_USER):
            _, status, _ = await _register(
                h, user, auth, SoftAuthenticator(credential_id=bytes([n]))
            )
            assert status == 201
            auth = await _fresh_token(h, user)
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
        started = await h.initiate(user, amount=500, currency="EUR", risk_level="LOW")
        weak = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        weak_auth = {"Authorization": f"Bearer {weak.body['auth_token']}"}
        refused = await h.call("POST", "/v1/passkeys/options", body, headers=weak_auth)
        assert (refused.status, refused.body["code"]) == (403, "STEP_UP_REQUIRED")
        bad_id = await h.call("DELETE", f"/v1/passkeys/{user}/not*base64", headers=auth)
        assert (bad_id.status, bad_id.body["code"]) == (400, "INVALID_CREDENTIAL_ID")


# ------------------------------------------------------------------ paying with a passkey


async def _with_passkey(h: Harness) -> tuple[str, SoftAuthenticator]:
    """An enrolled user whose record is already cached (a verification ran), then a passkey."""
    user, auth = await _enrolled_with_token(h)
    device = SoftAuthenticator(credential_id=uuid.uuid4().bytes)
    _, status, body = await _register(h, user, auth, device)
    assert status == 201, body
    return user, device


def _receipt_verifies(receipt: dict[str, Any], jwk: dict[str, Any]) -> bool:
    """A third party's check of a receipt: the JWK from /v1/keys over the canonical fields."""
    fields = {k: v for k, v in receipt.items() if k not in ("signature", "key_id", "alg")}
    canonical = RECEIPT_DOMAIN + json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")
    public = Ed25519PublicKey.from_public_bytes(b64decode(jwk["x"]))
    public.verify(b64decode(receipt["signature"]), canonical)
    return True


async def test_a_payment_over_the_threshold_is_signed_by_the_passkey_and_receipted_as_sca() -> None:
    async with running_app() as h:
        user, device = await _with_passkey(h)
        started = await h.initiate(user, amount=4250, currency="EUR")
        assert started.status == 200, started.text
        assert started.body["required_factors"][-1] == "PASSKEY"
        request = started.body["passkey"]
        assert request["linked_data"] == {
            "session_id": started.body["session_id"],
            "amount": 4250,
            "currency": "EUR",
            "payee": DEMO_MERCHANT_ID,
            "attempt": 1,
        }
        options = request["options"]
        assert [c["id"] for c in options["allowCredentials"]] == [b64url(device.credential_id)]
        assert (options["rpId"], options["userVerification"]) == ("localhost", "required")
        done = await h.pay(user, started.body, device.answer(ORIGIN, request))
        assert done.status == 200, done.text
        receipt = done.body["receipt"]
        assert receipt["sca"] == ["knowledge", "possession"]
        assert receipt["linked_challenge"] == options["challenge"]
        (jwk,) = (await h.call("GET", "/v1/keys")).body["keys"]
        assert _receipt_verifies(receipt, jwk)
        listed = await h.call(
            "GET",
            f"/v1/passkeys/{user}",
            headers={"Authorization": f"Bearer {done.body['auth_token']}"},
        )
        assert listed.body["passkeys"][0]["sign_count"] == 1  # the count was recorded


async def test_a_signature_over_another_amount_is_one_more_failed_attempt() -> None:
    async with running_app() as h:
        user, device = await _with_passkey(h)
        started = await h.initiate(user, amount=4250, currency="EUR")
        session = started.body["session_id"]
        other = LinkedData(
            session_id=session, amount=425000, currency="EUR", payee=DEMO_MERCHANT_ID,
            attempt=1,
        )  # fmt: skip
        forged = device.sign("localhost", ORIGIN, other.challenge())
        failed = await h.pay(user, started.body, forged)
        assert (failed.status, failed.body["code"]) == (401, "VERIFICATION_FAILED")
        assert failed.body["attempts_remaining"] == 2
        for missing in (None, {"id": "x"}):
            refused = await h.pay(user, started.body, missing)
            assert (refused.status, refused.body["code"]) == (401, "VERIFICATION_FAILED")
        status = await h.call("GET", f"/v1/verification/status/{session}")
        assert (status.body["status"], status.body["attempts_remaining"]) == ("failed", 0)
        assert "passkey" not in status.body  # nothing left to sign


async def test_an_assertion_is_good_for_its_own_attempt_only() -> None:
    async with running_app() as h:
        user, device = await _with_passkey(h)
        started = await h.initiate(user, amount=10000, currency="EUR")
        first = device.answer(ORIGIN, started.body["passkey"])
        body = dict(started.body)
        wrong = await h.call(
            "POST",
            "/v1/verification/verify",
            {
                "session_id": body["session_id"],
                "user_uuid": user,
                "factors": answers(
                    user, [f for f in body["required_factors"] if f != "PASSKEY"], "no"
                ),
                "passkey": first,
            },
        )
        assert wrong.status == 401  # possession proven, knowledge wrong
        replayed = await h.pay(user, started.body, first)
        assert replayed.status == 401  # the same assertion, the right answers: refused
        status = await h.call("GET", f"/v1/verification/status/{body['session_id']}")
        request = status.body["passkey"]
        assert request["linked_data"]["attempt"] == 3
        assert request["options"]["challenge"] != started.body["passkey"]["options"]["challenge"]
        done = await h.pay(user, started.body, device.answer(ORIGIN, request))
        assert done.status == 200, done.text


async def test_a_count_that_did_not_rise_is_refused_and_audited_as_a_clone() -> None:
    async with running_app() as h:
        user, device = await _with_passkey(h)
        started = await h.initiate(user, amount=5000, currency="EUR")
        assert (
            await h.pay(user, started.body, device.answer(ORIGIN, started.body["passkey"]))
        ).status == 200
        clone = SoftAuthenticator(credential_id=device.credential_id, key=device.key)  # count 0
        again = await h.initiate(user, amount=5000, currency="EUR")
        refused = await h.pay(user, again.body, clone.answer(ORIGIN, again.body["passkey"]))
        assert (refused.status, refused.body["code"]) == (401, "VERIFICATION_FAILED")
        await h.runtime.flusher.drain()
        trail = await h.runtime.durable.user_trail(user, 100)
        (suspected,) = [e for e in trail if e.action is AuditAction.PASSKEY_CLONE_SUSPECTED]
        assert dict(suspected.details) == {
            "presented_count": 1,
            "stored_count": 1,
            # the attempt it happened in: the merchant's webhook says which payment
            "session": again.body["session_id"],
            "merchant": DEMO_MERCHANT_ID,
            "amount": 5000,
            "currency": "EUR",
            "attempt": 1,
            "last_attempt": False,
            "possession": True,
        }


async def test_small_payments_ask_no_passkey_unless_the_merchant_does() -> None:
    async with running_app() as h:
        user, _ = await _with_passkey(h)
        small = await h.initiate(user, amount=500, currency="EUR")
        assert "PASSKEY" not in small.body["required_factors"]
        assert "passkey" not in small.body
        asked = await h.initiate(user, amount=500, currency="EUR", require_passkey=True)
        assert asked.body["required_factors"][-1] == "PASSKEY"
        bad = await h.initiate(user, require_passkey="yes")
        assert (bad.status, bad.body["field"]) == (400, "require_passkey")


async def test_a_deleted_passkey_is_no_longer_asked_for() -> None:
    async with running_app() as h:
        user, auth = await _enrolled_with_token(h)
        device = SoftAuthenticator(credential_id=b"gone-soon")
        assert (await _register(h, user, auth, device))[1] == 201
        asked = await h.initiate(user, amount=10000, currency="EUR")  # caches the record
        assert asked.body["required_factors"][-1] == "PASSKEY"
        token, _ = await h.verified_token(user)
        path = f"/v1/passkeys/{user}/{b64url(b'gone-soon')}"
        deleted = await h.call("DELETE", path, headers={"Authorization": f"Bearer {token}"})
        assert deleted.status == 200
        after = await h.initiate(user, amount=10000, currency="EUR")
        assert "PASSKEY" not in after.body["required_factors"]
        # A session opened before the deletion no longer accepts the passkey.
        stale = await h.pay(user, asked.body, device.answer(ORIGIN, asked.body["passkey"]))
        assert stale.status == 401


async def test_an_unknown_users_decoy_asks_for_passkeys_as_a_real_user_does() -> None:
    async with running_app() as h:
        real, _ = await _with_passkey(h)
        decoy = next(
            u
            for u in (str(uuid.uuid4()) for _ in range(200))
            if decoy_credential_ids(
                h.runtime.decoy_key, u, percent=PossessionPolicy().decoy_percent
            )
        )
        shown = [await h.initiate(u, amount=10000, currency="EUR") for u in (real, decoy)]
        assert [s.status for s in shown] == [200, 200]
        assert set(shown[0].body) == set(shown[1].body)
        assert set(shown[0].body["passkey"]["options"]) == set(shown[1].body["passkey"]["options"])
        assert shown[1].body["required_factors"][-1] == "PASSKEY"
        again = await h.initiate(decoy, amount=10000, currency="EUR")
        assert (
            again.body["passkey"]["options"]["allowCredentials"]
            == (shown[1].body["passkey"]["options"]["allowCredentials"])
        )  # stable, as a real user's passkeys are
        holder = SoftAuthenticator(credential_id=uuid.uuid4().bytes)
        refused = await h.pay(decoy, shown[1].body, holder.answer(ORIGIN, shown[1].body["passkey"]))
        assert refused.status == 401


async def test_an_enrollment_may_register_one_passkey_without_a_token() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        factors = answers(user, ["PIN", "COLOUR", "EMOJI"])
        body = {"user_uuid": user, "factors": factors, "device_id": "browser"}
        enrolled = await h.call("POST", "/v1/enrollment/store", {**body, "register_passkey": True})
        assert enrolled.status == 201, enrolled.text
        options = enrolled.body["passkey_options"]
        device = SoftAuthenticator(credential_id=b"first-passkey")
        response = device.register("localhost", ORIGIN, b64decode(options["challenge"]))
        registration = {"user_uuid": user, "credential": response}
        done = await h.call("POST", "/v1/passkeys", registration)
        assert done.status == 201, done.text
        other = SoftAuthenticator(credential_id=b"second-passkey")
        again = {"user_uuid": user, "credential": other.register("localhost", ORIGIN, bytes(32))}
        refused = await h.call("POST", "/v1/passkeys", again)  # the grant was used
        assert (refused.status, refused.body["code"]) == (401, "UNAUTHENTICATED")
        started = await h.initiate(user, amount=3000, currency="EUR")
        assert started.body["required_factors"][-1] == "PASSKEY"
        plain = await h.call(
            "POST", "/v1/enrollment/store", {**body, "user_uuid": str(uuid.uuid4())}
        )
        assert "passkey_options" not in plain.body
        bad = await h.call("POST", "/v1/enrollment/store", {**body, "register_passkey": 1})
        assert (bad.status, bad.body["field"]) == (400, "register_passkey")
