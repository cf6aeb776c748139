"""Limiters only spend for the caller, a handful of addresses cannot fill the global limit, and
a merchant's failure budget can be neither bypassed nor aimed at a rival.

Found by attack:
- 55 ``GET /v1/verification/status/{id}`` with ids forged from a victim's user id made the
  victim's next merchant initiate answer 429 (the status route charged the user a session id
  names, and refused requests still spent the user's bucket);
- 11 addresses x 95 unauthenticated requests filled the global window, and every client got
  429 for the rest of the minute;
- a merchant that opened 80 sessions before answering wrong in them locked 40 accounts against
  a cap of 20 (the cap was checked only when a session opened);
- merchant A made 4 wrong answers per user, then one wrong answer in each of merchant B's
  sessions locked 20 accounts, and B's honest sessions got 429 (a lock was charged to the
  merchant whose session made the fifth failure);
- wrong merchant keys were counted by no limiter.
"""

from __future__ import annotations

import secrets
import uuid

from tests.helpers import answers
from tests.server.harness import Harness, running_app
from zeropay_proto import make_session_id
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key


def _forged(user: str) -> str:
    return make_session_id(user, secrets.token_bytes(16))


async def _merchant(h: Harness, merchant_id: str) -> str:
    """A second merchant's key, live in the directory."""
    key, credential = issue_api_key(
        merchant_id, entropy=secrets.token_bytes(API_KEY_ENTROPY_BYTES), now_ms=1
    )
    await h.runtime.durable.add_merchant_key(credential)
    await h.runtime.merchants.refresh()
    return key


async def test_strangers_naming_a_user_cannot_stop_the_users_payments() -> None:
    async with running_app(RATE_LIMIT_PER_USER="5", RATE_LIMIT_PER_IP="1000") as h:
        victim = str(uuid.uuid4())
        await h.enroll(victim)
        for _ in range(55):
            forged = await h.call(
                "GET", f"/v1/verification/status/{_forged(victim)}", peer="198.51.100.66"
            )
            assert forged.status == 404
        for _ in range(20):  # verifies of sessions that do not exist, naming the victim
            body = {"session_id": _forged(victim), "user_uuid": victim, "factors": {}}
            probe = await h.call("POST", "/v1/verification/verify", body, peer="198.51.100.66")
            assert probe.status in {400, 404}
        statuses = [(await h.initiate(victim)).status for _ in range(5)]
        assert statuses == [200] * 5  # the merchant's own budget for the user, untouched


async def test_a_handful_of_addresses_cannot_fill_the_global_limit() -> None:
    limits = {"RATE_LIMIT_GLOBAL": "100", "RATE_LIMIT_PER_IP": "60", "RATE_LIMIT_SHARDS": "1"}
    async with running_app(**limits) as h:
        heavy = [f"203.0.113.{n}" for n in range(1, 12)]
        refused = 0
        for address in heavy:
            for _ in range(60):
                answer = await h.call(
                    "GET", f"/v1/verification/status/{_forged(str(uuid.uuid4()))}", peer=address
                )
                refused += answer.status == 429
        assert refused > 0  # the heavy addresses did fill it
        payer = await h.call(
            "GET", f"/v1/verification/status/{_forged(str(uuid.uuid4()))}", peer="192.0.2.200"
        )
        assert payer.status == 404  # a light client is never refused by the global limit
        user = str(uuid.uuid4())
        await h.enroll(user)
        assert (await h.initiate(user)).status == 200  # merchants have their own budget


async def test_many_open_sessions_cannot_run_past_a_merchants_failure_budget() -> None:
    async with running_app(MERCHANT_FAILURES_PER_HOUR="10") as h:
        sessions = []
        for _ in range(8):
            user = str(uuid.uuid4())
            await h.enroll(user)
            for _ in range(2):  # 16 sessions opened before any is answered
                started = await h.initiate(user)
                assert started.status == 200
                sessions.append((user, started.body))
        failures = throttled = 0
        for user, opened in sessions:
            wrong = answers(user, opened["required_factors"], "wrong")
            answer = await h.verify(user, opened["session_id"], wrong)
            failures += answer.status == 401
            throttled += answer.body.get("code") == "MERCHANT_THROTTLED"
        assert (failures, throttled) == (10, 6)


async def test_the_budget_has_no_edge_to_straddle() -> None:
    """Ten failures just before the hour turns, then more just after: a sliding hour, so
    the second ten are refused."""
    async with running_app(MERCHANT_FAILURES_PER_HOUR="10") as h:
        h.clock.now = (h.clock.now // 3600 + 1) * 3600 - 2  # hh:59:58

        async def fail_once() -> int:
            user = str(uuid.uuid4())
            await h.enroll(user)
            started = await h.initiate(user)
            if started.status != 200:
                return started.status
            wrong = answers(user, started.body["required_factors"], "wrong")
            return (await h.verify(user, started.body["session_id"], wrong)).status

        assert [await fail_once() for _ in range(10)] == [401] * 10
        h.clock.advance(4)  # hh:00:02
        assert await fail_once() == 429


async def test_a_rival_cannot_make_a_merchant_pay_for_its_failures() -> None:
    # Every request from one test address: only the merchants' budgets are under test.
    no_address_limits = {"RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_GLOBAL": "0"}
    async with running_app(MERCHANT_FAILURES_PER_HOUR="100", **no_address_limits) as h:
        rival = await _merchant(h, "rival-shop")
        users = [str(uuid.uuid4()) for _ in range(20)]
        for user in users:
            await h.enroll(user)
            for _ in range(2):  # the rival's sessions: four wrong answers per user
                started = await h.call(
                    "POST",
                    "/v1/verification/initiate",
                    {"user_uuid": user},
                    headers={"X-API-Key": rival},
                )
                wrong = answers(user, started.body["required_factors"], "wrong")
                for _ in range(2):
                    await h.verify(user, started.body["session_id"], wrong)
        for user in users:  # one wrong answer in each of the honest merchant's sessions
            started = await h.initiate(user)
            wrong = answers(user, started.body["required_factors"], "wrong")
            assert (await h.verify(user, started.body["session_id"], wrong)).status == 401
        honest = str(uuid.uuid4())
        await h.enroll(honest)
        started = await h.initiate(honest)
        assert started.status == 200  # 20 failures of its own, far from its budget
        assert (await h.pay(honest, started.body)).status == 200


async def test_wrong_merchant_keys_are_limited_per_address() -> None:
    async with running_app(RATE_LIMIT_AUTH_FAILURES="5") as h:
        user = str(uuid.uuid4())
        guesses = []
        for _ in range(7):
            wrong = await h.call(
                "POST",
                "/v1/verification/initiate",
                {"user_uuid": user},
                headers={"X-API-Key": "zpk_0123456789ab_" + "B" * 43},
                peer="198.51.100.9",
            )
            guesses.append(wrong.status)
        assert guesses == [401] * 5 + [429] * 2
        right = await h.call(
            "POST", "/v1/verification/initiate", {"user_uuid": user}, peer="198.51.100.9"
        )
        assert right.status == 200  # the right key from that address still works
