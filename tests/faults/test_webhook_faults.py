"""Webhooks under faults: two API instances on a private Redis and PostgreSQL deliver to a
real receiver on loopback, while the test kills an instance mid-delivery, stops PostgreSQL,
or queues 10,000 events behind an outage. After each: the history check (every audit row of
a subscribed type has exactly one outbox row, and every row is delivered or dead-lettered),
the receiver's count of distinct events (none lost), and its duplicates.

Each test appends its row to ``$ZEROPAY_WEBHOOK_REPORT`` when that is set (the table of the
resolving note and BENCHMARKS.md come from there).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.servers import command, fresh
from tests.faults.stack import Stack, running_stack
from tests.helpers import answers
from tests.services import wait_until
from tests.webhook_receiver import Receiver, running_receiver
from zeropay_proto.audit import AuditAction, AuditEvent
from zeropay_proto.webhooks import EVENT_RULES

pytestmark = [pytest.mark.slow]

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")
#: The deliverer's lease: a killed claimant's rows are claimed again after it.
LEASE_SECONDS = 30


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    extra = {"WEBHOOKS_ALLOW_LOOPBACK": "true", "LOG_LEVEL": "WARNING"}
    with running_stack(tmp_path, instances=2, extra_env=extra) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def add_endpoint(stack: Stack, url: str) -> str:
    added = command(stack.env, "webhooks", "add", "e2e-shop", url, "session.verified")
    assert added.returncode == 0, added.stderr
    return added.stdout.split()[1]


def verifications(stack: Stack, count: int) -> list[str]:
    """``count`` successful verifications, alternating between the instances; their
    sessions."""
    user = str(uuid.uuid4())
    merchant = {"X-API-Key": stack.merchant_key}
    sessions = []
    clients = [httpx.Client(base_url=s.url, timeout=30) for s in stack.servers]
    try:
        enrolled = {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"}
        assert clients[0].post("/v1/enrollment/store", json=enrolled, headers=fresh()).is_success
        for n in range(count):
            client = clients[n % len(clients)]
            started = client.post(
                "/v1/verification/initiate",
                json={"user_uuid": user, "amount": 100 + n, "currency": "EUR"},
                headers={**fresh(), **merchant},
            ).json()
            body = {
                "session_id": started["session_id"],
                "user_uuid": user,
                "factors": answers(user, started["required_factors"]),
            }
            done = client.post("/v1/verification/verify", json=body, headers=fresh())
            assert done.status_code == 200, done.text
            sessions.append(started["session_id"])
    finally:
        for client in clients:
            client.close()
    return sessions


def query(stack: Stack, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def until(predicate: Any, timeout: float) -> float:
    """Poll ``predicate`` until it holds; how long it took."""
    started = time.monotonic()
    wait_until(predicate, timeout=timeout, what="the webhook deliveries")
    return time.monotonic() - started


def settled(stack: Stack, endpoint: str) -> bool:
    rows = query(
        stack,
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending FROM webhook_outbox"
        " WHERE endpoint_id = $1",
        uuid.UUID(endpoint),
    )
    return bool(rows[0]["pending"] == 0)


def history(stack: Stack, endpoint: str, receiver: Receiver) -> dict[str, int]:
    """Every audit row of the subscribed type has exactly one outbox row, each delivered or
    dead-lettered, and the receiver got each event at least once."""
    audited = query(
        stack,
        "SELECT event_id FROM audit_log WHERE action = 'VERIFICATION_SUCCEEDED'",
    )
    rows = query(
        stack,
        "SELECT event_id, state FROM webhook_outbox WHERE endpoint_id = $1",
        uuid.UUID(endpoint),
    )
    per_event = Counter(r["event_id"] for r in rows)
    assert set(per_event) == {r["event_id"] for r in audited}
    assert set(per_event.values()) <= {1}
    states = Counter(r["state"] for r in rows)
    assert set(states) <= {"delivered", "dead"}
    received = Counter(e["id"] for e in receiver.events())
    delivered_ids = {f"evt_{r['event_id'].hex}" for r in rows if r["state"] == "delivered"}
    assert delivered_ids <= set(received)
    return {
        "produced": len(audited),
        "delivered": states["delivered"],
        "duplicates": sum(received.values()) - len(received),
        "lost": len(delivered_ids - set(received)) + states["pending"],
        "dead": states["dead"],
    }


def report(scenario: str, figures: dict[str, Any]) -> None:
    target = os.environ.get("ZEROPAY_WEBHOOK_REPORT")
    if target:
        with Path(target).open("a") as sink:
            sink.write(json.dumps({"scenario": scenario, **figures}) + "\n")


def test_two_instances_deliver_each_event_once(stack: Stack, receiver: Receiver) -> None:
    endpoint = add_endpoint(stack, receiver.url)
    verifications(stack, 40)
    took = until(lambda: len(receiver.received) >= 40 and settled(stack, endpoint), 60)
    figures = history(stack, endpoint, receiver)
    assert figures == {"produced": 40, "delivered": 40, "duplicates": 0, "lost": 0, "dead": 0}
    report("two instances, normal", {**figures, "drain_seconds": round(took, 1)})


def test_an_instance_killed_mid_delivery_loses_no_event(stack: Stack, receiver: Receiver) -> None:
    receiver.delay = 3.0  # deliveries in flight when the kill comes
    endpoint = add_endpoint(stack, receiver.url)
    verifications(stack, 10)
    until(lambda: len(receiver.received) >= 1, 30)
    for server in stack.servers:  # whichever was delivering: every instance, at once
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    receiver.delay = 0.0
    started = time.monotonic()
    stack.start_server("api-after")
    until(lambda: settled(stack, endpoint), LEASE_SECONDS + 60)
    figures = history(stack, endpoint, receiver)
    assert (figures["produced"], figures["lost"], figures["dead"]) == (10, 0, 0)
    report(
        "instances SIGKILLed mid-delivery",
        {**figures, "drain_seconds": round(time.monotonic() - started, 1)},
    )


def test_postgresql_stopped_during_delivery_loses_no_event(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.delay = 2.0
    endpoint = add_endpoint(stack, receiver.url)
    verifications(stack, 10)
    until(lambda: len(receiver.received) >= 1, 30)
    stack.postgres.stop()  # deliveries in flight cannot be recorded
    time.sleep(3)  # the length of the outage, not a wait for something
    stack.postgres.start()
    receiver.delay = 0.0
    started = time.monotonic()
    until(lambda: settled(stack, endpoint), LEASE_SECONDS + 60)
    figures = history(stack, endpoint, receiver)
    assert (figures["produced"], figures["lost"], figures["dead"]) == (10, 0, 0)
    report(
        "PostgreSQL stopped during delivery",
        {**figures, "drain_seconds": round(time.monotonic() - started, 1)},
    )


def test_ten_thousand_events_queued_behind_an_outage_drain_with_bounded_concurrency(
    stack: Stack, receiver: Receiver
) -> None:
    """The receiver is down while 10,000 events are written (through the audit log's own
    write, as the flusher does); when it is back they drain, at most PER_ENDPOINT at once."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    receiver.stop()
    endpoint = add_endpoint(stack, receiver.url)
    write_events(stack, 10_000)
    back = Receiver()
    back.start(port)
    try:
        started = time.monotonic()
        until(lambda: settled(stack, endpoint), 600)
        took = time.monotonic() - started
        figures = history(stack, endpoint, back)
        assert (figures["produced"], figures["lost"], figures["dead"]) == (10_000, 0, 0)
        assert back.most_at_once <= 4  # PER_ENDPOINT
        report(
            "10,000 events after a receiver outage",
            {
                **figures,
                "drain_seconds": round(took, 1),
                "per_second": round(10_000 / took),
                "most_at_once": back.most_at_once,
            },
        )
    finally:
        back.stop()


def write_events(stack: Stack, count: int) -> None:
    """``count`` successful verifications of the stack's merchant, written to the audit log
    in batches by the adapter's own write (audit rows and outbox rows in one transaction)."""
    from adapters.postgres import PostgresStore

    assert any(rule.action == "VERIFICATION_SUCCEEDED" for rule in EVENT_RULES)

    async def write() -> None:
        store = await PostgresStore.connect(stack.database_url, min_size=1, max_size=1)
        try:
            now_ms = int(time.time() * 1000)
            for batch in range(0, count, 1000):
                events = [
                    AuditEvent(
                        event_id=str(uuid.uuid4()),
                        action=AuditAction.VERIFICATION_SUCCEEDED,
                        user_id=str(uuid.uuid4()),
                        client="192.0.2.0",
                        at_ms=now_ms,
                        details={
                            "session": f"{n:043d}",
                            "merchant": "e2e-shop",
                            "amount": n,
                            "currency": "EUR",
                            "attempt": 1,
                            "possession": False,
                        },
                    )
                    for n in range(batch, min(count, batch + 1000))
                ]
                assert await store.write_events(events) == len(events)
        finally:
            await store.aclose()

    asyncio.run(write())
