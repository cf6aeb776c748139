"""PostgreSQL specifics: versioned migrations, monthly partitions, retention, a read replica."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from adapters.bridge import aio, bridged
from adapters.errors import DependencyUnavailable
from adapters.ports import MaintenanceReport, StoredEnrollment
from adapters.postgres import (
    MAINTENANCE_LOCK,
    PostgresStore,
    ensure_database,
    migrations,
)
from tests.adapters.helpers import new_user
from tests.adapters.test_contract import stored_enrollment
from tests.services import DATABASE_URL, PrivatePostgres, private_postgres, temporary_database
from zeropay_proto.audit import AuditAction, AuditEvent, new_event_id


async def query(url: str, sql: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    rows: list[Any] = await aio(run)()
    return rows


def test_migrations_are_numbered_and_ordered() -> None:
    found = migrations()
    assert [v for v, _, _ in found] == sorted({v for v, _, _ in found})
    assert found[0][1] == "0001_initial.sql"


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with temporary_database() as url:
        yield url


async def test_migrate_is_versioned_idempotent_and_creates_partitions_ahead(
    fresh_database: str,
) -> None:
    url = fresh_database
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=2)
        try:
            first = await aio(store.migrate)(today=dt.date(2027, 1, 15))
            second = await aio(store.migrate)(today=dt.date(2027, 1, 15))
            rows = await query(
                url,
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1",
            )
            versions = await query(url, "SELECT version FROM schema_migrations")
        finally:
            await aio(store.aclose)()
    assert first == [
        "0001_initial.sql", "0002_merchant_keys.sql", "0003_passkeys.sql",
        "0004_maintenance.sql", "0005_webhooks.sql", "0006_second_events.sql",
        "0007_merchant_names.sql",
    ]  # fmt: skip
    assert second == []
    assert [r[0] for r in versions] == [1, 2, 3, 4, 5, 6, 7]
    assert [r[0] for r in rows] == [
        "audit_log_2027_01", "audit_log_2027_02", "audit_log_2027_03", "audit_log_2027_04",
        "audit_log_default",
    ]  # fmt: skip


def old_event(at: dt.datetime) -> AuditEvent:
    import secrets

    return AuditEvent(
        event_id=new_event_id(secrets.token_bytes(16)),
        action=AuditAction.ENROLLED,
        user_id=new_user(),
        client=None,
        at_ms=int(at.timestamp() * 1000),
    )


async def test_retention_drops_partitions_older_than_ninety_days(fresh_database: str) -> None:
    url = fresh_database
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=2)
        try:
            await aio(store.migrate)(today=dt.date(2027, 1, 1))
            now = dt.datetime(2027, 6, 20, tzinfo=dt.UTC)
            await aio(store.migrate)(today=dt.date(2027, 6, 1))
            events = [
                old_event(dt.datetime(2027, 1, 10, tzinfo=dt.UTC)),  # partition dropped
                old_event(dt.datetime(2027, 3, 1, tzinfo=dt.UTC)),  # row deleted
                old_event(dt.datetime(2027, 6, 1, tzinfo=dt.UTC)),  # kept
            ]
            assert await aio(store.write_events)(events) == 3
            report = await aio(store.maintain)(now)  # its first run applies the retention
            dropped = report.partitions_dropped
            kept = await query(url, "SELECT event_id::text FROM audit_log")
            parts = await query(
                url,
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1",
            )
        finally:
            await aio(store.aclose)()
    assert dropped == 2  # January and February 2027 ended more than 90 days before June 20
    assert [r[0] for r in kept] == [events[2].event_id]
    assert "audit_log_2027_01" not in {r[0] for r in parts}
    assert "audit_log_2027_03" in {r[0] for r in parts}


PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1"
)


async def test_maintenance_keeps_partitions_ahead_across_the_year_and_moves_stranded_rows(
    fresh_database: str,
) -> None:
    """Migrated in January, then nothing for months: events of May landed in the default
    partition. Maintenance in December (the injected clock) creates every month up to March
    of the next year, May among them, and moves May's rows there: none lost, none twice."""
    url = fresh_database
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=2)
        try:
            await aio(store.migrate)(today=dt.date(2027, 1, 15))  # partitions Jan-Apr 2027
            stranded = [old_event(dt.datetime(2027, 5, day, 12, tzinfo=dt.UTC)) for day in (1, 31)]
            kept = old_event(dt.datetime(2027, 2, 3, tzinfo=dt.UTC))
            assert await aio(store.write_events)([*stranded, kept]) == 3
            in_default = await query(url, "SELECT count(*) FROM audit_log_default")
            december = dt.datetime(2027, 12, 31, 23, 0, tzinfo=dt.UTC)
            report = await aio(store.maintain)(december, keep_days=10_000)
            parts = [r[0] for r in await query(url, PARTITIONS)]
            may = await query(url, "SELECT event_id::text FROM audit_log_2027_05 ORDER BY at")
            total = await query(url, "SELECT count(*) FROM audit_log")
            left = await query(url, "SELECT count(*) FROM audit_log_default")
            again = await aio(store.maintain)(december, keep_days=10_000)
        finally:
            await aio(store.aclose)()
    assert in_default[0][0] == 2
    assert report.ran
    assert report.rows_moved == 2
    assert report.partitions_created == 4 + 1  # December to March 2028, and May 2027
    assert [r[0] for r in may] == [e.event_id for e in stranded]
    assert (total[0][0], left[0][0]) == (3, 0)
    assert {
        "audit_log_2027_05",
        "audit_log_2027_12",
        "audit_log_2028_01",
        "audit_log_2028_03",
    } <= set(parts)
    assert "audit_log_2027_06" not in parts  # months with no rows are not made backwards
    assert report.horizon == dt.datetime(2028, 4, 1, tzinfo=dt.UTC)
    assert (again.partitions_created, again.rows_moved, again.retention_applied) == (0, 0, False)


