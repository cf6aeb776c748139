"""Webhooks end to end: a server process on Redis and PostgreSQL, and a real HTTP receiver on
loopback that the test starts and scripts (answer 200, 500, 410, a redirect, or nothing in
time). Each outcome is read back from the receiver and from the outbox in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from zeropay_client import verify_webhook

from tests.e2e.servers import (
    ServerProcess,
    add_merchant,
    command,
    fresh,
    production_env,
    running_server,
)
from tests.helpers import answers
from tests.services import (
    REDIS_URL,
    delete_prefix,
    temporary_database,
    unique_prefix,
    wait_until,
)
from tests.webhook_receiver import Receiver, running_receiver

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


@dataclass
class Stack:
    server: ServerProcess
    env: dict[str, str]
    merchant: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = unique_prefix()
    with temporary_database() as database_url:
        env = production_env(
            REDIS_URL,
            prefix,
            database_url,
            DB_AUTO_MIGRATE="true",
            AUDIT_FLUSH_INTERVAL="100",
            WEBHOOKS_ALLOW_LOOPBACK="true",
            REDIS_SESSION_TTL="4",  # so that a session left alone expires within the test
            LOCKOUT_DURATIONS="3",  # and a locked account is unlocked within it
            RATE_LIMIT_GLOBAL="100000",
            RATE_LIMIT_PER_IP="100000",
            RATE_LIMIT_PER_USER="100000",
        )
        merchant = {"X-API-Key": add_merchant(env, "hook-shop")}
        with running_server(env, Path(tmp_path_factory.mktemp("webhooks"))) as server:
            yield Stack(server, env, merchant)
    delete_prefix(REDIS_URL, prefix)


def add_endpoint(stack: Stack, url: str, *types: str) -> tuple[str, str]:
    added = command(stack.env, "webhooks", "add", "hook-shop", url, *types)
    assert added.returncode == 0, added.stderr
    head, secret = added.stdout.strip().splitlines()
    return head.split()[1], secret


def outbox(stack: Stack, endpoint: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            rows = await conn.fetch(
                "SELECT type, state, attempts, last_status, last_error FROM webhook_outbox"
                " WHERE endpoint_id = $1 ORDER BY at",
                uuid.UUID(endpoint),
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(fetch())


def until(predicate: Any, timeout: float = 40) -> None:
    """Poll ``predicate`` until it holds (the deliverer polls every second; retries wait
    their back-off, 5 to 10 s the first time)."""
    wait_until(predicate, timeout=timeout, what="the webhook deliveries")


def pay(
    stack: Stack, *, wrong: bool = False, answered: bool = True, user: str | None = None
) -> dict[str, Any]:
    """Enroll a user (or take ``user``, enrolled), open a session of 42.50 EUR and answer it
    (wrongly: three times; or not at all)."""
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        if user is None:
            user = str(uuid.uuid4())
            factors = answers(user, list(FACTORS))
            enrolled = {"user_uuid": user, "factors": factors, "device_id": "d"}
            assert client.post("/v1/enrollment/store", json=enrolled, headers=fresh()).is_success
        body = {"user_uuid": user, "amount": 4250, "currency": "EUR"}
        started = client.post(
            "/v1/verification/initiate", json=body, headers={**fresh(), **stack.merchant}
        ).json()
        answer = "wrong" if wrong else "right"
        verify = {
            "session_id": started["session_id"],
            "user_uuid": user,
            "factors": answers(user, started["required_factors"], answer),
        }
        answer_json: dict[str, Any] = {}
        for _ in range((3 if wrong else 1) if answered else 0):
            answer_json = client.post(
                "/v1/verification/verify", json=verify, headers=fresh()
            ).json()
        return {"session_id": started["session_id"], "user": user, "answer": answer_json}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def test_a_verified_and_a_failed_session_are_told_signed_with_the_same_receipt(
    stack: Stack, receiver: Receiver
) -> None:
    endpoint, secret = add_endpoint(stack, receiver.url, "session.verified", "session.failed")
    paid = pay(stack)
    failed = pay(stack, wrong=True)
    until(lambda: len(receiver.received) >= 2)
    for headers, body in receiver.received:
        event = verify_webhook(body, headers["ZeroPay-Signature"], secret)
        assert event["merchant_id"] == "hook-shop"
    by_type = {e["type"]: e for e in receiver.events()}
    verified = by_type["session.verified"]["data"]
    assert verified["session_id"] == paid["session_id"]
    assert (verified["amount"], verified["currency"]) == (4250, "EUR")
    assert verified["receipt_jws"] == paid["answer"]["receipt_jws"]  # the same receipt
    assert by_type["session.failed"]["data"]["session_id"] == failed["session_id"]
    rows = outbox(stack, endpoint)
    assert sorted(r["type"] for r in rows) == ["session.failed", "session.verified"]
    assert all((r["state"], r["attempts"], r["last_status"]) == ("delivered", 1, 200) for r in rows)
    command(stack.env, "webhooks", "disable", endpoint)


@pytest.mark.parametrize("first", [500, 410, "redirect", "slow"])
def test_a_failed_delivery_is_retried_until_the_receiver_takes_it(
    stack: Stack, receiver: Receiver, first: int | str
) -> None:
    receiver.script = [first]
    endpoint, secret = add_endpoint(stack, receiver.url, "session.verified")
    pay(stack)
    until(lambda: len(receiver.received) >= 2, timeout=60)
    first_try, retry = receiver.received[:2]
    assert json.loads(first_try[1])["id"] == json.loads(retry[1])["id"]  # one event, again
    verify_webhook(retry[1], retry[0]["ZeroPay-Signature"], secret)
    until(lambda: outbox(stack, endpoint)[0]["state"] == "delivered")
    row = outbox(stack, endpoint)[0]
    assert (row["attempts"], row["last_status"]) == (2, 200)
    command(stack.env, "webhooks", "disable", endpoint)


def test_a_receiver_that_is_down_gets_the_event_when_it_is_back(stack: Stack) -> None:
    receiver = Receiver()
    receiver.start()
    url = receiver.url
    receiver.stop()  # nothing listens there now
    endpoint, _ = add_endpoint(stack, url, "session.verified")
    pay(stack)
    until(lambda: bool(outbox(stack, endpoint)) and outbox(stack, endpoint)[0]["attempts"] >= 1)
    down = outbox(stack, endpoint)[0]
    assert (down["state"], down["last_status"]) == ("pending", None)
    back = Receiver()
    back.start(int(url.rsplit(":", 1)[1].split("/")[0]))  # the same port, listening again
    try:
        until(lambda: outbox(stack, endpoint)[0]["state"] == "delivered", timeout=60)
        assert len(back.received) == 1
    finally:
        back.stop()
    command(stack.env, "webhooks", "disable", endpoint)


def test_an_endpoint_on_a_private_address_is_never_contacted(stack: Stack) -> None:
    """An endpoint whose host is a private address (here written to PostgreSQL directly, as
    a name rebound after registration would resolve): each delivery checks the addresses
    first, and refuses."""
    endpoint, _ = add_endpoint(stack, "http://127.0.0.1:9/hooks", "session.verified")

    async def aim_at_private() -> None:
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            await conn.execute(
                "UPDATE webhook_endpoints SET url = 'https://10.20.30.40/hooks'"
                " WHERE endpoint_id = $1",
                uuid.UUID(endpoint),
            )
        finally:
            await conn.close()

    asyncio.run(aim_at_private())
    pay(stack)
    until(lambda: bool(outbox(stack, endpoint)) and outbox(stack, endpoint)[0]["attempts"] >= 1)
    row = outbox(stack, endpoint)[0]
    assert row["state"] == "pending"
    assert "private address" in row["last_error"]
    command(stack.env, "webhooks", "disable", endpoint)


def test_a_session_left_alone_expires_and_a_decided_one_does_not(
    stack: Stack, receiver: Receiver
) -> None:
    """``session.expired`` is written with the session, due at its expiry (4 s here), and
    withdrawn when the session is decided first."""
    endpoint, _ = add_endpoint(stack, receiver.url, "session.expired", "session.verified")
    left = pay(stack, answered=False)
    decided = pay(stack)
    until(lambda: len(receiver.received) >= 2)
    until(
        lambda: (
            len(receiver.events()) >= 2
            and all(r["state"] in ("delivered", "withdrawn") for r in outbox(stack, endpoint))
        )
    )
    told = {(e["type"], e["data"]["session_id"]) for e in receiver.events()}
    assert told == {
        ("session.expired", left["session_id"]),
        ("session.verified", decided["session_id"]),
    }
    # The decided session's expiry was withdrawn, or never written (decided in its batch).
    states = sorted(r["state"] for r in outbox(stack, endpoint))
    assert states in (["delivered", "delivered"], ["delivered", "delivered", "withdrawn"])
    command(stack.env, "webhooks", "disable", endpoint)


def test_a_lock_is_told_when_it_starts_and_again_when_it_ends(
    stack: Stack, receiver: Receiver
) -> None:
    """Five failed attempts lock the account (3 s here): ``account.locked`` at once, and
    ``account.unlocked``, scheduled with the lock, when it ends; two events, two ids."""
    endpoint, secret = add_endpoint(stack, receiver.url, "account.locked", "account.unlocked")
    first = pay(stack, wrong=True)
    second = pay(stack, wrong=True, user=first["user"])
    assert second["answer"]["code"] == "ACCOUNT_LOCKED"  # the sixth attempt is refused
    until(lambda: len(receiver.received) >= 2)
    for headers, body in receiver.received:
        verify_webhook(body, headers["ZeroPay-Signature"], secret)
    locked, unlocked = receiver.events()
    assert (locked["type"], unlocked["type"]) == ("account.locked", "account.unlocked")
    assert locked["id"] != unlocked["id"]
    assert locked["data"]["session_id"] == unlocked["data"]["session_id"] == second["session_id"]
    until_ms = locked["data"]["locked_until_ms"]
    assert unlocked["data"]["locked_until_ms"] == unlocked["created_at_ms"] == until_ms
    assert until_ms - locked["created_at_ms"] == 3000
    assert all(r["state"] == "delivered" for r in outbox(stack, endpoint))
    # An operator retries the unlock alone, by the id its receiver saw.
    retried = command(stack.env, "webhooks", "retry", unlocked["id"])
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith("1 deliveries")
    until(lambda: len(receiver.received) >= 3)
    assert receiver.events()[2]["id"] == unlocked["id"]
    command(stack.env, "webhooks", "disable", endpoint)


def test_an_enrollment_change_is_told_to_the_merchants_of_the_users_sessions(
    stack: Stack, receiver: Receiver
) -> None:
    endpoint, _ = add_endpoint(stack, receiver.url, "enrollment.changed")
    paid = pay(stack)
    token = paid["answer"]["auth_token"]
    with httpx.Client(base_url=stack.server.url, timeout=30) as client:
        deleted = client.delete(
            f"/v1/enrollment/delete/{paid['user']}",
            headers={**fresh(), "Authorization": f"Bearer {token}"},
        )
        assert deleted.status_code == 200, deleted.text
    until(lambda: len(receiver.received) >= 1)
    (event,) = receiver.events()
    assert (event["type"], event["data"]["user_uuid"]) == ("enrollment.changed", paid["user"])
    assert event["merchant_id"] == "hook-shop"
    command(stack.env, "webhooks", "disable", endpoint)


def readme_receiver() -> dict[str, Any]:
    text = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")
    marked = r"<!-- webhook-receiver -->\n```python\n(.*?)```\n<!-- /webhook-receiver -->"
    found = re.search(marked, text, re.S)
    assert found, "the README's receiver is marked <!-- webhook-receiver -->"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md", "exec"), namespace)  # noqa: S102 - the README's
    return namespace


def test_the_readmes_receiver_checks_and_deduplicates_real_deliveries(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.script = [500]  # the first delivery fails: the same event comes again
    endpoint, secret = add_endpoint(stack, receiver.url, "session.verified")
    pay(stack)
    until(lambda: len(receiver.received) >= 2, timeout=60)
    readme = readme_receiver()
    answered = [
        readme["receive"](body, h["ZeroPay-Signature"], secret) for h, body in receiver.received
    ]
    assert answered == [200, 200]
    assert len(readme["seen"]) == 1  # one event, delivered twice, handled once
    headers, body = receiver.received[0]
    assert readme["receive"](body + b" ", headers["ZeroPay-Signature"], secret) == 400
    assert readme["receive"](body, headers["ZeroPay-Signature"], "whsec_wrong") == 400
    command(stack.env, "webhooks", "disable", endpoint)


def test_an_operator_lists_retries_and_replays_deliveries(stack: Stack, receiver: Receiver) -> None:
    endpoint, _ = add_endpoint(stack, receiver.url, "session.verified")
    pay(stack)
    until(lambda: len(receiver.received) == 1)
    until(lambda: outbox(stack, endpoint)[0]["state"] == "delivered")
    listed = command(stack.env, "webhooks", "deliveries", endpoint)
    (line,) = listed.stdout.strip().splitlines()
    event = line.split()[0]
    assert event == receiver.events()[0]["id"]
    assert "session.verified  delivered  attempts 1" in line
    assert command(stack.env, "webhooks", "retry", event).returncode == 0
    until(lambda: len(receiver.received) == 2)  # sent again, the same event
    assert receiver.events()[1]["id"] == event
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    replayed = command(stack.env, "webhooks", "replay", "--since", since)
    assert replayed.returncode == 0, replayed.stderr
    assert int(replayed.stdout.split()[0]) >= 1
    until(lambda: len(receiver.received) == 3)
    assert command(stack.env, "webhooks", "retry", "evt_" + "0" * 32).returncode == 2
    command(stack.env, "webhooks", "disable", endpoint)


def test_a_slow_endpoint_holds_up_no_other_merchants_deliveries(stack: Stack) -> None:
    slow, fast = Receiver(delay=3.0), Receiver()
    slow.start()
    fast.start()
    other_key = add_merchant(stack.env, "other-shop")
    try:
        slow_endpoint, _ = add_endpoint(stack, slow.url, "session.verified")
        added = command(stack.env, "webhooks", "add", "other-shop", fast.url, "session.verified")
        assert added.returncode == 0, added.stderr
        for _ in range(12):
            pay(stack)  # hook-shop's: 12 events at 3 s each, 4 at a time
        other = Stack(stack.server, stack.env, {"X-API-Key": other_key})

        def key_known() -> bool:  # instances reload merchant keys every 10 s
            body = {"user_uuid": str(uuid.uuid4())}
            headers = {**fresh(), **other.merchant}
            url = f"{stack.server.url}/v1/verification/initiate"
            return httpx.post(url, json=body, headers=headers).status_code == 200

        until(key_known, 30)
        for _ in range(5):
            pay(other)
        until(lambda: len(fast.received) == 5)
        # The other merchant was told everything while the slow endpoint still works through
        # its own queue.
        assert any(r["state"] == "pending" for r in outbox(stack, slow_endpoint))
        until(lambda: all(r["state"] == "delivered" for r in outbox(stack, slow_endpoint)), 90)
        assert slow.most_at_once <= 4
        command(stack.env, "webhooks", "disable", slow_endpoint)
        command(stack.env, "webhooks", "disable", added.stdout.split()[1])
    finally:
        slow.stop()
        fast.stop()


def test_after_a_rotation_both_secrets_verify_for_a_day(stack: Stack, receiver: Receiver) -> None:
    endpoint, old = add_endpoint(stack, receiver.url, "session.verified")
    rotated = command(stack.env, "webhooks", "rotate-secret", endpoint)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip().splitlines()[-1]
    pay(stack)
    until(lambda: len(receiver.received) == 1)
    headers, body = receiver.received[0]
    signature = headers["ZeroPay-Signature"]
    assert signature.count("v1=") == 2
    assert verify_webhook(body, signature, new) == verify_webhook(body, signature, old)
    command(stack.env, "webhooks", "disable", endpoint)
