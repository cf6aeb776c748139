"""The webhook outbox in PostgreSQL: which rows the audit write makes, when each is due, and
how an operator's retry picks one event of an audit row that made two."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio_asyncio

from adapters.bridge import aio
from adapters.postgres import PostgresStore
from tests.adapters.helpers import new_user
from tests.adapters.test_postgres import query
from tests.services import temporary_database
from zeropay_proto.audit import AuditAction, AuditEvent, new_event_id, with_lock_end
from zeropay_proto.webhooks import (
    EVENT_TYPES,
    WebhookEndpoint,
    parse_webhook_event_id,
    webhook_event_id,
)

MERCHANT = "outbox-shop"
SESSION = "s" * 43


@pytest.fixture
def database_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[PostgresStore, str]]:
    async with trio_asyncio.open_loop():
        opened = await aio(PostgresStore.connect)(database_url, min_size=1, max_size=2)
        try:
            await aio(opened.migrate)(today=dt.datetime.now(dt.UTC).date())
            yield opened, database_url
        finally:
            await aio(opened.aclose)()


def audit(action: AuditAction, user: str, at_ms: int, **details: Any) -> AuditEvent:
    return AuditEvent(
        event_id=new_event_id(secrets.token_bytes(16)),
        action=action,
        user_id=user,
        client=None,
        at_ms=at_ms,
        details={"session": SESSION, **details},
    )


async def endpoint(store: PostgresStore, *types: str) -> str:
    added = WebhookEndpoint(
        endpoint_id=str(uuid.uuid4()),
        merchant_id=MERCHANT,
        url="https://hooks.example/zeropay",
        events=frozenset(types or EVENT_TYPES),
        created_at_ms=int(time.time() * 1000),
    )
    await aio(store.add_webhook_endpoint)(added, b"sealed")
    return added.endpoint_id


async def test_a_lock_makes_two_rows_the_unlock_due_when_the_lock_ends(
    store: tuple[PostgresStore, str],
) -> None:
    pg, url = store
    await endpoint(pg)
    user, now_ms = new_user(), int(time.time() * 1000)
    until_ms = now_ms + 3_600_000
    opened = audit(
        AuditAction.SESSION_INITIATED, user, now_ms - 1000, merchant=MERCHANT, expires_at_ms=0
    )
    lock = with_lock_end(audit(AuditAction.ACCOUNT_LOCKED, user, now_ms), until_ms)
    unknown_end = audit(AuditAction.ACCOUNT_LOCKED, user, now_ms)  # written before lock ends
    assert await aio(pg.write_events)([opened, lock, unknown_end]) == 3
    rows = await query(
        url,
        "SELECT event_id::text, type, (extract(epoch FROM due_at) * 1000)::bigint AS due"
        " FROM webhook_outbox WHERE type LIKE 'account.%' ORDER BY type, due",
    )
    assert sorted((r["event_id"], r["type"], r["due"]) for r in rows) == sorted(
        [
            (lock.event_id, "account.locked", now_ms),
            (unknown_end.event_id, "account.locked", now_ms),
            (lock.event_id, "account.unlocked", until_ms),
        ]
    )

    # Due now: the two locks and the session's expiry (long past); the unlock waits an hour.
    claimed = await aio(pg.claim_deliveries)(10, 30_000, per_endpoint=10, room={})
    assert sorted(d.event_type for d in claimed) == [
        "account.locked",
        "account.locked",
        "session.expired",
    ]
    for delivery in claimed:
        await aio(pg.settle_delivery)(
            delivery, delivered=True, status=200, error=None, next_attempt_ms=None
        )
    states = await query(url, "SELECT type, state FROM webhook_outbox ORDER BY type")
    assert [tuple(r) for r in states] == [
        ("account.locked", "delivered"),
        ("account.locked", "delivered"),
        ("account.unlocked", "pending"),  # settling the lock's row left the unlock's alone
        ("session.expired", "delivered"),
    ]


async def test_an_operator_retries_one_of_a_rows_two_events_by_its_id(
    store: tuple[PostgresStore, str],
) -> None:
    pg, _ = store
    await endpoint(pg, "account.locked", "account.unlocked")
    user, now_ms = new_user(), int(time.time() * 1000)
    opened = audit(AuditAction.SESSION_INITIATED, user, now_ms - 5000, merchant=MERCHANT)
    lock = with_lock_end(audit(AuditAction.ACCOUNT_LOCKED, user, now_ms - 4000), now_ms - 1000)
    assert await aio(pg.write_events)([opened, lock]) == 2
    claimed = await aio(pg.claim_deliveries)(10, 30_000, per_endpoint=10, room={})
    assert sorted(d.event_type for d in claimed) == ["account.locked", "account.unlocked"]
    for delivery in claimed:
        await aio(pg.settle_delivery)(
            delivery, delivered=True, status=200, error=None, next_attempt_ms=None
        )
    event_id, types = parse_webhook_event_id(webhook_event_id(lock.event_id, "account.unlocked"))
    assert event_id == lock.event_id
    requeued = await aio(pg.requeue_deliveries)(event_id=event_id, since_ms=None, event_types=types)
    assert requeued == 1
    again = await aio(pg.claim_deliveries)(10, 30_000, per_endpoint=10, room={})
    assert [(d.event.event_id, d.event_type, d.attempt) for d in again] == [
        (lock.event_id, "account.unlocked", 2)
    ]