async def test_maintenance_applies_retention_once_a_day_and_one_instance_at_a_time(
    fresh_database: str,
) -> None:
    url = fresh_database
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=3)
        try:
            await aio(store.migrate)(today=dt.date(2027, 1, 1))
            old = old_event(dt.datetime(2027, 1, 10, tzinfo=dt.UTC))
            assert await aio(store.write_events)([old]) == 1
            june = dt.datetime(2027, 6, 20, tzinfo=dt.UTC)
            first = await aio(store.maintain)(june)
            newer = old_event(dt.datetime(2027, 3, 1, tzinfo=dt.UTC))  # 111 days before June 20
            assert await aio(store.write_events)([newer]) == 1
            later = await aio(store.maintain)(june + dt.timedelta(hours=23))
            kept_then = await query(url, "SELECT count(*) FROM audit_log")
            next_day = await aio(store.maintain)(june + dt.timedelta(days=1))
            kept_after = await query(url, "SELECT count(*) FROM audit_log")

            async def hold_the_lock() -> Any:
                conn = await asyncpg.connect(url)
                transaction = conn.transaction()
                await transaction.start()
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK)
                return conn, transaction

            conn, transaction = await aio(hold_the_lock)()
            try:
                skipped = await aio(store.maintain)(june + dt.timedelta(days=2))
            finally:
                await aio(transaction.rollback)()
                await aio(conn.close)()
        finally:
            await aio(store.aclose)()
    assert first.retention_applied
    assert first.partitions_dropped >= 1
    assert not later.retention_applied  # within a day of the last run
    assert kept_then[0][0] == 1
    assert next_day.retention_applied
    assert kept_after[0][0] == 0
    assert skipped == MaintenanceReport(ran=False, horizon=None)


async def replicated(store: Any, user: str) -> bool:
    try:
        return await store.export_enrollment(user) is not None
    except asyncpg.UndefinedTableError:  # the schema itself has not replayed yet
        return False


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    with private_postgres() as primary:
        standby = primary.replica()
        try:
            standby.start()
            yield primary, standby
        finally:
            standby.remove()


async def test_exports_read_the_replica_and_security_reads_the_primary(
    primary_and_replica: tuple[PrivatePostgres, PrivatePostgres],
) -> None:
    primary, standby = primary_and_replica
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(
            primary.url,
            replica_dsn=standby.url,
            min_size=1,
            max_size=2,
            replica_min_size=1,
            replica_max_size=2,
        )
        on_trio = bridged(store, dependency="postgresql", timeout=10)
        try:
            await on_trio.migrate(today=dt.date.today())
            user = new_user()
            row: StoredEnrollment = stored_enrollment(user)
            assert await on_trio.insert_enrollment(row)
            assert await on_trio.load_enrollment(user) == row  # primary: at once
            with trio.fail_after(30):  # the replica catches up by streaming
                while not await replicated(on_trio, user):
                    await trio.sleep(0.05)
            assert await on_trio.export_enrollment(user) == row
            in_recovery = await query(standby.url, "SELECT pg_is_in_recovery()")
            assert in_recovery[0][0] is True
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await query(standby.url, "DELETE FROM wrapped_keys")
        finally:
            await aio(store.aclose)()


def test_migrate_creates_a_missing_database_once() -> None:
    name = f"zp_ensure_{secrets.token_hex(4)}"
    url = f"{DATABASE_URL.rpartition('/')[0]}/{name}"

    async def run() -> list[bool]:
        created = [await ensure_database(url), await ensure_database(url)]
        admin = await asyncpg.connect(DATABASE_URL)
        try:
            await admin.execute(f'DROP DATABASE "{name}"')
        finally:
            await admin.close()
        return created

    assert asyncio.run(run()) == [True, False]


async def test_a_copy_cut_off_by_its_deadline_never_poisons_the_pool(
    migrated_database: str,
) -> None:
    """The verify read is a COPY, cut off here by the bridge's deadline while it waits on a
    lock: with a pool of one connection, every later read must still work. (A COPY broken by
    PostgreSQL going away midway, which once left its connection mid-operation, "another
    operation is in progress", is the fault suite's PostgreSQL stop.)"""
    user = new_user()
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(migrated_database, min_size=1, max_size=1)
        on_trio = bridged(store, dependency="postgresql", timeout=0.3)
        try:
            lock = await aio(asyncpg.connect)(migrated_database)
            transaction = lock.transaction()
            await aio(transaction.start)()
            await aio(lock.execute)("LOCK TABLE wrapped_keys IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(DependencyUnavailable):
                await on_trio.load_enrollment(user)  # blocked behind the lock, then cut off
            await aio(transaction.rollback)()
            await aio(lock.close)()
            for _ in range(3):
                assert await on_trio.load_enrollment(user) is None
        finally:
            await aio(store.aclose)()
