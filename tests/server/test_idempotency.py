"""Idempotent retries through the HTTP layer, on the embedded store: a replay is the first
answer byte for byte and runs nothing, a duplicate in flight is a 409, another request under
the key a 422, an outage is not kept, and a fault between the operation and keeping its
answer loses nothing. (The store's atomicity on Redis and the Cluster is in
``tests/adapters/test_contract.py``; the same flows through a real server on Redis, in
``tests/e2e/test_idempotency_stack.py``.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from adapters.errors import DependencyUnavailable
from tests.helpers import answers
from tests.server.harness import Harness, Response, running_app
from zeropay_proto.idempotency import CLAIM_LEASE_MS


def keyed(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or str(uuid.uuid4())}


async def initiate(h: Harness, user: str, key: dict[str, str], **extra: Any) -> Response:
    body = {"user_uuid": user, "amount": 4250, "currency": "EUR", **extra}
    return await h.call("POST", "/v1/verification/initiate", body, headers=key)


def opened_sessions(h: Harness) -> int:
    return h.runtime.metrics.sessions.active(h.clock.now)


async def test_a_retry_gets_the_first_answer_byte_for_byte_and_runs_nothing() -> None:
    async with running_app() as h:
        user, key = str(uuid.uuid4()), keyed()
        first = await initiate(h, user, key)
        again = await initiate(h, user, key)  # fresh nonce and timestamp: a real retry
        assert first.status == again.status == 200
        assert again.text == first.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        fresh = await initiate(h, user, keyed())
        assert fresh.body["session_id"] != first.body["session_id"]  # a new key, a new run


async def test_the_key_with_another_request_is_a_422_and_a_bad_key_a_400() -> None:
    async with running_app() as h:
        user, key = str(uuid.uuid4()), keyed()
        assert (await initiate(h, user, key)).status == 200
        other = await initiate(h, user, key, amount=9999)
        assert (other.status, other.body["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
        assert other.body["field"] == "Idempotency-Key"
        for bad in ("", "a" * 256, "with space", "é"):
            refused = await initiate(h, user, {"Idempotency-Key": bad})
            assert (refused.status, refused.body["code"]) == (400, "INVALID_IDEMPOTENCY_KEY")


async def test_a_replayed_verify_spends_no_attempt() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        await h.enroll(user)
        started = await initiate(h, user, keyed())
        session = started.body["session_id"]
        wrong = {
            "session_id": session,
            "user_uuid": user,
            "factors": answers(user, started.body["required_factors"], "wrong"),
        }
        key = keyed()
        failed = await h.call("POST", "/v1/verification/verify", wrong, headers=key)
        replayed = await h.call("POST", "/v1/verification/verify", wrong, headers=key)
        assert (failed.status, failed.body["attempts_remaining"]) == (401, 2)
        assert replayed.text == failed.text
        status = await h.call("GET", f"/v1/verification/status/{session}")
        assert status.body["attempts_used"] == 1


async def test_a_duplicate_in_flight_is_a_409_and_the_operation_runs_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_app() as h:
        user, key = str(uuid.uuid4()), keyed()
        slow = {"psp_config": {"simulate_delay_ms": 2000}}  # the first stays in flight
        answered: list[Response] = []

        async def send() -> None:
            answered.append(await initiate(h, user, key, **slow))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(send)
        statuses = sorted(a.status for a in answered)
        assert statuses == [200, 409, 409, 409, 409]
        busy = next(a for a in answered if a.status == 409)
        assert busy.body["code"] == "IDEMPOTENCY_IN_PROGRESS"
        assert busy.body["retry_after"] == int(busy.headers["Retry-After"]) > 0
        assert opened_sessions(h) == 1
        done = next(a for a in answered if a.status == 200)
        assert (await initiate(h, user, key, **slow)).text == done.text
        counted = {
            outcome: h.runtime.metrics.registry.get_sample_value(
                "zeropay_idempotent_requests_total", {"outcome": outcome}
            )
            for outcome in ("ran", "in_progress", "replayed")
        }
        assert counted == {"ran": 1, "in_progress": 4, "replayed": 1}


async def test_an_outage_is_not_kept_and_the_retry_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_app() as h:
        user, key = str(uuid.uuid4()), keyed()
        durable = h.runtime.durable

        async def down(user_id: str) -> None:
            raise DependencyUnavailable("postgresql")

        with monkeypatch.context() as patched:
            patched.setattr(durable, "load_enrollment", down)
            failed = await initiate(h, user, key)
        assert (failed.status, failed.body["code"]) == (503, "DEPENDENCY_UNAVAILABLE")
        retried = await initiate(h, user, key)
        assert retried.status == 200
        assert "Idempotent-Replayed" not in retried.headers


async def test_a_fault_between_the_operation_and_keeping_its_answer_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_app() as h:
        user, key = str(uuid.uuid4()), keyed()
        state = h.runtime.state

        async def unreachable(*args: object) -> bool:
            raise DependencyUnavailable("redis")

        with monkeypatch.context() as patched:
            patched.setattr(state, "settle_idempotency", unreachable)
            first = await initiate(h, user, key)
        assert first.status == 200  # the operation's answer still goes out
        busy = await initiate(h, user, key)  # its claim holds the key until its lease ends
        assert (busy.status, busy.body["code"]) == (409, "IDEMPOTENCY_IN_PROGRESS")
        h.clock.advance(CLAIM_LEASE_MS / 1000 + 1)
        rerun = await initiate(h, user, key)
        assert rerun.status == 200
        assert rerun.body["session_id"] != first.body["session_id"]  # ran again, once
        assert (await initiate(h, user, key)).text == rerun.text


async def test_a_captured_request_replayed_as_it_is_gets_no_kept_answer() -> None:
    """A replay with the first request's own nonce is refused before anything kept is read,
    and the kept answer of a verify, which holds a bearer token, is stored sealed."""
    async with running_app() as h:
        user = str(uuid.uuid4())
        await h.enroll(user)
        started = await initiate(h, user, keyed())
        body = {
            "session_id": started.body["session_id"],
            "user_uuid": user,
            "factors": answers(user, started.body["required_factors"]),
        }
        captured = {**keyed(), **h.nonce_headers()}
        done = await h.call("POST", "/v1/verification/verify", body, headers=captured)
        assert done.status == 200, done.text
        replayed = await h.call("POST", "/v1/verification/verify", body, headers=captured)
        assert (replayed.status, replayed.body["code"]) == (403, "NONCE_REUSED")
        assert done.body["auth_token"] not in replayed.text
        stored = repr(vars(h.runtime.state))
        assert "KeptAnswer(" in stored  # the store holds the kept answer, and not its token
        assert done.body["auth_token"] not in stored
        fresh = {"Idempotency-Key": captured["Idempotency-Key"]}  # the client's own retry
        assert (await h.call("POST", "/v1/verification/verify", body, headers=fresh)).text == (
            done.text
        )
