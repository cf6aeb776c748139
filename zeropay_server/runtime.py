"""What a running server holds: stores, crypto pool, signer, flusher, metrics, clock, entropy.

:func:`open_runtime` opens everything at start-up (no import-time I/O) and closes it in
reverse order. With Redis and PostgreSQL configured it must run inside
``trio_asyncio.open_loop()``: the asyncio clients are created in, and belong to, that loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio

from adapters.audit import AuditFlusher
from adapters.bridge import aio, bridged
from adapters.errors import DependencyUnavailable
from adapters.memory import MemoryStore
from adapters.ports import (
    DurableStore,
    HealthPort,
    MaintenancePort,
    MaintenanceReport,
    MerchantPort,
    ServerStatsPort,
    StateStore,
)
from adapters.postgres import PostgresStore
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from zeropay_proto import Factor, Policy, epoch_ms
from zeropay_proto.admission import Limits
from zeropay_proto.crypto import NONCE_BYTES, EnrollmentRecord, seal_record
from zeropay_proto.grants import grant_key
from zeropay_proto.merchants import (
    API_KEY_ENTROPY_BYTES,
    MerchantCredential,
    issue_api_key,
    parse_api_key,
)
from zeropay_proto.passkeys import PossessionPolicy

from .config import ConfigError, Settings
from .crypto import CryptoPool, ReceiptSigner, RunSync
from .merchants import MerchantDirectory
from .observability import Metrics
from .psp import PspProvider, SandboxProvider
from .webhooks import WebhookDeliverer

log = logging.getLogger("zeropay.runtime")

#: The user id the decoy record is sealed for (no real user has the nil UUID), and the factors
#: it holds: a typical enrollment's size, so opening it costs what opening a real one does.
DECOY_RECORD_USER = "00000000-0000-0000-0000-000000000000"
_DECOY_RECORD_FACTORS = (Factor.PIN, Factor.COLOUR, Factor.EMOJI, Factor.WORDS, Factor.FACE)

#: Sessions stay readable this long after they expire, so status can say "expired".
SESSION_GRACE_MS = 60_000
#: How often gauges that need a round trip (Redis memory, audit backlog) are refreshed.
GAUGE_INTERVAL = 15.0
#: Maintenance (audit partitions, retention): how often it is tried, how soon again after
#: PostgreSQL was unavailable, and its deadline (moving stranded rows may take a while).
MAINTENANCE_INTERVAL = 3600.0
MAINTENANCE_RETRY = 300.0
MAINTENANCE_TIMEOUT = 120.0


@dataclass
class Runtime:
    """The server's long-lived parts, shared by every request."""

    settings: Settings
    state: StateStore
    durable: DurableStore
    crypto: CryptoPool
    signer: ReceiptSigner
    psp: PspProvider
    metrics: Metrics
    flusher: AuditFlusher
    policy: Policy
    limits: Limits
    decoy_key: bytes
    #: The enrollment grants' MAC key (zeropay_proto.grants).
    grant_key: bytes
    #: A sealed record opened in place of an unknown user's (see DECOY_RECORD_USER).
    decoy_record: bytes
    merchants: MerchantDirectory
    clock: Callable[[], float]
    entropy: Callable[[int], bytes]
    postgres: PostgresStore | None = None
    #: Redis's figures for the gauges, through the bridge (``None`` in the embedded default).
    redis_stats: ServerStatsPort | None = None
    #: Set once shutdown began: every answer then closes its connection.
    draining: bool = False
    #: The embedded default's merchant key, printed at start (``None`` in production).
    demo_merchant_key: str | None = None
    #: When sessions challenge passkeys (``None``: no relying party here, passkeys are off).
    possession: PossessionPolicy | None = None
    #: PostgreSQL's upkeep, through the bridge (``None`` in the embedded default).
    maintenance: MaintenancePort | None = None
    #: Webhook delivery from PostgreSQL's outbox (``None`` in the embedded default, which
    #: has no endpoints: they are added to PostgreSQL).
    webhooks: WebhookDeliverer | None = None

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency: whether it accepts writes now (the in-memory store
        always does). Each probe has its dependency's deadline, through the ports."""
        checks = {
            "redis": await self._probe(self.state, self.settings.redis_timeout),
            "postgresql": await self._probe(self.durable, self.settings.db_timeout),
        }
        for name, up in checks.items():
            self.metrics.dependency_up.labels(name).set(1 if up else 0)
        return checks

    @staticmethod
    async def _probe(store: HealthPort, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            try:
                return bool(await store.ping())
            except DependencyUnavailable:
                return False
        return False

    def refresh_fast_gauges(self) -> None:
        """Gauges that cost nothing to read."""
        now = self.clock()
        self.metrics.active_sessions.set(self.metrics.sessions.active(now))
        self.metrics.crypto_queue.set(self.crypto.queue_depth())
        self.metrics.crypto_busy.set(self.crypto.busy())
        if self.postgres is not None:
            self.metrics.db_pool_in_use.set(self.postgres.pool_in_use())
            self.metrics.db_pool_max.set(self.postgres.pool_max())

    async def refresh_gauges_forever(self) -> None:
        """Keep the round-trip gauges fresh (a background task), dependency_up included, so
        the dependency-down alert does not wait for someone to probe readiness."""
        while True:
            await self.ready()
            with contextlib.suppress(DependencyUnavailable):
                self.metrics.audit_backlog.set(await self.state.backlog())
                if self.redis_stats is not None:
                    used, maximum, cpu = await self.redis_stats.server_stats()
                    self.metrics.redis_memory.set(used)
                    self.metrics.redis_max_memory.set(maximum)
                    self.metrics.redis_cpu.set(cpu)
            await trio.sleep(GAUGE_INTERVAL)

    async def maintain_forever(self) -> None:
        """PostgreSQL's upkeep, a background task: audit partitions kept
        PARTITION_MONTHS_AHEAD months ahead (rows stranded in the default partition moved into
        theirs) every MAINTENANCE_INTERVAL, and retention once a day; one instance of the
        cluster at a time does it (:meth:`adapters.postgres.PostgresStore.maintain`). The
        partition horizon is a gauge, with an alert (deploy/prometheus/alerts.yml). Started
        only where there is PostgreSQL (``maintenance`` is set)."""
        while True:
            wait = MAINTENANCE_INTERVAL
            try:
                await self.maintain_once()
            except DependencyUnavailable:
                log.warning("maintenance postponed: postgresql unavailable")
                wait = MAINTENANCE_RETRY
            await trio.sleep(wait)

    async def maintain_once(self) -> MaintenanceReport | None:
        """One maintenance run at the runtime's clock; the horizon gauge follows it."""
        if self.maintenance is None:
            return None
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        report = await self.maintenance.maintain(now)
        if report.horizon is not None:
            self.metrics.partition_horizon.set(report.horizon.timestamp())
        if report.partitions_created or report.partitions_dropped or report.rows_moved:
            log.info("maintenance", extra={"fields": dataclasses.asdict(report)})
        return report


@dataclass(frozen=True)
class _Stores:
    """The stores behind their ports (Redis and PostgreSQL through the bridge)."""

    state: StateStore
    durable: DurableStore
    postgres: PostgresStore | None = None
    redis_stats: ServerStatsPort | None = None
    maintenance: MaintenancePort | None = None


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    run_sync: RunSync,
    clock: Callable[[], float] = time.time,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
    consumer: str | None = None,
) -> AsyncIterator[Runtime]:
    """Open the stores and everything else a request needs."""
    async with contextlib.AsyncExitStack() as stack:
        metrics = Metrics(settings.session_ttl)
        if settings.embedded:
            memory = MemoryStore(clock=clock)
            stores = _Stores(state=memory, durable=memory)
        else:
            stores = await _open_production_stores(settings, stack, metrics, clock)
        keys = settings.secrets
        runtime = Runtime(
            settings=settings,
            state=stores.state,
            durable=stores.durable,
            crypto=CryptoPool(run_sync, settings.crypto_workers),
            signer=ReceiptSigner(
                keys.signing_seed, keys.signing_key_id, settings.retired_receipt_keys
            ),
            psp=SandboxProvider(entropy),
            metrics=metrics,
            flusher=AuditFlusher(
                stores.state,
                stores.durable,
                consumer=consumer or f"api-{entropy(4).hex()}",
                batch_size=settings.audit_buffer_size,
                flush_interval=settings.audit_flush_interval_ms / 1000,
                reclaim_idle_ms=settings.audit_reclaim_idle_ms,
            ),
            policy=Policy(
                session_ttl_seconds=settings.session_ttl,
                lockout_durations_seconds=settings.lockout_durations,
            ),
            limits=_limits(settings),
            decoy_key=hmac.new(keys.pepper, b"zeropay/decoy-key/v1", hashlib.sha256).digest(),
            grant_key=grant_key(keys.pepper),
            decoy_record=_decoy_record(settings, entropy),
            merchants=MerchantDirectory(
                stores.durable,
                stores.state,
                max_staleness=settings.merchant_keys_max_staleness,
            ),
            clock=clock,
            entropy=entropy,
            postgres=stores.postgres,
            redis_stats=stores.redis_stats,
            possession=None if settings.relying_party is None else PossessionPolicy(),
            maintenance=stores.maintenance,
        )
        if stores.postgres is not None:
            runtime.webhooks = WebhookDeliverer(
                stores.durable,
                runtime.signer,
                keys.keyring,
                metrics,
                allow_loopback=settings.webhooks_allow_loopback,
                clock=clock,
                entropy=entropy,
            )
        if settings.embedded:
            runtime.demo_merchant_key = await _add_demo_merchant(
                stores.durable, settings.demo_merchant_key, entropy, clock
            )
        await runtime.merchants.refresh()
        await runtime.merchants.read_revocations()
        yield runtime


