"""Master key rotation on PostgreSQL and Redis: 10,000 records re-sealed in batches,
interrupted and resumed, with an enrollment changed meanwhile and cached records dropped; and
the refusal to start when a version in use is not configured."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from adapters.bridge import aio, bridged
from adapters.ports import CachedEnrollment
from adapters.postgres import PostgresStore
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from tests.e2e.servers import production_keys
from tests.services import REDIS_URL, delete_prefix, temporary_database, unique_prefix
from zeropay_proto import EnrollmentRecord, Factor, MasterKeyring, WrappedKey
from zeropay_proto.crypto import envelope_key_version, open_record, seal_record
from zeropay_server.rotate import Progress, RotationReport, UnconfiguredVersions, rotate

OLD = MasterKeyring(keys={1: b"1" * 32}, current=1)
ROTATING = MasterKeyring(keys={1: b"1" * 32, 2: b"2" * 32}, current=2)
NEW_ONLY = MasterKeyring(keys={2: b"2" * 32}, current=2)
RECORDS = 10_000


def record(user: str, marker: bytes = b"v") -> EnrollmentRecord:
    verifiers = dict.fromkeys((Factor.PIN, Factor.COLOUR, Factor.WORDS), marker * 32)
    return EnrollmentRecord(user_id=user, verifiers=verifiers, enrolled_at_s=1)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@asynccontextmanager
async def stores(database: str, prefix: str) -> AsyncIterator[tuple[Any, Any]]:
    """PostgreSQL (migrated) and Redis, each behind the bridge as the command uses them."""
    async with trio_asyncio.open_loop():
        postgres = await aio(PostgresStore.connect)(database, min_size=1, max_size=3)
        redis = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
        try:
            await aio(postgres.migrate)(today=dt.date.today())
            yield (
                bridged(postgres, dependency="postgresql", timeout=60),
                from_trio(redis, timeout=5),
            )
        finally:
            await aio(redis.aclose)()
            await aio(postgres.aclose)()
            delete_prefix(REDIS_URL, prefix)


async def insert_old_records(database: str, users: list[str]) -> None:
    """``users`` enrolled under key version 1, in one COPY."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        (
            uuid.UUID(u),
            secrets.token_bytes(40),
            secrets.token_bytes(16),
            1000,
            1,
            3,
            seal_record(OLD, record(u), nonce=secrets.token_bytes(12)),
            "phone-1",
            now,
            now,
        )
        for u in users
    ]

    async def copy() -> None:
        conn = await asyncpg.connect(database)
        try:
            await conn.copy_records_to_table("wrapped_keys", records=rows)
        finally:
            await conn.close()

    await aio(copy)()


