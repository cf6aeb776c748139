"""Commands on PostgreSQL: ``migrate`` (pending migrations, audit partitions), ``maintain``
(one maintenance run, for those who schedule it with cron rather than leave it to the
servers) and ``merchants`` (issue, list and revoke merchant API keys; a key is printed once,
only its hash is stored); and what every command shares: :func:`on_postgres` runs its work
on PostgreSQL, and a failure is a :class:`CommandFailed`, a message and an exit status."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import trio
import trio_asyncio
from redis.exceptions import RedisError

from adapters.bridge import aio
from adapters.errors import DependencyUnavailable
from adapters.ports import MaintenanceReport
from adapters.postgres import PostgresStore, ensure_database
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore
from zeropay_proto import LocalProtocolError, RemoteProtocolError, b64url
from zeropay_proto.crypto import NONCE_BYTES, seal
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key, parse_display_name
from zeropay_proto.webhooks import (
    SECRET_BYTES,
    WebhookEndpoint,
    parse_event_types,
    parse_webhook_event_id,
    parse_webhook_url,
    webhook_event_id,
)

from .config import Settings
from .merchants import REFRESH_SECONDS, REVOCATION_POLL_SECONDS
from .webhooks import checked_addresses

T = TypeVar("T")


class CommandFailed(Exception):
    """What a command answers instead of a traceback: ``message`` and the exit status
    (1: a dependency is unavailable, try again; 2: the command or its setup is wrong)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def command_failures(command: str, run: Callable[[], int]) -> int:
    """``run()``'s exit status, with any :class:`CommandFailed` printed as
    ``zeropay-server COMMAND: message``."""
    try:
        return run()
    except CommandFailed as failed:
        print(f"zeropay-server {command}: {failed.message}", file=sys.stderr)
        return failed.status


def on_postgres(
    url: str | None,
    work: Callable[[PostgresStore], Awaitable[T]],
    *,
    create_missing: bool = False,
    unset: str = "DATABASE_URL is not set",
) -> T:
    """``work`` on a one-connection PostgresStore at ``url`` (created first if
    ``create_missing``), in trio-asyncio's loop; an unreachable or unmigrated database is a
    :class:`CommandFailed`."""
    if url is None:
        raise CommandFailed(2, unset)
    database: str = url

    async def run() -> T:
        async with trio_asyncio.open_loop():
            if create_missing and await aio(ensure_database)(database):
                print(f"created database {database.rsplit('/', 1)[-1].split('?')[0]}")
            store = await aio(PostgresStore.connect)(database, min_size=1, max_size=1)
            try:
                return await work(store)
            finally:
                await aio(store.aclose)()

    try:
        return trio.run(run)
    except BaseExceptionGroup as group:
        # trio-asyncio's loop (a nursery) wraps whatever ended the work in a group of one.
        error = _only_leaf(group)
        if error is None:
            raise
    raise _as_failure(error) from None


