"""The PostgreSQL adapter: durable enrollments and the audit log (asyncpg).

- Pool sizes from ``DB_POOL_SIZE`` (default 50) and ``DB_POOL_MIN`` (5), the design
  document's numbers; a read replica (``DB_REPLICA_URL``) serves reads that may be stale (GDPR
  export, audit trail). Everything security-related reads the primary.
- Safe behind PgBouncer in transaction mode: the statement cache is off unless asked for
  (``statement_cache_size``), since cached server-side prepared statements bind to whichever
  server connection PgBouncer hands out (docs/stack.md, "PgBouncer in transaction mode"),
  and no startup parameters are sent.
- ``max_inactive_connection_lifetime=0``: the pool's idle timer would otherwise be one more
  asyncio timer per release kept alive under trio-asyncio (docs/stack.md, "trio-asyncio").
  Deadlines are set on the Trio side by the bridge.

Migrations are versioned SQL files in ``adapters/migrations``, applied in order under an
advisory lock by :meth:`PostgresStore.migrate` (the ``migrate`` command, or at start-up).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import io
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import asyncpg

from zeropay_proto import WrappedKey
from zeropay_proto.audit import AuditAction, AuditEvent
from zeropay_proto.merchants import MerchantCredential
from zeropay_proto.passkeys import Passkey
from zeropay_proto.webhooks import AUDIENCE_DAYS, DECIDING_TYPES, EVENT_RULES, WebhookEndpoint

from .errors import DependencyUnavailable
from .ports import (
    Delivery,
    DurableStore,
    MaintenancePort,
    MaintenanceReport,
    OutboxRow,
    OutboxState,
    StoredEndpoint,
    StoredEnrollment,
)

#: Pool sizes, design document "Recommendation 3" (DB_POOL_SIZE 50, DB_POOL_MIN 5) and its
#: replica settings (DB_REPLICA_POOL_MAX 10, DB_REPLICA_POOL_MIN 2).
DEFAULT_POOL_SIZE = 50
DEFAULT_POOL_MIN = 5
DEFAULT_REPLICA_POOL_MAX = 10
DEFAULT_REPLICA_POOL_MIN = 2
#: Monthly audit partitions created ahead of time.
PARTITION_MONTHS_AHEAD = 3
#: Advisory lock key serialising migrations across instances ("zeropay" in ASCII).
_MIGRATION_LOCK = 0x7A65726F706179
#: Maintenance's lock: one instance at a time keeps partitions and applies retention.
MAINTENANCE_LOCK = 0x7A65726F706D6E
#: The audit log's retention (days), applied at most once per RETENTION_EVERY.
RETENTION_DAYS = 90
RETENTION_EVERY = dt.timedelta(days=1)


#: Errors that mean "PostgreSQL cannot serve us now" (answer 503), not a bug: unreachable,
#: shutting down or starting (57P01-57P03), a query cancelled by its timeout (57014), out of
#: connections or disk (class 53), a failed-over primary now in recovery (25006), and the
#: errors PgBouncer sends for a lost server connection (class 08).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # A connection left in a bad state by an interrupted operation; it is closed, not reused.
    asyncpg.exceptions.InternalClientError,
)

P = ParamSpec("P")
R = TypeVar("R")


def _unavailable_as_dependency_error(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise DependencyUnavailable("postgresql") from exc

    return wrapper


def _ms(moment: dt.datetime) -> int:
    # Stored instants are whole milliseconds; round, since the float product may fall short.
    return round(moment.timestamp() * 1000)


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _passkey(text: str) -> Passkey:
    """One passkey of :meth:`PostgresStore.load_enrollment`'s row."""
    credential_id, public_key, count, created = text.split(".")
    return Passkey(
        credential_id=bytes.fromhex(credential_id),
        public_key=bytes.fromhex(public_key),
        sign_count=int(count),
        created_at_ms=int(created),
    )


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration, in order."""
    folder = resources.files("adapters") / "migrations"
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.name, item.read_text()))
    return sorted(found)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query on release. asyncpg's default sends ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, one more round trip per call. Nothing
    here changes session state (no SET, LISTEN, session advisory locks or cursors; migrations
    lock per transaction), and asyncpg still rolls back a transaction left open."""


async def _create_pool(dsn: str, min_size: int, max_size: int, cache: int) -> asyncpg.Pool:
    # Sessions in UTC, whatever the server's default: the audit log's monthly partitions are
    # UTC months, and a date becomes a bound in the session's time zone (PgBouncer passes the
    # TimeZone startup parameter on).
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=cache,
        max_inactive_connection_lifetime=0,
        reset=_keep_session,
        server_settings={"timezone": "UTC"},
    )