async def _open_production_stores(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    metrics: Metrics,
    clock: Callable[[], float],
) -> _Stores:
    """Redis and PostgreSQL (migrated if DB_AUTO_MIGRATE), each behind the bridge with its
    dependency's deadline; closed by ``stack``."""
    if settings.database_url is None:
        raise ConfigError("DATABASE_URL is required with Redis")
    redis = await aio(RedisStore.connect)(
        url=settings.redis_url,
        cluster_nodes=settings.redis_cluster_nodes,
        keys=KeySpace(settings.redis_prefix),
    )
    stack.push_async_callback(aio(redis.aclose))
    postgres = await aio(PostgresStore.connect)(
        settings.database_url,
        replica_dsn=settings.db_replica_url,
        min_size=min(settings.db_pool_min, settings.db_pool_size),
        max_size=settings.db_pool_size,
        replica_min_size=min(settings.db_replica_pool_min, settings.db_replica_pool_max),
        replica_max_size=settings.db_replica_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
    )
    stack.push_async_callback(aio(postgres.aclose))
    if settings.db_auto_migrate:
        today = dt.datetime.fromtimestamp(clock(), dt.UTC).date()
        applied = await aio(postgres.migrate)(today=today)
        log.info("migrations applied", extra={"fields": {"applied": applied}})
    latency = metrics.dependency_latency
    state = from_trio(
        redis, timeout=settings.redis_timeout, observe=latency.labels("redis").observe
    )
    durable = bridged(
        postgres,
        dependency="postgresql",
        timeout=settings.db_timeout,
        observe=latency.labels("postgresql").observe,
    )
    maintenance = bridged(postgres, dependency="postgresql", timeout=MAINTENANCE_TIMEOUT)
    return _Stores(
        state=state,
        durable=durable,
        postgres=postgres,
        redis_stats=state,
        maintenance=maintenance,
    )


