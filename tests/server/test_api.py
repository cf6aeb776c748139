"""Every route and error status through the app's test client, on the in-memory adapters."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import uuid

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.helpers import answers, digest
from tests.server.harness import FACTORS, running_app
from zeropay_proto import PaymentBinding, Receipt, make_session_id, open_record
from zeropay_server.config import receipt_public_key
from zeropay_server.runtime import DEMO_MERCHANT_ID

#: A user no test enrolls (bodies refused before any user matters).
ANYONE = "0f4c8f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"


def new_user() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------ enrollment


async def test_enroll_then_duplicate_is_409() -> None:
    async with running_app() as h:
        user = new_user()
        first = await h.enroll(user)
        assert first.status == 201
        assert first.body["factor_count"] == 5
        again = await h.enroll(user)
        assert (again.status, again.body["code"]) == (409, "ALREADY_ENROLLED")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"factors": answers(ANYONE, ["PIN", "FACE", "NFC"]), "device_id": "d"}, "user_uuid"),
        (
            {
                "user_uuid": "nope",
                "factors": answers(ANYONE, ["PIN", "FACE", "NFC"]),
                "device_id": "d",
            },
            "user_uuid",
        ),
        ({"user_uuid": str(uuid.uuid4()), "factors": {"PIN": "00"}, "device_id": "d"}, "factors"),
        (
            {
                "user_uuid": str(uuid.uuid4()),
                "factors": {"PIN": "zz" * 32, "FACE": "00" * 32, "NFC": "00" * 32},
                "device_id": "d",
            },
            "factors.PIN",
        ),
        (
            {"user_uuid": ANYONE, "factors": answers(ANYONE, ["PIN", "FACE", "NFC"])},
            "device_id",
        ),
    ],
)
async def test_bad_enrollment_is_400_naming_the_field(body: dict[str, object], field: str) -> None:
    async with running_app() as h:
        response = await h.call("POST", "/v1/enrollment/store", body)
        assert response.status == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert (response.body["status"], response.body["field"]) == (400, field)


async def test_body_over_ten_kilobytes_is_413() -> None:
    async with running_app() as h:
        response = await h.call("POST", "/v1/enrollment/store", raw=b" " * (10 * 1024 + 1))
        assert (response.status, response.body["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_state_changing_routes_need_a_fresh_nonce_and_timestamp() -> None:
    async with running_app() as h:
        user = new_user()
        body = {"user_uuid": user}
        missing = await h.call("POST", "/v1/verification/initiate", body, nonce=False)
        assert (missing.status, missing.body["field"]) == (400, "X-Nonce")
        stale = await h.call(
            "POST",
            "/v1/verification/initiate",
            body,
            nonce=False,
            headers={
                "X-Nonce": str(uuid.uuid4()),
                "X-Timestamp": str(int(h.clock.now * 1000) - 301_000),
            },
        )
        assert (stale.status, stale.body["code"]) == (400, "TIMESTAMP_OUT_OF_WINDOW")
        headers = h.nonce_headers()
        ok = await h.call("POST", "/v1/verification/initiate", body, nonce=False, headers=headers)
        replay = await h.call(
            "POST", "/v1/verification/initiate", body, nonce=False, headers=headers
        )
        assert ok.status == 200
        assert (replay.status, replay.body["code"]) == (403, "NONCE_REUSED")


async def test_twenty_concurrent_requests_with_one_nonce_accept_exactly_one() -> None:
    """The original service checked then set a nonce (EXISTS, then SETEX), and 10 concurrent
    replays of one request got through. A replay is the same request: here 20 at once."""
    async with running_app() as h:
        headers = h.nonce_headers()
        statuses: list[int] = []
        user = new_user()

        async def send() -> None:
            response = await h.call(
                "POST",
                "/v1/verification/initiate",
                {"user_uuid": user},
                nonce=False,
                headers=headers,
            )
            statuses.append(response.status)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(send)
        assert sorted(statuses) == [200] + [403] * 19


# ------------------------------------------------------------------------------ verification


async def test_full_flow_issues_a_token_and_a_receipt_that_verifies() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        started = await h.initiate(user, amount=4250, currency="EUR")
        assert started.status == 200
        assert len(started.body["required_factors"]) == 3
        assert started.body["expires_in"] == 300
        done = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        assert done.status == 200
        receipt = done.body["receipt"]
        assert (receipt["amount"], receipt["currency"], receipt["merchant_id"]) == (
            4250,
            "EUR",
            DEMO_MERCHANT_ID,  # the authenticated merchant, the payee the receipt binds
        )
        keys = await h.call("GET", "/v1/keys")
        (jwk,) = keys.body["keys"]
        public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
        canonical = Receipt(
            session_id=receipt["session_id"],
            user_id=receipt["user_uuid"],
            binding=PaymentBinding(
                amount=receipt["amount"], currency="EUR", merchant_id=DEMO_MERCHANT_ID
            ),
            issued_at_ms=receipt["issued_at_ms"],
        ).canonical_bytes()
        public.verify(base64.urlsafe_b64decode(receipt["signature"] + "=="), canonical)
        assert receipt["key_id"] == jwk["kid"]
        # The same receipt as a compact JWS (PyJWT signs it), checked here with
        # cryptography alone, as a merchant's language would.
        head, payload, signature = done.body["receipt_jws"].split(".")

        def unpadded(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        header = json.loads(unpadded(head))
        assert header == {"alg": "EdDSA", "kid": jwk["kid"], "typ": "zeropay-receipt+json"}
        public.verify(unpadded(signature), f"{head}.{payload}".encode())
        fields = {k: v for k, v in receipt.items() if k not in ("key_id", "alg", "signature")}
        assert json.loads(unpadded(payload)) == fields


async def test_low_risk_small_payment_challenges_two_factors() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        small = await h.initiate(user, amount=1200, currency="EUR", risk_level="LOW")
        big = await h.initiate(user, amount=1200, currency="EUR", risk_level="HIGH")
        assert len(small.body["required_factors"]) == 2
        assert big.body["required_factors"][:2] == small.body["required_factors"]


async def test_wrong_factor_is_one_generic_401_and_the_session_fails_after_three() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        started = await h.initiate(user)
        sid, factors = started.body["session_id"], started.body["required_factors"]
        bodies = []
        for _ in range(3):
            wrong = answers(user, factors)
            wrong[factors[0]] = digest(user, factors[0], "wrong")
            response = await h.verify(user, sid, wrong)
            assert response.status == 401
            bodies.append(response.body)
        assert [b["attempts_remaining"] for b in bodies] == [2, 1, 0]
        assert {b["code"] for b in bodies} == {"VERIFICATION_FAILED"}
        assert all(factors[0] not in json.dumps(b) for b in bodies)  # never names the factor
        status = await h.call("GET", f"/v1/verification/status/{sid}")
        assert status.body["status"] == "failed"
        late = await h.verify(user, sid, answers(user, factors))
        assert (late.status, late.body["attempts_remaining"]) == (401, 0)


async def test_verified_session_cannot_be_verified_again() -> None:
    """In the original service a verified session minted a new token on every verify."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        started = await h.initiate(user)
        sid, factors = started.body["session_id"], started.body["required_factors"]
        assert (await h.verify(user, sid, answers(user, factors))).status == 200
        again = await h.verify(user, sid, answers(user, factors))
        assert again.status == 401
        assert "auth_token" not in again.body