async def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist (connecting to the server's
    ``postgres`` database to do it); returns whether it was created. Through PgBouncer the
    database must exist on the server already: PgBouncer only forwards to listed databases."""
    try:
        connection = await asyncpg.connect(dsn, statement_cache_size=0)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return False
    parsed = urllib.parse.urlsplit(dsn)
    name = parsed.path.lstrip("/")
    admin = await asyncpg.connect(
        urllib.parse.urlunsplit(parsed._replace(path="/postgres")), statement_cache_size=0
    )
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        return False  # another instance created it meanwhile
    finally:
        await admin.close()
    return True


@contextlib.asynccontextmanager
async def _checked_out(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of ``pool``, closed rather than returned when its operation was
    interrupted (by the bridge's deadline, or a server going away).

    Returned mid-operation, asyncpg would first send a CancelRequest and wait for it, with no
    bound, inside ``release``: with PostgreSQL stopping meanwhile, connections stay checked
    out for good and the pool runs dry (every later call a 503, no recovery). A COPY cut off
    midway was even handed out again ("another operation is in progress"). Closing costs one
    reconnection, on a path that has just failed anyway.
    """
    conn = await pool.acquire()
    try:
        yield conn
    except BaseException:
        conn.terminate()
        raise
    finally:
        await pool.release(conn)