def _limits(settings: Settings) -> Limits:
    """The limiters' settings (``RATE_LIMIT_*``, per minute; the merchant failure budget,
    per sliding hour)."""
    return Limits(
        global_limit=settings.rate_limit_global,
        per_ip=settings.rate_limit_per_ip,
        per_user=settings.rate_limit_per_user,
        window_ms=60_000,
        per_merchant=settings.rate_limit_per_merchant,
        merchant_failures=settings.merchant_failures_per_hour,
        shards=settings.rate_limit_shards,
        global_reserve=settings.rate_limit_global_reserve,
        auth_failures=settings.rate_limit_auth_failures,
        fail_open_ms=1000 * settings.rate_limit_fail_open_seconds,
    )


def _decoy_record(settings: Settings, entropy: Callable[[int], bytes]) -> bytes:
    """A record of random verifiers, sealed like a real one, opened for unknown users."""
    record = EnrollmentRecord(
        user_id=DECOY_RECORD_USER,
        verifiers={f: entropy(32) for f in _DECOY_RECORD_FACTORS},
        enrolled_at_s=0,
    )
    return seal_record(settings.secrets.keyring, record, nonce=entropy(NONCE_BYTES))


#: Embedded mode's merchant, for the demo key, and the name payers are shown for it.
DEMO_MERCHANT_ID = "demo-shop"
DEMO_MERCHANT_NAME = "Demo Shop"


async def _add_demo_merchant(
    store: MerchantPort,
    key: str | None,
    entropy: Callable[[int], bytes],
    clock: Callable[[], float],
) -> str:
    """The embedded default's merchant: ``key`` (ZEROPAY_DEMO_MERCHANT_KEY) or a new one."""
    now_ms = epoch_ms(clock())
    if key is None:
        key, credential = issue_api_key(
            DEMO_MERCHANT_ID, entropy=entropy(API_KEY_ENTROPY_BYTES), now_ms=now_ms
        )
    else:
        presented = parse_api_key(key)
        credential = MerchantCredential(
            merchant_id=DEMO_MERCHANT_ID,
            key_id=presented.key_id,
            key_hash=presented.key_hash,
            created_at_ms=now_ms,
        )
    await store.add_merchant_key(credential)
    await store.name_merchant(DEMO_MERCHANT_ID, DEMO_MERCHANT_NAME)
    return key