async def test_unknown_user_initiate_looks_like_a_known_one_and_always_fails() -> None:
    async with running_app() as h:
        known, unknown = new_user(), new_user()
        await h.enroll(known)
        real = await h.initiate(known)
        decoy = await h.initiate(unknown)
        assert real.status == decoy.status == 200
        assert set(real.body) == set(decoy.body)
        assert len(real.body["required_factors"]) == len(decoy.body["required_factors"])
        again = await h.initiate(unknown)
        assert again.body["required_factors"] == decoy.body["required_factors"]  # stable
        fails = await h.verify(
            unknown, decoy.body["session_id"], answers(unknown, decoy.body["required_factors"])
        )
        wrong = answers(known, real.body["required_factors"], "wrong")
        real_fail = await h.verify(known, real.body["session_id"], wrong)
        assert (fails.status, fails.body) == (real_fail.status, real_fail.body)


async def test_five_failures_lock_the_account_across_sessions() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        statuses = []
        for _ in range(2):
            started = await h.initiate(user)
            for _ in range(3):
                response = await h.verify(
                    user,
                    started.body["session_id"],
                    answers(user, started.body["required_factors"], "wrong"),
                )
                statuses.append(response.status)
        assert statuses == [401, 401, 401, 401, 401, 429]
        started = await h.initiate(user)
        locked = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        assert (locked.status, locked.body["code"]) == (429, "ACCOUNT_LOCKED")
        assert int(locked.headers["Retry-After"]) == 15 * 60
        h.clock.advance(15 * 60)
        started = await h.initiate(user)
        unlocked = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        assert unlocked.status == 200