class ChangedMeanwhile:
    """PostgreSQL as rotation sees it, with one user's enrollment replaced (under the current
    version, as a live update does) between rotation's read of a batch and its write."""

    def __init__(self, inner: Any, user: str, newer: bytes) -> None:
        self.inner, self.user, self.newer = inner, user, newer
        self.done = False

    async def key_versions(self) -> dict[int, int]:
        versions: dict[int, int] = await self.inner.key_versions()
        return versions

    async def records_to_reseal(
        self, current: int, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = await self.inner.records_to_reseal(current, after, limit)
        if not self.done and any(user == self.user for user, _ in rows):
            self.done = True
            row = await self.inner.load_enrollment(self.user)
            changed = dataclass_replace(row, self.newer)
            assert await self.inner.replace_enrollment(changed)
        return rows

    async def reseal_records(self, current: int, resealed: list[tuple[str, bytes, bytes]]) -> int:
        stored: int = await self.inner.reseal_records(current, resealed)
        return stored


def dataclass_replace(row: Any, sealed: bytes) -> Any:
    key: WrappedKey = dataclasses.replace(row.wrapped_key, key_version=2)
    return dataclasses.replace(row, sealed_record=sealed, wrapped_key=key)


async def test_ten_thousand_records_rotate_interrupted_and_resumed(database: str) -> None:
    users = sorted(str(uuid.uuid4()) for _ in range(RECORDS))
    cached = users[:5]
    async with stores(database, unique_prefix()) as (postgres, redis):
        await insert_old_records(database, users)
        for user in cached:  # as initiate caches them
            entry = CachedEnrollment(sealed_record=b"old", wrapped_key=None)
            await redis.cache_record(user, entry, 3_600_000)
        first_out = io.StringIO()
        started = time.monotonic()
        first: RotationReport = await rotate(
            postgres, redis, ROTATING, hold_ms=8000, out=first_out, batch=500, max_batches=6
        )  # the interruption: six batches, then the process is gone
        second = await rotate(postgres, redis, ROTATING, hold_ms=8000, out=io.StringIO())
        seconds = time.monotonic() - started
        third = await rotate(postgres, redis, ROTATING, hold_ms=8000, out=io.StringIO())
        stored = {u: (await postgres.load_enrollment(u)).sealed_record for u in users[::97]}
        gone = [(await redis.load_for_initiate(u)).cached for u in cached]
        versions = await postgres.key_versions()
    assert (first.resealed, first.finished) == (3_000, False)
    assert len(first_out.getvalue().splitlines()) == 6  # one JSON line per batch
    assert json.loads(first_out.getvalue().splitlines()[-1])["resealed"] == 3_000
    assert (second.resealed, second.kept_newer, second.finished) == (7_000, 0, True)
    assert (third.resealed, third.finished) == (0, True)  # nothing left: idempotent
    assert versions == {2: RECORDS}
    assert second.droppable == [1]
    assert all(envelope_key_version(e) == 2 for e in stored.values())
    assert all(open_record(NEW_ONLY, user_id=u, envelope=e) == record(u) for u, e in stored.items())
    assert gone == [None] * len(cached)  # their cache entries were dropped (and held)
    print(f"\nrotation: {RECORDS:,} records in {seconds:.1f} s, {RECORDS / seconds:,.0f}/s")


async def test_a_record_changed_meanwhile_keeps_the_newer_one(database: str) -> None:
    users = sorted(str(uuid.uuid4()) for _ in range(50))
    changed = users[20]
    newer = seal_record(ROTATING, record(changed, b"n"), nonce=secrets.token_bytes(12))
    async with stores(database, unique_prefix()) as (postgres, redis):
        await insert_old_records(database, users)
        live = ChangedMeanwhile(postgres, changed, newer)
        report = await rotate(live, redis, ROTATING, hold_ms=8000, out=io.StringIO(), batch=50)
        kept = (await postgres.load_enrollment(changed)).sealed_record
        others = [(await postgres.load_enrollment(u)).sealed_record for u in users if u != changed]
    assert live.done
    assert (report.resealed, report.kept_newer) == (49, 1)
    assert kept == newer  # not overwritten with the record read before the change
    assert all(envelope_key_version(e) == 2 for e in others)


async def test_rotation_refuses_to_start_when_a_version_in_use_is_not_configured(
    database: str,
) -> None:
    async with stores(database, unique_prefix()) as (postgres, redis):
        await insert_old_records(database, [str(uuid.uuid4())])
        with pytest.raises(UnconfiguredVersions) as refused:
            await rotate(postgres, redis, NEW_ONLY, hold_ms=8000, out=io.StringIO())
    assert refused.value.versions == [1]


async def test_the_command_names_the_missing_version_and_exits_non_zero(database: str) -> None:
    async with stores(database, unique_prefix()) as _:
        await insert_old_records(database, [str(uuid.uuid4())])
    keys = production_keys()
    keys["ZEROPAY_MASTER_KEYS"] = f"7:{base64.b64encode(b'7' * 32).decode()}"
    prefix = unique_prefix()
    env = {
        **os.environ,
        **keys,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "DATABASE_URL": database,
    }
    command = [sys.executable, "-m", "zeropay_server", "rotate-keys"]
    try:
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        )
    finally:
        delete_prefix(REDIS_URL, prefix)  # the command has exited: nothing writes after this
    assert result.returncode == 2, result.stderr
    assert "key version(s) 1" in result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_with_an_eta_on_a_terminal_and_json_lines_otherwise() -> None:
    terminal = Terminal()
    bar = Progress(1_000, terminal, clock=iter([100.0, 102.0]).__next__)
    bar.update(250)  # 2 s in: 125/s, 750 left: 6 s
    bar.close()
    shown = terminal.getvalue()
    assert shown == "\r[#######.......................] 250/1,000 records, 125/s, ETA 00:06 \n"
    lines = io.StringIO()
    Progress(1_000, lines, clock=iter([100.0, 104.0]).__next__).update(500)
    assert json.loads(lines.getvalue()) == {
        "resealed": 500,
        "total": 1_000,
        "per_s": 125.0,
        "eta_s": 4.0,
    }
