"""The flows tier: use cases run without HTTP, on a RequestContext built by hand.

Beside the server tier (tests/server/test_api.py, through Quart's test client): here a flow
is a method of ``Flows(runtime, ctx)`` and its answer a ``Reply`` or an exception, so the
request's clock, client and headers are exactly what the test says.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.server.harness import FACTORS, answers, running_app
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
                {"user_uuid": user, "factors": answers(list(FACTORS)), "device_id": "d"},
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
        body = {"session_id": session_id, "user_uuid": user, "factors": answers(required)}
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