async def test_session_errors_and_status() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        started = await h.initiate(user)
        sid = started.body["session_id"]
        status = await h.call("GET", f"/v1/verification/status/{sid}")
        assert (status.status, status.body["status"], status.body["attempts_remaining"]) == (
            200,
            "pending",
            3,
        )
        other = await h.verify(new_user(), sid, answers(user, ["PIN"]))
        assert (other.status, other.body["code"]) == (404, "SESSION_NOT_FOUND")
        gone = "A" * 22 + sid[22:]
        missing = await h.call("GET", f"/v1/verification/status/{gone}")
        assert missing.status in {400, 404}
        malformed = await h.call("GET", "/v1/verification/status/not-a-session")
        assert (malformed.status, malformed.body["code"]) == (400, "INVALID_SESSION_ID")
        h.clock.advance(301)
        expired = await h.call("GET", f"/v1/verification/status/{sid}")
        assert expired.body["status"] == "expired"
        late = await h.verify(user, sid, answers(user, started.body["required_factors"]))
        assert late.status == 401


# ------------------------------------------------------------------------------ tokens


async def test_validate_and_revoke() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        token, _ = await h.verified_token(user)
        auth = {"Authorization": f"Bearer {token}"}
        valid = await h.call("GET", "/v1/session/validate", headers=auth)
        assert (valid.status, valid.body["user_uuid"]) == (200, user)
        assert (await h.call("GET", "/v1/session/validate")).status == 401
        malformed = await h.call(
            "GET", "/v1/session/validate", headers={"Authorization": "Bearer x"}
        )
        assert malformed.status == 401
        assert (await h.call("POST", "/v1/session/revoke", headers=auth)).status == 200
        assert (await h.call("POST", "/v1/session/revoke", headers=auth)).status == 401
        assert (await h.call("GET", "/v1/session/validate", headers=auth)).status == 401


async def test_tokens_expire() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        token, _ = await h.verified_token(user)
        h.clock.advance(301)
        expired = await h.call(
            "GET", "/v1/session/validate", headers={"Authorization": f"Bearer {token}"}
        )
        assert expired.status == 401


# ------------------------------------------------------------------------- update, delete, export


async def test_update_needs_that_users_token_and_replaces_the_factors() -> None:
    """The original service overwrote an enrollment without proof."""
    async with running_app() as h:
        user, other = new_user(), new_user()
        await h.enroll(user)
        await h.enroll(other)
        body = {
            "user_uuid": user,
            "factors": answers(user, ["PIN", "NFC", "FACE"], "new"),
            "device_id": "phone-2",
        }
        assert (await h.call("PUT", "/v1/enrollment/update", body)).status == 401
        others_token, _ = await h.verified_token(other)
        stolen = await h.call(
            "PUT",
            "/v1/enrollment/update",
            body,
            headers={"Authorization": f"Bearer {others_token}"},
        )
        assert stolen.status == 401
        token, _ = await h.verified_token(user)
        updated = await h.call(
            "PUT", "/v1/enrollment/update", body, headers={"Authorization": f"Bearer {token}"}
        )
        assert updated.status == 200
        started = await h.initiate(user)
        assert set(started.body["required_factors"]) == {"PIN", "NFC", "FACE"}
        done = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"], "new")
        )
        assert done.status == 200
        old_token = await h.call(
            "GET", "/v1/session/validate", headers={"Authorization": f"Bearer {token}"}
        )
        assert old_token.status == 401  # the update revoked every token of the user


