"""Commands on PostgreSQL: ``migrate`` (pending migrations, audit partitions), ``maintain``
(one maintenance run, for those who schedule it with cron rather than leave it to the
servers) and ``merchants`` (issue, list and revoke merchant API keys; a key is printed once,
only its hash is stored)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import asyncpg
import trio
import trio_asyncio

from adapters.bridge import aio
from adapters.errors import DependencyUnavailable
from adapters.ports import MaintenanceReport
from adapters.postgres import PostgresStore, ensure_database
from zeropay_proto import LocalProtocolError
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key

from .config import Settings

P = ParamSpec("P")
T = TypeVar("T")


class NotMigrated(Exception):
    """The database lacks the schema a command needs: ``zeropay-server migrate`` first."""


def not_migrated(command: str) -> int:
    """A command's answer to :class:`NotMigrated`: a message and exit status 2."""
    print(
        f"zeropay-server {command}: the database is not migrated: run zeropay-server migrate",
        file=sys.stderr,
    )
    return 2


def run_command(function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """``trio.run`` for a command, with the error its work raised, not a group of one:
    trio-asyncio's loop (a nursery) wraps whatever ends it in an exception group, and a
    command answers each error with a message and an exit status, never a traceback. A
    refused connection is an unavailable dependency like any other."""
    try:
        return trio.run(functools.partial(function, *args, **kwargs))
    except BaseExceptionGroup as group:
        leaf = _only_leaf(group)
        if leaf is None:
            raise
        if isinstance(leaf, OSError):
            raise DependencyUnavailable("a dependency") from leaf
        if isinstance(leaf, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
            raise NotMigrated(str(leaf)) from leaf
        raise leaf from None
    except OSError as exc:
        raise DependencyUnavailable("a dependency") from exc


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception at the bottom of nested groups, if there is exactly one."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found


async def _migrate(url: str) -> list[str]:
    async with trio_asyncio.open_loop():
        if await aio(ensure_database)(url):
            print(f"created database {url.rsplit('/', 1)[-1].split('?')[0]}")
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=1)
        try:
            today = dt.datetime.now(dt.UTC).date()  # the command's clock
            applied: list[str] = await aio(store.migrate)(today=today)
        finally:
            await aio(store.aclose)()
    return applied


def migrate(settings: Settings) -> int:
    if settings.database_url is None:
        print("zeropay-server migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        applied = run_command(_migrate, settings.database_url)
    except DependencyUnavailable:
        print("zeropay-server migrate: PostgreSQL is unavailable", file=sys.stderr)
        return 1
    print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0


async def _maintain(url: str) -> MaintenanceReport:
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=1)
        try:
            report: MaintenanceReport = await aio(store.maintain)(dt.datetime.now(dt.UTC))
        finally:
            await aio(store.aclose)()
    return report


def maintain(settings: Settings) -> int:
    """One maintenance run; prints what it did as one JSON object."""
    if settings.database_url is None:
        print("zeropay-server maintain: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        report = run_command(_maintain, settings.database_url)
    except DependencyUnavailable:
        print("zeropay-server maintain: PostgreSQL is unavailable", file=sys.stderr)
        return 1
    except NotMigrated:
        return not_migrated("maintain")
    fields = dataclasses.asdict(report)
    fields["horizon"] = None if report.horizon is None else report.horizon.isoformat()
    if not report.ran:
        fields["note"] = "another instance is maintaining now; nothing was done"
    print(json.dumps(fields))
    return 0


async def _merchants(url: str, words: list[str]) -> list[str]:
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=1)
        try:
            return await _merchant_command(store, words)
        finally:
            await aio(store.aclose)()


async def _merchant_command(store: PostgresStore, words: list[str]) -> list[str]:
    now_ms = int(time.time() * 1000)
    match words:
        case ["add", merchant_id]:
            key, credential = issue_api_key(
                merchant_id, entropy=secrets.token_bytes(API_KEY_ENTROPY_BYTES), now_ms=now_ms
            )
            await aio(store.add_merchant_key)(credential)
            return [
                f"merchant {merchant_id}: key {credential.key_id} added. The key is shown once:",
                key,
            ]
        case ["list"]:
            rows = await aio(store.merchant_keys)(include_revoked=True)
            return [
                f"{c.key_id}  {c.merchant_id}  created {_iso(c.created_at_ms)}"
                + ("" if c.revoked_at_ms is None else f"  REVOKED {_iso(c.revoked_at_ms)}")
                for c in rows
            ] or ["no merchant keys"]
        case ["revoke", key_id]:
            if not await aio(store.revoke_merchant_key)(key_id, now_ms):
                raise ValueError(f"no live key {key_id}")
            return [f"key {key_id} revoked (instances stop accepting it within 10 s)"]
    raise ValueError("usage: merchants add MERCHANT_ID | list | revoke KEY_ID")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merchants(settings: Settings, words: list[str]) -> int:
    if settings.database_url is None:
        print(
            "zeropay-server merchants: DATABASE_URL is not set (the embedded default has one "
            "demo merchant, printed at start)",
            file=sys.stderr,
        )
        return 2
    try:
        lines = run_command(_merchants, settings.database_url, words)
    except DependencyUnavailable:
        print("zeropay-server merchants: PostgreSQL is unavailable", file=sys.stderr)
        return 1
    except NotMigrated:
        return not_migrated("merchants")
    except (ValueError, LocalProtocolError) as exc:
        print(f"zeropay-server merchants: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