class _Queries:
    """A pool's query methods, each on a connection from :func:`_checked_out`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with _checked_out(self._pool) as conn:
            return await conn.fetchval(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with _checked_out(self._pool) as conn:
            return await conn.fetchrow(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with _checked_out(self._pool) as conn:
            return list(await conn.fetch(query, *args))

    async def execute(self, query: str, *args: Any) -> str:
        async with _checked_out(self._pool) as conn:
            return str(await conn.execute(query, *args))


class PostgresStore:
    """Implements EnrollmentPort and AuditLogPort on PostgreSQL."""

    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool | None = None) -> None:
        self._primary = primary
        self._replica = replica or primary
        self._on_primary = _Queries(self._primary)
        self._on_replica = _Queries(self._replica)

    @classmethod
    @_unavailable_as_dependency_error
    async def connect(
        cls,
        dsn: str,
        *,
        replica_dsn: str | None = None,
        min_size: int = DEFAULT_POOL_MIN,
        max_size: int = DEFAULT_POOL_SIZE,
        replica_min_size: int = DEFAULT_REPLICA_POOL_MIN,
        replica_max_size: int = DEFAULT_REPLICA_POOL_MAX,
        statement_cache_size: int = 0,
    ) -> PostgresStore:
        """Open the pools. ``statement_cache_size=0`` is required behind PgBouncer in
        transaction mode; a direct connection may use asyncpg's cache (e.g. 100)."""
        primary = await _create_pool(dsn, min_size, max_size, statement_cache_size)
        replica = None
        if replica_dsn:
            try:
                replica = await _create_pool(
                    replica_dsn, replica_min_size, replica_max_size, statement_cache_size
                )
            except BaseException:
                await primary.close()
                raise
        return cls(primary, replica)

    async def aclose(self) -> None:
        """Close the pools."""
        if self._replica is not self._primary:
            await self._replica.close()
        await self._primary.close()

    @_unavailable_as_dependency_error
    async def ping(self) -> bool:
        """Readiness: the primary accepts writes. ``txid_current()`` assigns a transaction
        id, which a server in recovery (a demoted primary, a replica) or a read-only
        transaction refuses, so readiness turns false while writes fail, not only while
        PostgreSQL is unreachable. Raises DependencyUnavailable when it is not ready."""
        return bool(await self._on_primary.fetchval("SELECT txid_current() > 0"))

    def pool_in_use(self) -> int:
        """Primary connections currently checked out (for metrics)."""
        return int(self._primary.get_size() - self._primary.get_idle_size())

    def pool_max(self) -> int:
        """The primary pool's maximum size."""
        return int(self._primary.get_max_size())

    @_unavailable_as_dependency_error
    async def migrate(self, *, today: dt.date) -> list[str]:
        """Apply pending migrations and create the audit partitions ahead of ``today`` (the
        caller's clock); returns the names of the migrations applied."""
        applied: list[str] = []
        async with self._primary.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
                applied.append(name)
            await conn.execute(
                "SELECT audit_log_ensure_partitions($1, $2)",
                today,
                PARTITION_MONTHS_AHEAD,
            )
        return applied

    @_unavailable_as_dependency_error
    async def maintain(
        self,
        now: dt.datetime,
        *,
        months_ahead: int = PARTITION_MONTHS_AHEAD,
        keep_days: int = RETENTION_DAYS,
        retention_every: dt.timedelta = RETENTION_EVERY,
    ) -> MaintenanceReport:
        """Keep the audit partitions ``months_ahead`` months ahead of ``now`` (moving rows the
        default partition holds into their month's new partition), and apply the retention
        of ``keep_days`` if it last ran ``retention_every`` ago or more.

        One instance at a time: the work is one transaction under a transaction-scoped
        advisory lock, taken without waiting (another instance holding it: nothing is done,
        ``ran`` is false). Transaction-scoped, so it holds behind PgBouncer in transaction
        mode, and ends with the transaction: an instance that dies mid-way holds nothing.
        Every step is idempotent, so whichever instance runs next finds the work done."""
        async with self._primary.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MAINTENANCE_LOCK):
                return MaintenanceReport(ran=False, horizon=None)
            created, moved = await conn.fetchrow(
                "SELECT * FROM audit_log_ensure_partitions($1, $2)", now.date(), months_ahead
            )
            last = await conn.fetchval(
                "SELECT last_run_at FROM maintenance_runs WHERE task = 'retention'"
            )
            dropped, retained = 0, last is None or now - last >= retention_every
            if retained:
                dropped = await conn.fetchval(
                    "SELECT audit_log_apply_retention($1, make_interval(days => $2))",
                    now,
                    keep_days,
                )
                await conn.execute(
                    "INSERT INTO maintenance_runs (task, last_run_at) VALUES ('retention', $1)"
                    " ON CONFLICT (task) DO UPDATE SET last_run_at = excluded.last_run_at",
                    now,
                )
            horizon = await conn.fetchval("SELECT audit_log_partition_horizon()")
        return MaintenanceReport(
            ran=True,
            partitions_created=created,
            rows_moved=moved,
            partitions_dropped=dropped,
            retention_applied=retained,
            horizon=horizon,
        )

    # ---------------------------------------------------------------- EnrollmentPort

    @_unavailable_as_dependency_error
    async def insert_enrollment(self, enrollment: StoredEnrollment) -> bool:
        row = await self._on_primary.fetchrow(
            "INSERT INTO wrapped_keys (user_id, wrapped_key, salt, iterations, key_version,"
            " factor_count, sealed_record, device_id, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (user_id) DO NOTHING RETURNING 1",
            *self._row(enrollment),
        )
        return row is not None

    @_unavailable_as_dependency_error
    async def replace_enrollment(self, enrollment: StoredEnrollment) -> bool:
        values = self._row(enrollment)
        row = await self._on_primary.fetchrow(
            "UPDATE wrapped_keys SET wrapped_key = $2, salt = $3, iterations = $4,"
            " key_version = $5, factor_count = $6, sealed_record = $7, device_id = $8,"
            " updated_at = $9 WHERE user_id = $1 RETURNING 1",
            *values[:8],
            values[9],
        )
        return row is not None

    @staticmethod
    def _row(enrollment: StoredEnrollment) -> tuple[Any, ...]:
        key = enrollment.wrapped_key
        return (
            key.user_id,
            key.wrapped,
            key.salt,
            key.iterations,
            key.key_version,
            key.factor_count,
            enrollment.sealed_record,
            enrollment.device_id,
            _at(enrollment.created_at_ms),
            _at(enrollment.updated_at_ms),
        )

    @staticmethod
    def _enrollment(row: asyncpg.Record) -> StoredEnrollment:
        return StoredEnrollment(
            wrapped_key=WrappedKey(
                user_id=str(row["user_id"]),
                wrapped=bytes(row["wrapped_key"]),
                salt=bytes(row["salt"]),
                iterations=row["iterations"],
                key_version=row["key_version"],
                factor_count=row["factor_count"],
            ),
            sealed_record=bytes(row["sealed_record"]),
            device_id=row["device_id"],
            created_at_ms=_ms(row["created_at"]),
            updated_at_ms=_ms(row["updated_at"]),
        )

    _SELECT = "SELECT * FROM wrapped_keys WHERE user_id = $1"
    _COPY = (
        "SELECT encode(wrapped_key, 'hex'), encode(salt, 'hex'), iterations, key_version,"
        " factor_count, encode(sealed_record, 'hex'), device_id,"
        " round(extract(epoch FROM created_at) * 1000)::bigint,"
        " round(extract(epoch FROM updated_at) * 1000)::bigint,"
        " (SELECT string_agg(encode(p.credential_id, 'hex') || '.' || encode(p.public_key, 'hex')"
        "   || '.' || p.sign_count || '.' || round(extract(epoch FROM p.created_at) * 1000),"
        "   ' ' ORDER BY p.created_at, p.credential_id)"
        "  FROM passkeys p WHERE p.user_id = w.user_id)"
        " FROM wrapped_keys w WHERE user_id = '{user_id}'"
    )

    @_unavailable_as_dependency_error
    async def load_enrollment(self, user_id: str) -> StoredEnrollment | None:
        """One round trip, even without a statement cache (behind PgBouncer): a simple-protocol
        ``COPY ... TO STDOUT``, where a parameterised query would first be prepared (a second
        round trip). The id is inlined only once it is proven to be a canonical UUID. The
        user's passkeys come in the same row (``id.key.count.created`` in hex and decimals,
        space-separated), so the record cache can hold them too."""
        if str(uuid.UUID(user_id)) != user_id:
            raise ValueError("user ids are canonical UUIDs")
        chunks: list[bytes] = []

        async def collect(data: bytes) -> None:
            chunks.append(data)

        async with _checked_out(self._primary) as conn:
            await conn.copy_from_query(
                self._COPY.format(user_id=user_id), output=collect, format="csv"
            )
        rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
        if not rows:
            return None
        wrapped, salt, iterations, version, count, sealed, device, created, updated, keys = rows[0]
        return StoredEnrollment(
            wrapped_key=WrappedKey(
                user_id=user_id,
                wrapped=bytes.fromhex(wrapped),
                salt=bytes.fromhex(salt),
                iterations=int(iterations),
                key_version=int(version),
                factor_count=int(count),
            ),
            sealed_record=bytes.fromhex(sealed),
            device_id=device,
            created_at_ms=int(created),
            updated_at_ms=int(updated),
            passkeys=tuple(_passkey(text) for text in keys.split()),
        )

    @_unavailable_as_dependency_error
    async def delete_enrollment(self, user_id: str) -> bool:
        row = await self._on_primary.fetchrow(
            "DELETE FROM wrapped_keys WHERE user_id = $1 RETURNING 1", user_id
        )
        return row is not None

    @_unavailable_as_dependency_error
    async def export_enrollment(self, user_id: str) -> StoredEnrollment | None:
        row = await self._on_replica.fetchrow(self._SELECT, user_id)
        return None if row is None else self._enrollment(row)

    # ---------------------------------------------------------------- AuditLogPort

    @_unavailable_as_dependency_error
    async def write_events(self, events: Sequence[AuditEvent]) -> int:
        """Store the audit rows not stored yet, and, in the same transaction, the webhook
        outbox rows of those new rows (:data:`zeropay_proto.webhooks.EVENT_RULES`): one per
        event type it makes and endpoint subscribed to that type of each merchant it
        concerns; and a session's decision withdraws its scheduled ``session.expired``."""
        if not events:
            return 0
        async with _checked_out(self._primary) as conn, conn.transaction():
            new = await conn.fetch(
                "INSERT INTO audit_log (event_id, at, user_id, action, client, details)"
                " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[],"
                " $5::text[], $6::jsonb[])"
                " ON CONFLICT (event_id, at) DO NOTHING RETURNING event_id, at",
                [e.event_id for e in events],
                [_at(e.at_ms) for e in events],
                [e.user_id for e in events],
                [e.action.value for e in events],
                [e.client for e in events],
                [json.dumps(dict(e.details), sort_keys=True) for e in events],
            )
            if new:
                rules = EVENT_RULES
                await conn.execute(
                    _OUTBOX_INSERT,
                    [r["event_id"] for r in new],
                    [r["at"] for r in new],
                    [r.action for r in rules],
                    [r.event_type for r in rules],
                    [r.when for r in rules],
                    [r.audience for r in rules],
                    AUDIENCE_DAYS,
                    list(DECIDING_TYPES),
                    [r.due_detail for r in rules],
                )
        return len(new)

    @_unavailable_as_dependency_error
    async def user_trail(self, user_id: str, limit: int) -> list[AuditEvent]:
        rows = await self._on_replica.fetch(
            "SELECT event_id, at, user_id, action, client, details FROM audit_log"
            " WHERE user_id = $1 ORDER BY at, event_id LIMIT $2",
            user_id,
            limit,
        )
        return [
            AuditEvent(
                event_id=str(r["event_id"]),
                action=AuditAction(r["action"]),
                user_id=str(r["user_id"]),
                client=r["client"],
                at_ms=_ms(r["at"]),
                details=json.loads(r["details"]),
            )
            for r in rows
        ]

    # ---------------------------------------------------------------- MerchantPort

    @_unavailable_as_dependency_error
    async def add_merchant_key(self, credential: MerchantCredential) -> None:
        await self._on_primary.execute(
            "INSERT INTO merchant_keys (key_id, merchant_id, key_hash, created_at)"
            " VALUES ($1, $2, $3, $4)",
            credential.key_id,
            credential.merchant_id,
            credential.key_hash,
            _at(credential.created_at_ms),
        )

    @_unavailable_as_dependency_error
    async def merchant_keys(self, *, include_revoked: bool = False) -> list[MerchantCredential]:
        rows = await self._on_primary.fetch(
            "SELECT key_id, merchant_id, key_hash, created_at, revoked_at FROM merchant_keys"
            " WHERE $1 OR revoked_at IS NULL ORDER BY created_at, key_id",
            include_revoked,
        )
        return [
            MerchantCredential(
                merchant_id=r["merchant_id"],
                key_id=r["key_id"],
                key_hash=bytes(r["key_hash"]),
                created_at_ms=_ms(r["created_at"]),
                revoked_at_ms=None if r["revoked_at"] is None else _ms(r["revoked_at"]),
            )
            for r in rows
        ]

    @_unavailable_as_dependency_error
    async def revoke_merchant_key(self, key_id: str, now_ms: int) -> bool:
        row = await self._on_primary.fetchrow(
            "UPDATE merchant_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL"
            " RETURNING 1",
            key_id,
            _at(now_ms),
        )
        return row is not None

    @_unavailable_as_dependency_error
    async def name_merchant(self, merchant_id: str, display_name: str) -> None:
        await self._on_primary.execute(
            "INSERT INTO merchant_names (merchant_id, display_name) VALUES ($1, $2)"
            " ON CONFLICT (merchant_id) DO UPDATE SET display_name = excluded.display_name",
            merchant_id,
            display_name,
        )

    @_unavailable_as_dependency_error
    async def merchant_names(self) -> dict[str, str]:
        rows = await self._on_primary.fetch("SELECT merchant_id, display_name FROM merchant_names")
        return {r["merchant_id"]: r["display_name"] for r in rows}

    # ---------------------------------------------------------------- WebhookEndpointPort

    @_unavailable_as_dependency_error
    async def add_webhook_endpoint(self, endpoint: WebhookEndpoint, sealed_secret: bytes) -> None:
        await self._on_primary.execute(
            "INSERT INTO webhook_endpoints"
            " (endpoint_id, merchant_id, url, events, secret, enabled, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            endpoint.endpoint_id,
            endpoint.merchant_id,
            endpoint.url,
            sorted(endpoint.events),
            sealed_secret,
            endpoint.enabled,
            _at(endpoint.created_at_ms),
        )

    @_unavailable_as_dependency_error
    async def webhook_endpoints(self, merchant_id: str | None = None) -> list[StoredEndpoint]:
        rows = await self._on_primary.fetch(
            "SELECT endpoint_id, merchant_id, url, events, secret, previous_secret,"
            " previous_until, enabled, created_at FROM webhook_endpoints"
            " WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY created_at, endpoint_id",
            merchant_id,
        )
        return [_stored_endpoint(r) for r in rows]

    @_unavailable_as_dependency_error
    async def disable_webhook_endpoint(self, endpoint_id: str) -> bool:
        row = await self._on_primary.fetchrow(
            "UPDATE webhook_endpoints SET enabled = false WHERE endpoint_id = $1 AND enabled"
            " RETURNING 1",
            endpoint_id,
        )
        return row is not None

    @_unavailable_as_dependency_error
    async def rotate_webhook_secret(
        self, endpoint_id: str, sealed_secret: bytes, previous_until_ms: int
    ) -> bool:
        row = await self._on_primary.fetchrow(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,"
            " previous_until = $3 WHERE endpoint_id = $1 RETURNING 1",
            endpoint_id,
            sealed_secret,
            _at(previous_until_ms),
        )
        return row is not None

    # ---------------------------------------------------------------- WebhookOutboxPort

    @_unavailable_as_dependency_error
    async def claim_deliveries(
        self, limit: int, lease_ms: int, *, per_endpoint: int, room: Mapping[str, int]
    ) -> list[Delivery]:
        if limit < 1:
            return []
        rows = await self._on_primary.fetch(
            _OUTBOX_CLAIM,
            limit,
            lease_ms,
            per_endpoint,
            [uuid.UUID(e) for e in room],
            list(room.values()),
        )
        return [
            Delivery(
                event=AuditEvent(
                    event_id=str(r["event_id"]),
                    action=AuditAction(r["action"]),
                    user_id=None if r["user_id"] is None else str(r["user_id"]),
                    client=r["client"],
                    at_ms=_ms(r["at"]),
                    details=json.loads(r["details"]),
                ),
                event_type=r["type"],
                endpoint=_stored_endpoint(r),
                attempt=r["attempts"],
            )
            for r in rows
        ]

    @_unavailable_as_dependency_error
    async def settle_delivery(
        self,
        delivery: Delivery,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
    ) -> None:
        state = "delivered" if delivered else ("pending" if next_attempt_ms is not None else "dead")
        await self._on_primary.execute(
            "UPDATE webhook_outbox SET state = $3, last_status = $4, last_error = $5,"
            " lease_until = NULL,"
            " next_attempt_at = now() + coalesce($6, 0) * interval '1 millisecond',"
            " delivered_at = CASE WHEN $3 = 'delivered' THEN now() END"
            " WHERE event_id = $1 AND endpoint_id = $2 AND type = $7",
            delivery.event.event_id,
            delivery.endpoint.endpoint.endpoint_id,
            state,
            status,
            None if error is None else error[:500],
            next_attempt_ms,
            delivery.event_type,
        )

    @_unavailable_as_dependency_error
    async def outbox_state(self) -> OutboxState:
        row = await self._on_primary.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'pending' AND due_at <= now()) AS pending,"
            " coalesce(extract(epoch FROM now() - min(due_at)"
            " FILTER (WHERE state = 'pending' AND due_at <= now())) * 1000, 0)::bigint AS oldest,"
            " count(*) FILTER (WHERE state = 'dead') AS dead FROM webhook_outbox"
        )
        return OutboxState(
            pending=row["pending"], oldest_pending_ms=row["oldest"], dead=row["dead"]
        )

    @_unavailable_as_dependency_error
    async def webhook_deliveries(self, endpoint_id: str | None, limit: int) -> list[OutboxRow]:
        rows = await self._on_primary.fetch(
            "SELECT event_id, endpoint_id, type, state, attempts, at, next_attempt_at,"
            " last_status, last_error FROM webhook_outbox"
            " WHERE $1::uuid IS NULL OR endpoint_id = $1 ORDER BY at DESC LIMIT $2",
            endpoint_id,
            limit,
        )
        return [
            OutboxRow(
                event_id=str(r["event_id"]),
                endpoint_id=str(r["endpoint_id"]),
                event_type=r["type"],
                state=r["state"],
                attempts=r["attempts"],
                at_ms=_ms(r["at"]),
                next_attempt_at_ms=_ms(r["next_attempt_at"]),
                last_status=r["last_status"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    @_unavailable_as_dependency_error
    async def requeue_deliveries(
        self,
        *,
        event_id: str | None,
        since_ms: int | None,
        event_types: Collection[str] | None = None,
    ) -> int:
        status = await self._on_primary.execute(
            "UPDATE webhook_outbox SET state = 'pending', next_attempt_at = now(),"
            " lease_until = NULL WHERE state <> 'withdrawn' AND due_at <= now()"
            " AND ($1::uuid IS NULL OR event_id = $1)"
            " AND ($2::timestamptz IS NULL OR at >= $2)"
            " AND ($3::text[] IS NULL OR type = ANY ($3))",
            event_id,
            None if since_ms is None else _at(since_ms),
            None if event_types is None else sorted(event_types),
        )
        return int(status.rsplit(" ", 1)[1])

    # ------------------------------------------------------------------ key rotation

    @_unavailable_as_dependency_error
    async def key_versions(self) -> dict[int, int]:
        """How many enrollment records each master key version seals."""
        rows = await self._on_primary.fetch(
            "SELECT key_version, count(*) FROM wrapped_keys GROUP BY 1 ORDER BY 1"
        )
        return {int(r[0]): int(r[1]) for r in rows}

    @_unavailable_as_dependency_error
    async def records_to_reseal(
        self, current: int, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` records not sealed under ``current``, in user order after
        ``after``: ``(user id, sealed record)``."""
        rows = await self._on_primary.fetch(
            "SELECT user_id, sealed_record FROM wrapped_keys"
            " WHERE key_version <> $1 AND ($2::uuid IS NULL OR user_id > $2::uuid)"
            " ORDER BY user_id LIMIT $3",
            current,
            after,
            limit,
        )
        return [(str(r[0]), bytes(r[1])) for r in rows]

    @_unavailable_as_dependency_error
    async def reseal_records(
        self, current: int, resealed: Sequence[tuple[str, bytes, bytes]]
    ) -> int:
        """Store each ``(user id, record as read, record resealed under current)`` in one
        statement, only where the record is still the one read: an enrollment changed
        meanwhile keeps its newer record (sealed under the current version already).
        Returns how many were stored."""
        if not resealed:
            return 0
        users, old, new = zip(*resealed, strict=True)
        stored = await self._on_primary.fetchval(
            "WITH done AS (UPDATE wrapped_keys w SET sealed_record = v.new, key_version = $4"
            " FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS v(user_id, old, new)"
            " WHERE w.user_id = v.user_id AND w.sealed_record = v.old RETURNING 1)"
            " SELECT count(*) FROM done",
            list(users),
            list(old),
            list(new),
            current,
        )
        return int(stored)

    # ------------------------------------------------------------------ PasskeyPort

    @_unavailable_as_dependency_error
    async def add_passkey(self, user_id: str, passkey: Passkey, limit: int) -> bool:
        # The user's row is locked before the count, so two registrations cannot both pass
        # the limit; a known credential id is skipped, not an error.
        async with self._primary.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "SELECT 1 FROM wrapped_keys WHERE user_id = $1 FOR UPDATE", user_id
            )
            held = await conn.fetchval("SELECT count(*) FROM passkeys WHERE user_id = $1", user_id)
            if owner is None or held >= limit:
                return False
            added = await conn.fetchval(
                "INSERT INTO passkeys (user_id, credential_id, public_key, sign_count, created_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
                user_id,
                passkey.credential_id,
                passkey.public_key,
                passkey.sign_count,
                _at(passkey.created_at_ms),
            )
            return added is not None

    @_unavailable_as_dependency_error
    async def passkeys(self, user_id: str) -> list[Passkey]:
        rows = await self._on_primary.fetch(
            "SELECT credential_id, public_key, sign_count, created_at FROM passkeys"
            " WHERE user_id = $1 ORDER BY created_at, credential_id",
            user_id,
        )
        return [
            Passkey(
                credential_id=bytes(r["credential_id"]),
                public_key=bytes(r["public_key"]),
                sign_count=r["sign_count"],
                created_at_ms=_ms(r["created_at"]),
            )
            for r in rows
        ]

    @_unavailable_as_dependency_error
    async def delete_passkey(self, user_id: str, credential_id: bytes) -> bool:
        row = await self._on_primary.fetchrow(
            "DELETE FROM passkeys WHERE user_id = $1 AND credential_id = $2 RETURNING 1",
            user_id,
            credential_id,
        )
        return row is not None

    @_unavailable_as_dependency_error
    async def record_sign_count(self, user_id: str, credential_id: bytes, count: int) -> bool:
        # zeropay_proto.passkeys.rises, as a condition of the write: of two assertions with
        # one count, one updates the row and the other finds it risen.
        row = await self._on_primary.fetchrow(
            "UPDATE passkeys SET sign_count = $3 WHERE user_id = $1 AND credential_id = $2"
            " AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0)) RETURNING 1",
            user_id,
            credential_id,
            count,
        )
        return row is not None


if TYPE_CHECKING:  # mypy --strict proves the adapter satisfies its port(s)

    def _is_durable_store(store: PostgresStore) -> DurableStore:
        return store

    def _is_maintenance_port(store: PostgresStore) -> MaintenancePort:
        return store


#: The outbox rows of newly stored audit rows (``$1``, ``$2``), by the rules (``$3`` action,
#: ``$4`` type, ``$5`` when, ``$6`` audience, ``$9`` due detail): to each enabled endpoint
#: subscribed to the type of each merchant concerned: the one the event names, else the one
#: that opened its session (a lock, a clone), or, for the ``user`` audience, every merchant
#: that opened a session for the user within ``$7`` days. A rule with a due detail makes a
#: row due at that time (a row without the detail makes none); a decision (``$8``) withdraws
#: its session's scheduled ``session.expired``. Mirrors ``zeropay_proto.webhooks``
#: ``event_types_of`` and ``event_due_at_ms``.
_OUTBOX_INSERT = """
WITH new AS (
  SELECT a.*, m.type, m.audience, m.due_detail,
    CASE WHEN m.due_detail IS NULL THEN a.at
      ELSE to_timestamp((a.details->>m.due_detail)::bigint / 1000.0) END AS due_at
  FROM unnest($1::uuid[], $2::timestamptz[]) AS n (event_id, at)
  JOIN audit_log a ON a.event_id = n.event_id AND a.at = n.at
  JOIN unnest($3::text[], $4::text[], $5::text[], $6::text[], $9::text[])
    AS m (action, type, whence, audience, due_detail)
    ON m.action = a.action
   AND (m.whence <> 'last_attempt' OR coalesce((a.details->>'last_attempt')::boolean, false))
   AND (m.due_detail IS NULL OR jsonb_typeof(a.details->m.due_detail) = 'number')
), withdrawn AS (
  UPDATE webhook_outbox o SET state = 'withdrawn', lease_until = NULL
  FROM new, audit_log s
  WHERE new.type = ANY ($8::text[]) AND o.type = 'session.expired' AND o.state = 'pending'
    AND s.event_id = o.event_id AND s.at = o.at
    AND s.user_id = new.user_id AND s.details->>'session' = new.details->>'session'
  RETURNING o.event_id
)
INSERT INTO webhook_outbox (event_id, at, endpoint_id, type, due_at, next_attempt_at)
SELECT DISTINCT new.event_id, new.at, w.endpoint_id, new.type, new.due_at, new.due_at
FROM new
CROSS JOIN LATERAL (
  SELECT new.details->>'merchant' AS merchant_id
  WHERE new.audience = 'session' AND new.details->>'merchant' IS NOT NULL
  UNION
  SELECT s.details->>'merchant' FROM audit_log s
  WHERE new.audience = 'session' AND new.details->>'merchant' IS NULL
    AND s.user_id = new.user_id AND s.action = 'SESSION_INITIATED'
    AND s.details->>'session' = new.details->>'session'
  UNION
  SELECT s.details->>'merchant' FROM audit_log s
  WHERE new.audience = 'user' AND s.user_id = new.user_id AND s.action = 'SESSION_INITIATED'
    AND s.at > new.at - $7 * interval '1 day' AND s.details->>'merchant' IS NOT NULL
) owner
JOIN webhook_endpoints w
  ON w.merchant_id = owner.merchant_id AND w.enabled AND new.type = ANY (w.events)
WHERE new.type <> 'session.expired' OR NOT EXISTS (
  SELECT 1 FROM new d  -- decided in this same batch: nothing to expire
  WHERE d.type = ANY ($8::text[]) AND d.user_id = new.user_id
    AND d.details->>'session' = new.details->>'session')
ON CONFLICT DO NOTHING
"""


#: Claim due outbox rows (``$1`` at most; per endpoint ``$3`` at most, or its room ``$5``
#: where ``$4`` names it) of enabled endpoints for ``$2`` ms each, skipping rows another
#: claimant holds; each with its audit row and its endpoint.
_OUTBOX_CLAIM = """
WITH due AS (
  SELECT d.event_id, d.endpoint_id, d.type, d.next_attempt_at
  FROM webhook_endpoints e
  LEFT JOIN unnest($4::uuid[], $5::int[]) AS room (endpoint_id, slots)
    ON room.endpoint_id = e.endpoint_id
  CROSS JOIN LATERAL (
    -- Each endpoint's earliest due rows, as many as it has room for; the conditions are
    -- rechecked on a row locked after another claimant's change, so none is claimed twice.
    SELECT o.event_id, o.endpoint_id, o.type, o.next_attempt_at FROM webhook_outbox o
    WHERE o.endpoint_id = e.endpoint_id AND o.state = 'pending'
      AND o.next_attempt_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
    ORDER BY o.next_attempt_at
    LIMIT greatest(coalesce(room.slots, $3), 0)
    FOR UPDATE SKIP LOCKED
  ) d
  WHERE e.enabled
  ORDER BY d.next_attempt_at
  LIMIT $1
)
UPDATE webhook_outbox o
SET lease_until = now() + $2 * interval '1 millisecond', attempts = o.attempts + 1
FROM due, audit_log a, webhook_endpoints w
WHERE o.event_id = due.event_id AND o.endpoint_id = due.endpoint_id AND o.type = due.type
  AND a.event_id = o.event_id AND a.at = o.at AND w.endpoint_id = o.endpoint_id
RETURNING o.event_id, o.type, o.attempts, a.at, a.user_id, a.action, a.client, a.details,
  w.endpoint_id, w.merchant_id, w.url, w.events, w.secret, w.previous_secret,
  w.previous_until, w.enabled, w.created_at
"""


def _stored_endpoint(row: Any) -> StoredEndpoint:
    until = None if row["previous_until"] is None else _ms(row["previous_until"])
    secrets = [bytes(row["secret"])]
    if row["previous_secret"] is not None:
        secrets.append(bytes(row["previous_secret"]))
    return StoredEndpoint(
        endpoint=WebhookEndpoint(
            endpoint_id=str(row["endpoint_id"]),
            merchant_id=row["merchant_id"],
            url=row["url"],
            events=frozenset(row["events"]),
            enabled=row["enabled"],
            created_at_ms=_ms(row["created_at"]),
            previous_secret_until_ms=until,
        ),
        sealed_secrets=tuple(secrets),
    )