async def test_the_record_cache_never_outlives_an_enrollment_change() -> None:
    """Verify decides from the cached record and wrapped key (no PostgreSQL read): an update
    or a delete drops them before it changes the durable row, so a session opened on the old record
    cannot verify with the old answers once the change is made."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        h.clock.advance(h.runtime.settings.record_hold_ms / 1000 + 1)  # enrollment's hold
        token, _ = await h.verified_token(user)
        assert (await h.runtime.state.load_for_initiate(user)).cached is not None
        before = await h.initiate(user)  # opened on the cached, soon old, record
        body = {
            "user_uuid": user,
            "factors": answers(user, ["PIN", "NFC", "FACE"], "new"),
            "device_id": "d",
        }
        updated = await h.call(
            "PUT", "/v1/enrollment/update", body, headers={"Authorization": f"Bearer {token}"}
        )
        assert updated.status == 200
        stale = await h.verify(
            user, before.body["session_id"], answers(user, before.body["required_factors"])
        )
        assert stale.status == 401
        token, _ = await h.verified_token_with(user, "new")
        h.clock.advance(h.runtime.settings.record_hold_ms / 1000 + 1)  # update's hold
        assert (await h.initiate(user)).status == 200  # caches the new record
        assert (await h.runtime.state.load_for_initiate(user)).cached is not None
        opened = await h.initiate(user)
        deleted = await h.call(
            "DELETE", f"/v1/enrollment/delete/{user}", headers={"Authorization": f"Bearer {token}"}
        )
        assert deleted.status == 200
        gone = await h.verify(
            user, opened.body["session_id"], answers(user, opened.body["required_factors"], "new")
        )
        assert gone.status == 401


async def test_asking_to_enroll_an_enrolled_user_leaves_its_cache_alone() -> None:
    """Anyone may ask to enroll any user id; only a real change may hold a user's record
    cache (a 409 must not keep an enrolled user's verifies on PostgreSQL)."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        h.clock.advance(h.runtime.settings.record_hold_ms / 1000 + 1)
        assert (await h.initiate(user)).status == 200  # caches the record
        assert (await h.enroll(user)).status == 409
        assert (await h.runtime.state.load_for_initiate(user)).cached is not None


async def test_a_weak_token_cannot_change_or_delete_the_enrollment() -> None:
    """A 2-factor low-risk verification proves less than the factors it would replace."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        started = await h.initiate(user, amount=500, currency="EUR", risk_level="LOW")
        assert len(started.body["required_factors"]) == 2
        done = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        weak = {"Authorization": f"Bearer {done.body['auth_token']}"}
        body = {
            "user_uuid": user,
            "factors": answers(user, ["PIN", "NFC", "FACE"]),
            "device_id": "d",
        }
        update = await h.call("PUT", "/v1/enrollment/update", body, headers=weak)
        delete = await h.call("DELETE", f"/v1/enrollment/delete/{user}", headers=weak)
        for refused in (update, delete):
            assert (refused.status, refused.body["code"]) == (403, "STEP_UP_REQUIRED")
        strong, _ = await h.verified_token(user)
        deleted = await h.call(
            "DELETE", f"/v1/enrollment/delete/{user}", headers={"Authorization": f"Bearer {strong}"}
        )
        assert deleted.status == 200


async def test_delete_needs_a_token_and_makes_the_user_unknown() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        assert (await h.call("DELETE", f"/v1/enrollment/delete/{user}")).status == 401
        token, _ = await h.verified_token(user)
        auth = {"Authorization": f"Bearer {token}"}
        deleted = await h.call("DELETE", f"/v1/enrollment/delete/{user}", headers=auth)
        assert deleted.status == 200
        assert (await h.call("GET", "/v1/session/validate", headers=auth)).status == 401
        started = await h.initiate(user)
        attempt = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        assert attempt.status == 401  # a decoy now
        assert (await h.enroll(user)).status == 201  # and the user may enroll again


async def test_export_has_metadata_and_audit_trail_never_digests_or_verifiers() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        token, _ = await h.verified_token(user)
        await h.runtime.flusher.drain()
        assert (await h.call("GET", f"/v1/enrollment/export/{user}")).status == 401
        export = await h.call(
            "GET", f"/v1/enrollment/export/{user}", headers={"Authorization": f"Bearer {token}"}
        )
        assert export.status == 200
        assert export.body["enrollment"]["factor_count"] == 5
        assert set(export.body["enrollment"]["factors"]) == set(FACTORS)
        actions = [e["action"] for e in export.body["audit_trail"]]
        assert actions == ["ENROLLED", "SESSION_INITIATED", "VERIFICATION_SUCCEEDED"]
        for factor in FACTORS:
            assert digest(user, factor) not in export.text
        stored = await h.runtime.durable.load_enrollment(user)
        assert stored is not None
        record_verifiers = [
            v.hex()
            for v in open_record(
                h.runtime.settings.secrets.keyring, user_id=user, envelope=stored.sealed_record
            ).verifiers.values()
        ]
        assert not any(v in export.text for v in record_verifiers)


async def test_no_route_returns_a_stored_digest() -> None:
    """In the original service an unauthenticated route returned a user's stored digests."""
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        token, verified = await h.verified_token(user)
        texts = [verified.text]
        for method, path in [("GET", f"/v1/enrollment/export/{user}"),
                             ("GET", "/v1/session/validate"), ("GET", "/health"),
                             ("GET", "/metrics")]:  # fmt: skip
            texts.append(
                (await h.call(method, path, headers={"Authorization": f"Bearer {token}"})).text
            )
        for factor in FACTORS:
            assert all(digest(user, factor) not in t for t in texts)


# ------------------------------------------------------------------------------ limits and proxies


async def test_per_ip_limit_is_429_with_headers() -> None:
    async with running_app(RATE_LIMIT_PER_IP="3") as h:
        statuses = [
            (await h.call("GET", f"/v1/verification/status/{'A' * 43}")).status for _ in range(4)
        ]
        assert statuses[-1] == 429
        limited = await h.call("GET", f"/v1/verification/status/{'A' * 43}")
        assert limited.body["code"] == "RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["X-RateLimit-Limit"] == "3"
        assert limited.headers["X-RateLimit-Remaining"] == "0"


def _session_of(user: str) -> str:
    """A well-formed session id of ``user`` that no session has."""
    return make_session_id(user, secrets.token_bytes(16))


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    """The per-IP limit (of anonymous routes: a payer's status here) was once keyed on the
    first X-Forwarded-For entry, which the client writes."""
    async with running_app(RATE_LIMIT_PER_IP="2") as h:
        statuses = []
        for i in range(3):
            response = await h.call(
                "GET",
                f"/v1/verification/status/{_session_of(new_user())}",
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
                peer="203.0.113.50",
            )
            statuses.append(response.status)
        assert statuses == [404, 404, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    async with running_app(RATE_LIMIT_PER_IP="2", TRUSTED_PROXIES="10.0.0.0/8") as h:
        statuses = []
        for i in range(3):
            response = await h.call(
                "GET",
                f"/v1/verification/status/{_session_of(new_user())}",
                headers={"X-Forwarded-For": f"1.2.3.4, 198.51.100.{i}, 10.0.0.7"},
                peer="10.0.0.1",
            )
            statuses.append(response.status)
        assert statuses == [404, 404, 404]  # three different clients behind the proxy


async def test_per_user_limit_does_not_depend_on_a_client_header() -> None:
    """In the original service the per-user limit keyed on a client header, skipped without it."""
    async with running_app(RATE_LIMIT_PER_USER="2") as h:
        user = new_user()
        statuses = [(await h.initiate(user)).status for _ in range(3)]
        assert statuses == [200, 200, 429]


# ------------------------------------------------------------------------------ PSP


async def test_psp_session_in_parallel_and_a_failure_never_fails_authentication() -> None:
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        ok = await h.initiate(user, amount=1000, currency="EUR", psp_config={})
        psp_id = ok.body["psp_session"]["psp_session_id"]
        fetched = await h.call("GET", f"/v1/psp/session/{psp_id}")
        assert fetched.body["psp_session"]["verification_session_id"] == ok.body["session_id"]
        failed = await h.initiate(user, psp_config={"simulate": "failure"})
        assert failed.status == 200
        assert "psp_session" not in failed.body
        assert (await h.call("GET", "/v1/psp/session/psp_unknown")).status == 404
        assert (await h.call("GET", "/v1/psp/session/nope")).status == 404


async def test_slow_psp_is_abandoned_after_five_seconds(autojump_clock: trio.abc.Clock) -> None:
    async with running_app() as h:
        user = new_user()
        start = trio.current_time()
        slow = await h.initiate(user, psp_config={"simulate_delay_ms": 60_000})
        assert (slow.status, "psp_session" in slow.body) == (200, False)
        assert 5 <= trio.current_time() - start < 6


async def test_psp_create_route() -> None:
    async with running_app() as h:
        made = await h.call("POST", "/v1/psp/session/create", {"amount": 500, "currency": "USD"})
        assert made.status == 201
        assert made.body["expires_in"] == 1800
        bad = await h.call("POST", "/v1/psp/session/create", {"currency": "usd"})
        assert (bad.status, bad.body["field"]) == (400, "currency")
        failing = await h.call(
            "POST", "/v1/psp/session/create", {"psp_config": {"simulate": "failure"}}
        )
        assert failing.status == 502


# ------------------------------------------------------------------------------ operations


async def test_health_keys_openapi_and_metrics() -> None:
    async with running_app() as h:
        assert (await h.call("GET", "/health/live")).status == 200
        ready = await h.call("GET", "/health/ready")
        assert (ready.status, ready.body["checks"]) == (200, {"redis": True, "postgresql": True})
        assert (await h.call("GET", "/health")).body["storage"] == "memory"
        spec = await h.call("GET", "/openapi.json")
        assert spec.body["openapi"] == "3.1.0"
        assert "/v1/verification/verify" in spec.body["paths"]
        await h.enroll(new_user())
        metrics = await h.call("GET", "/metrics")
        for name in ("zeropay_http_requests_total", "zeropay_http_request_duration_seconds",
                     "zeropay_active_sessions", "zeropay_crypto_queue_depth",
                     "zeropay_audit_backlog", "zeropay_redis_used_memory_bytes",
                     "zeropay_db_pool_in_use"):  # fmt: skip
            assert name in metrics.text
        assert 'route="/v1/enrollment/store"' in metrics.text


async def test_unknown_routes_and_methods_are_json() -> None:
    async with running_app() as h:
        missing = await h.call("GET", "/v2/nothing")
        assert (missing.status, missing.body["code"]) == (404, "NOT_FOUND")
        wrong = await h.call("GET", "/v1/verification/verify")
        assert (wrong.status, wrong.body["code"]) == (405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b"{",
        b'{"user_uuid": 5}',
        b"\xff\xfe",
        b'{"a": NaN}',
        b'{"user_uuid": "' + b"1" * 5000 + b'"}',
        b"[" * 3000,
    ],
)
async def test_garbage_is_never_a_500(raw: bytes) -> None:
    async with running_app() as h:
        for method, path in [("POST", "/v1/enrollment/store"), ("PUT", "/v1/enrollment/update"),
                             ("POST", "/v1/verification/initiate"),
                             ("POST", "/v1/verification/verify"),
                             ("POST", "/v1/psp/session/create")]:  # fmt: skip
            response = await h.call(method, path, raw=raw)
            assert response.status < 500, (path, response.status, response.text)
            if path != "/v1/psp/session/create":  # its fields are all optional
                assert 400 <= response.status < 500, (path, response.status)
                assert response.body["type"].startswith("/problems/")


async def test_logs_never_contain_digests_tokens_or_session_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app() as h:
        user = new_user()
        await h.enroll(user)
        token, verified = await h.verified_token(user)
        sid = verified.body["receipt"]["session_id"]
        await h.call("GET", "/v1/session/validate", headers={"Authorization": f"Bearer {token}"})
    logged = "\n".join(
        r.getMessage() + json.dumps(getattr(r, "fields", {}), default=str) for r in caplog.records
    )
    assert "request" in logged
    for secret in [token, sid, *(digest(user, f) for f in FACTORS)]:
        assert secret not in logged


# ------------------------------------------------------------------------------ merchants


async def test_merchant_routes_need_a_live_merchant_key() -> None:
    """Anyone who knew a user id could open sessions, and lock the account."""
    async with running_app() as h:
        user = new_user()
        for key in (None, "nonsense", "zpk_0123456789ab_" + "B" * 43):
            headers = {} if key is None else {"X-API-Key": key}
            for method, path, body in [
                ("POST", "/v1/verification/initiate", {"user_uuid": user}),
                ("POST", "/v1/psp/session/create", {"amount": 500, "currency": "EUR"}),
                ("GET", "/v1/psp/session/psp_x", None),
            ]:
                h.runtime.demo_merchant_key, real = None, h.runtime.demo_merchant_key
                try:
                    refused = await h.call(method, path, body, headers=headers)
                finally:
                    h.runtime.demo_merchant_key = real
                assert (refused.status, refused.body["code"]) == (401, "MERCHANT_UNAUTHENTICATED")
                assert refused.body["field"] == "X-API-Key"


async def test_a_session_records_its_authenticated_merchant_never_a_claimed_one() -> None:
    async with running_app() as h:
        user = new_user()
        claimed = await h.initiate(user, merchant_id="someone-else")
        assert (claimed.status, claimed.body["code"]) == (403, "MERCHANT_MISMATCH")
        named = await h.initiate(user, merchant_id=DEMO_MERCHANT_ID)
        assert named.status == 200


async def test_a_merchant_whose_sessions_fail_too_often_is_throttled() -> None:
    """The measure against targeted lockout: PSD2's five attempts per account stay as they
    are, and a merchant whose sessions failed MERCHANT_FAILURES_PER_HOUR verifications can
    open no more sessions, nor verify in the ones it has, until the budget recovers."""
    async with running_app(MERCHANT_FAILURES_PER_HOUR="10") as h:
        spare = new_user()
        await h.enroll(spare)
        open_session = await h.initiate(spare)
        for _ in range(2):
            victim = new_user()
            await h.enroll(victim)
            statuses = []
            for _ in range(2):
                started = await h.initiate(victim)
                wrong = answers(victim, started.body["required_factors"], "wrong")
                for _ in range(3):
                    response = await h.verify(victim, started.body["session_id"], wrong)
                    statuses.append(response.status)
            assert statuses == [401] * 5 + [429]  # locked at the fifth failure
        throttled = await h.initiate(new_user())
        assert (throttled.status, throttled.body["code"]) == (429, "MERCHANT_THROTTLED")
        assert 0 < int(throttled.headers["Retry-After"]) <= 7200
        refused = await h.pay(spare, open_session.body)  # a session opened before: refused too
        assert (refused.status, refused.body["code"]) == (429, "MERCHANT_THROTTLED")
        status = await h.call("GET", f"/v1/verification/status/{open_session.body['session_id']}")
        assert status.body["attempts_used"] == 0  # the payer's attempt was given back
        metrics = (await h.call("GET", "/metrics")).text
        assert f'zeropay_account_locks_total{{merchant="{DEMO_MERCHANT_ID}"}} 2.0' in metrics
        h.clock.advance(7200)  # the sliding hour has forgotten every failure
        assert (await h.initiate(new_user())).status == 200


async def test_a_retired_receipt_key_is_published_beside_the_new_one_until_its_time() -> None:
    old_seed = b"o" * 32
    old_public = base64.urlsafe_b64encode(receipt_public_key(old_seed)).decode().rstrip("=")
    async with running_app() as h:
        until = dt.datetime.fromtimestamp(h.clock.now + 3600, dt.UTC).isoformat()
    retired = f"receipt-old:{old_public}:{until}"
    async with running_app(ZEROPAY_RECEIPT_RETIRED_KEYS=retired) as h:
        keys = (await h.call("GET", "/v1/keys")).body["keys"]
        assert [k["kid"] for k in keys] == ["embedded", "receipt-old"]
        assert keys[1]["x"] == old_public
        h.clock.advance(3600)
        later = (await h.call("GET", "/v1/keys")).body["keys"]
        assert [k["kid"] for k in later] == ["embedded"]
