"""The flows tier: use cases run without HTTP, on a RequestContext built by hand.

Beside the server tier (tests/server, through Quart's test client): here a flow is a method of
``Flows(runtime, ctx)`` and its answer a ``Reply`` or an exception, so the request's clock,
client and headers are exactly what the test says, and a rule's timing is checked to the
millisecond on the runtime's hand-moved clock.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.helpers import answers
from tests.server.harness import FACTORS, running_app
from zeropay_proto import RemoteProtocolError
from zeropay_server.flows import ApiError, Flows, Reply, RequestContext


def context(now: float, body: object = None, **headers: str) -> RequestContext:
    return RequestContext(
        client="192.0.2.7",
        now=now,
        headers={k.replace("_", "-").lower(): v for k, v in headers.items()},
        body=b"" if body is None else json.dumps(body).encode(),
    )


def fresh(now: float) -> dict[str, str]:
    return {"x_nonce": str(uuid.uuid4()), "x_timestamp": str(int(now * 1000))}


async def test_enroll_initiate_verify_as_plain_calls() -> None:
    async with running_app() as h:
        rt, now, user = h.runtime, h.clock.now, str(uuid.uuid4())
        assert rt.demo_merchant_key is not None
        enrolled = await Flows(
            rt,
            context(
                now,
                {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"},
                **fresh(now),
            ),
        ).enroll()
        assert isinstance(enrolled, Reply)
        assert enrolled.status == 201
        started = await Flows(
            rt, context(now, {"user_uuid": user}, x_api_key=rt.demo_merchant_key, **fresh(now))
        ).initiate()
        assert started.status == 200
        assert started.headers["X-RateLimit-Limit"]
        session_id, required = started.body["session_id"], started.body["required_factors"]
        body = {"session_id": session_id, "user_uuid": user, "factors": answers(user, required)}
        done = await Flows(rt, context(now, body, **fresh(now))).verify()
        assert done.status == 200
        assert done.body["receipt"]["session_id"] == session_id
        # The request's one clock reading is the flow's: a replayed nonce is refused as such.
        replayed = fresh(now)
        await Flows(
            rt, context(now, {"user_uuid": user}, x_api_key=rt.demo_merchant_key, **replayed)
        ).initiate()
        with pytest.raises(ApiError) as refused:
            await Flows(
                rt, context(now, {"user_uuid": user}, x_api_key=rt.demo_merchant_key, **replayed)
            ).initiate()
        assert (refused.value.status, refused.value.code) == (403, "NONCE_REUSED")


async def test_bad_input_is_the_cores_error_naming_the_field() -> None:
    async with running_app() as h:
        now = h.clock.now
        flows = Flows(h.runtime, context(now, {"user_uuid": "nope"}, **fresh(now)))
        with pytest.raises(RemoteProtocolError) as bad:
            await flows.enroll()
        assert bad.value.field == "user_uuid"


async def _enroll_and_initiate(h: Any, user: str) -> tuple[str, list[str]]:
    rt, now = h.runtime, h.clock.now
    enrollment = {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"}
    await Flows(rt, context(now, enrollment, **fresh(now))).enroll()
    return await _initiate(h, user)


async def _initiated(h: Any, user: str) -> Reply:
    now, key = h.clock.now, h.runtime.demo_merchant_key
    assert key is not None
    context_ = context(now, {"user_uuid": user}, x_api_key=key, **fresh(now))
    return await Flows(h.runtime, context_).initiate()


async def _initiate(h: Any, user: str) -> tuple[str, list[str]]:
    started = await _initiated(h, user)
    return started.body["session_id"], started.body["required_factors"]


async def _verify(h: Any, user: str, session_id: str, factors: list[str], answer: str) -> Reply:
    now = h.clock.now
    body = {"session_id": session_id, "user_uuid": user, "factors": answers(user, factors, answer)}
    return await Flows(h.runtime, context(now, body, **fresh(now))).verify()


async def test_five_failures_lock_the_account_for_exactly_fifteen_minutes() -> None:
    """Three wrong answers close a session (the last answered with no attempt left), two more
    on the next lock the account: even the right answer is refused, with Retry-After the
    lock's whole length, until the clock reaches its end, and then accepted."""
    async with running_app() as h:
        user = str(uuid.uuid4())
        session_id, factors = await _enroll_and_initiate(h, user)
        remaining = []
        for _ in range(3):
            with pytest.raises(ApiError) as failed:
                await _verify(h, user, session_id, factors, "wrong")
            remaining.append(failed.value.extra["attempts_remaining"])
        assert remaining == [2, 1, 0]
        session_id, factors = await _initiate(h, user)
        for _ in range(2):
            with pytest.raises(ApiError) as failed:
                await _verify(h, user, session_id, factors, "wrong")
            assert failed.value.code == "VERIFICATION_FAILED"
        session_id, factors = await _initiate(h, user)
        with pytest.raises(ApiError) as locked:
            await _verify(h, user, session_id, factors, "right")
        assert (locked.value.status, locked.value.code) == (429, "ACCOUNT_LOCKED")
        assert locked.value.headers["Retry-After"] == str(15 * 60)
        h.clock.advance(15 * 60 - 0.001)
        session_id, factors = await _initiate(h, user)
        with pytest.raises(ApiError) as still:
            await _verify(h, user, session_id, factors, "right")
        assert still.value.headers["Retry-After"] == "1"  # a millisecond, in whole seconds
        h.clock.advance(0.001)
        done = await _verify(h, user, session_id, factors, "right")
        assert done.status == 200


async def test_the_rate_limit_headers_are_the_tightest_limiters() -> None:
    """Per user 50 a minute is tighter than per IP 100: its figures are the headers."""
    async with running_app() as h:
        user = str(uuid.uuid4())
        await _enroll_and_initiate(h, user)
        status = await _initiated(h, user)
        limits = h.runtime.limits
        assert status.headers["X-RateLimit-Limit"] == str(min(limits.per_user, limits.per_ip))