def _as_failure(error: BaseException) -> BaseException:
    """A command's answer to ``error``: an unreachable store (a refused connection too) or an
    unmigrated database is a :class:`CommandFailed`; anything else is itself."""
    if isinstance(error, DependencyUnavailable):
        name = "Redis" if error.dependency == "redis" else "PostgreSQL"
        return CommandFailed(1, f"{name} is unavailable")
    if isinstance(error, OSError):
        return CommandFailed(1, "PostgreSQL is unavailable")
    if isinstance(error, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return CommandFailed(2, "the database is not migrated: run zeropay-server migrate")
    return error


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception at the bottom of nested groups, if there is exactly one."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found


def migrate(settings: Settings) -> int:
    async def work(store: PostgresStore) -> list[str]:
        today = dt.datetime.now(dt.UTC).date()  # the command's clock
        applied: list[str] = await aio(store.migrate)(today=today)
        return applied

    applied = on_postgres(settings.database_url, work, create_missing=True)
    print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0


def maintain(settings: Settings) -> int:
    """One maintenance run; prints what it did as one JSON object."""

    async def work(store: PostgresStore) -> MaintenanceReport:
        report: MaintenanceReport = await aio(store.maintain)(dt.datetime.now(dt.UTC))
        return report

    report = on_postgres(settings.database_url, work)
    fields = dataclasses.asdict(report)
    fields["horizon"] = None if report.horizon is None else report.horizon.isoformat()
    if not report.ran:
        fields["note"] = "another instance is maintaining now; nothing was done"
    print(json.dumps(fields))
    return 0


async def publish_revocation(settings: Settings, key_id: str) -> str:
    """Publish a revocation in Redis, where every instance reads it within seconds, and say
    when the instances stop accepting the key."""
    if settings.redis_url is None and not settings.redis_cluster_nodes:
        return f"instances stop accepting it within {REFRESH_SECONDS:.0f} s"
    try:
        redis = await aio(RedisStore.connect)(
            url=settings.redis_url,
            cluster_nodes=settings.redis_cluster_nodes,
            keys=KeySpace(settings.redis_prefix),
        )
        try:
            await aio(redis.publish_merchant_key_revoked)(key_id)
        finally:
            await aio(redis.aclose)()
    except (DependencyUnavailable, OSError, RedisError):
        return (
            f"Redis is unavailable: instances stop accepting it within {REFRESH_SECONDS:.0f} s, "
            "once they reload from PostgreSQL"
        )
    return f"instances stop accepting it within {REVOCATION_POLL_SECONDS:.0f} s"


async def _merchant_command(
    settings: Settings, store: PostgresStore, words: list[str]
) -> list[str]:
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
            return [f"key {key_id} revoked ({await publish_revocation(settings, key_id)})"]
        case ["name", merchant_id, *name] if name:
            display_name = parse_display_name(" ".join(name))
            await aio(store.name_merchant)(merchant_id, display_name)
            return [
                f"merchant {merchant_id} is shown to payers as {display_name!r} "
                f"(on every instance within {REFRESH_SECONDS:.0f} s)"
            ]
    raise ValueError(
        "usage: merchants add MERCHANT_ID | list | revoke KEY_ID | name MERCHANT_ID DISPLAY NAME"
    )


#: A rotated webhook secret's old one keeps signing beside the new one this long.
PREVIOUS_SECRET_MS = 24 * 60 * 60 * 1000
WEBHOOKS_USAGE = (
    "usage: webhooks add MERCHANT_ID URL [EVENT_TYPE...] | list [MERCHANT_ID] | disable "
    "ENDPOINT_ID | rotate-secret ENDPOINT_ID | deliveries [ENDPOINT_ID] | retry EVENT_ID | "
    "replay --since ISO-TIME"
)
#: ``webhooks deliveries`` lists this many, newest first.
DELIVERIES_LISTED = 50


def _new_webhook_secret(settings: Settings, endpoint_id: str) -> tuple[str, bytes]:
    """A signing secret (shown once), and its sealed form (what PostgreSQL keeps)."""
    secret = "whsec_" + b64url(secrets.token_bytes(SECRET_BYTES))
    sealed = seal(
        settings.secrets.keyring,
        purpose="webhook-secret",
        user_id=endpoint_id,
        plaintext=secret.encode(),
        nonce=secrets.token_bytes(NONCE_BYTES),
    )
    return secret, sealed


async def _webhook_command(
    settings: Settings, store: PostgresStore, words: list[str], since: str | None = None
) -> list[str]:
    now_ms = int(time.time() * 1000)
    match words:
        case ["deliveries"] | ["deliveries", _]:
            only = _endpoint_id(words[1]) if len(words) > 1 else None
            rows = await aio(store.webhook_deliveries)(only, DELIVERIES_LISTED)
            return [
                f"{webhook_event_id(r.event_id, r.event_type)}  {r.event_type}  {r.state}  "
                f"attempts {r.attempts}  at {_iso(r.at_ms)}"
                + (f"  next {_iso(r.next_attempt_at_ms)}" if r.state == "pending" else "")
                + (f"  last {r.last_status or r.last_error}" if r.attempts else "")
                for r in rows
            ] or ["no deliveries"]
        case ["retry", event]:
            event_id, types = parse_webhook_event_id(event)
            count = await aio(store.requeue_deliveries)(
                event_id=event_id, since_ms=None, event_types=types
            )
            if not count:
                raise ValueError(f"no deliveries of {event}")
            return [f"{count} deliveries of {event} due again now"]
        case ["replay"] if since is not None:
            since_ms = _parse_time(since)
            count = await aio(store.requeue_deliveries)(event_id=None, since_ms=since_ms)
            return [f"{count} deliveries since {_iso(since_ms)} due again now"]
        case ["add", merchant_id, url, *types]:
            url = parse_webhook_url(url, allow_loopback=settings.webhooks_allow_loopback)
            checked = await checked_addresses(url, allow_loopback=settings.webhooks_allow_loopback)
            refused = checked if isinstance(checked, str) else None
            if refused is not None:
                raise ValueError(f"{refused}: webhooks go to public addresses")
            endpoint = WebhookEndpoint(
                endpoint_id=str(uuid.UUID(bytes=secrets.token_bytes(16), version=4)),
                merchant_id=merchant_id,
                url=url,
                events=parse_event_types(types),
                created_at_ms=now_ms,
            )
            secret, sealed = _new_webhook_secret(settings, endpoint.endpoint_id)
            await aio(store.add_webhook_endpoint)(endpoint, sealed)
            return [
                f"endpoint {endpoint.endpoint_id} of {merchant_id}: {url} "
                f"({', '.join(sorted(endpoint.events))}). Its signing secret is shown once:",
                secret,
            ]
        case ["list"] | ["list", _]:
            stored = await aio(store.webhook_endpoints)(words[1] if len(words) > 1 else None)
            return [
                f"{s.endpoint.endpoint_id}  {s.endpoint.merchant_id}  {s.endpoint.url}  "
                f"{','.join(sorted(s.endpoint.events))}  "
                + ("enabled" if s.endpoint.enabled else "DISABLED")
                for s in stored
            ] or ["no webhook endpoints"]
        case ["disable", endpoint_id]:
            if not await aio(store.disable_webhook_endpoint)(_endpoint_id(endpoint_id)):
                raise ValueError(f"no enabled endpoint {endpoint_id}")
            return [f"endpoint {endpoint_id} disabled: nothing more is delivered to it"]
        case ["rotate-secret", endpoint_id]:
            endpoint_id = _endpoint_id(endpoint_id)
            secret, sealed = _new_webhook_secret(settings, endpoint_id)
            until = now_ms + PREVIOUS_SECRET_MS
            if not await aio(store.rotate_webhook_secret)(endpoint_id, sealed, until):
                raise ValueError(f"no endpoint {endpoint_id}")
            return [
                f"endpoint {endpoint_id}: new signing secret; the old one also signs until "
                f"{_iso(until)}. The new secret is shown once:",
                secret,
            ]
    raise ValueError(WEBHOOKS_USAGE)


def _parse_time(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _endpoint_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an endpoint id") from None


def webhooks(settings: Settings, words: list[str], since: str | None = None) -> int:
    try:
        lines = on_postgres(
            settings.database_url,
            lambda store: _webhook_command(settings, store, words, since),
            unset="DATABASE_URL is not set: webhook endpoints live in PostgreSQL",
        )
    except (ValueError, LocalProtocolError, RemoteProtocolError) as exc:
        raise CommandFailed(2, str(exc)) from None
    print("\n".join(lines))
    return 0


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merchants(settings: Settings, words: list[str]) -> int:
    unset = "DATABASE_URL is not set (the embedded default has one demo merchant, printed at start)"
    try:
        lines = on_postgres(
            settings.database_url,
            lambda store: _merchant_command(settings, store, words),
            unset=unset,
        )
    except (ValueError, LocalProtocolError) as exc:
        raise CommandFailed(2, str(exc)) from None
    print("\n".join(lines))
    return 0
