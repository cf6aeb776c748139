"""``zeropay-server rotate-keys``: re-seal every enrollment record under the current master key.

Rotating a master key is: add a version to ``ZEROPAY_MASTER_KEYS`` and make it current (new
enrollments are sealed with it at once), run ``rotate-keys``, then drop the old version once
the report says no record uses it. This command does the middle step:

- It refuses to start if a version that seals stored records is not configured: those
  records cannot be opened, by it or by any request.
- It works in batches in user order. Each record is opened and sealed again under the current
  version by the core (:func:`zeropay_proto.crypto.reseal_record`, a fresh CSPRNG nonce); the
  user's record cache entry is dropped and held (as an enrollment change does, so no request
  caches the old envelope again), then the batch is stored in one statement that writes a
  record only if it is still the one read. A user who changed their enrollment meanwhile
  keeps the newer record, already sealed under the current version.
- It is idempotent and resumable: what is left is whatever is not sealed under the current
  version, so an interrupted run is finished by running it again.
- On a terminal it draws a progress bar with the rate and an ETA; otherwise it prints one JSON
  line per batch. At the end it prints which versions still seal records.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

import trio

from adapters.bridge import aio, bridged
from adapters.postgres import PostgresStore
from adapters.redis_keys import KeySpace
from adapters.redis_store import RedisStore, from_trio
from zeropay_proto import MasterKeyring
from zeropay_proto.crypto import NONCE_BYTES, reseal_record, unconfigured_versions

from .config import Settings
from .migrate import CommandFailed, on_postgres

#: Records per batch (one SELECT, one UPDATE, and the batch's cache invalidations).
DEFAULT_BATCH = 500
#: Cache invalidations in flight at once.
INVALIDATIONS_AT_ONCE = 32


class RotationStore(Protocol):
    """What rotation needs of PostgreSQL (:class:`adapters.postgres.PostgresStore`)."""

    async def key_versions(self) -> dict[int, int]: ...

    async def records_to_reseal(
        self, current: int, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]: ...

    async def reseal_records(
        self, current: int, resealed: list[tuple[str, bytes, bytes]]
    ) -> int: ...


class CacheInvalidation(Protocol):
    """What rotation needs of Redis: the record cache's exact invalidation."""

    async def invalidate_record(self, user_id: str, hold_ms: int) -> None: ...


class UnconfiguredVersions(Exception):
    """Stored records are sealed under key versions the keyring does not have."""

    def __init__(self, versions: list[int]) -> None:
        super().__init__(f"records are sealed under unconfigured key versions {versions}")
        self.versions = versions


@dataclasses.dataclass(frozen=True, kw_only=True)
class RotationReport:
    """What a run did, and which key versions seal records now."""

    resealed: int
    kept_newer: int
    seconds: float
    versions_in_use: dict[int, int]
    current: int
    finished: bool

    @property
    def droppable(self) -> list[int]:
        """Configured versions, other than the current one, that seal no record any more:
        they can be dropped from ZEROPAY_MASTER_KEYS."""
        return sorted(v for v, n in self.versions_in_use.items() if n == 0 and v != self.current)


class Progress:
    """A progress bar with rate and ETA on a terminal, JSON lines otherwise."""

    def __init__(self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self.total, self.out, self.clock = total, out, clock
        self.started = clock()
        self.tty = out.isatty()

    def update(self, done: int) -> None:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else None
        if not self.tty:
            line = {
                "resealed": done,
                "total": self.total,
                "per_s": round(rate, 1),
                "eta_s": None if eta is None else round(eta, 1),
            }
            print(json.dumps(line), file=self.out, flush=True)
            return
        width = 30
        filled = width if self.total == 0 else width * min(done, self.total) // self.total
        left = "--:--" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        bar = "#" * filled + "." * (width - filled)
        self.out.write(f"\r[{bar}] {done:,}/{self.total:,} records, {rate:,.0f}/s, ETA {left} ")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


async def rotate(
    durable: RotationStore,
    cache: CacheInvalidation,
    keyring: MasterKeyring,
    *,
    hold_ms: int,
    out: TextIO,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
) -> RotationReport:
    """Re-seal every record not sealed under ``keyring.current`` (``max_batches``: stop
    after that many, as an interruption would)."""
    started = time.monotonic()
    versions = await durable.key_versions()
    missing = unconfigured_versions(keyring, versions)
    if missing:
        raise UnconfiguredVersions(missing)
    current = keyring.current
    progress = Progress(sum(n for v, n in versions.items() if v != current), out)
    resealed = kept_newer = batches = 0
    after: str | None = None
    finished = False
    while max_batches is None or batches < max_batches:
        rows = await durable.records_to_reseal(current, after, batch)
        if not rows:
            finished = True
            break
        changes = []
        for user_id, envelope in rows:
            new = reseal_record(
                keyring, user_id=user_id, envelope=envelope, nonce=entropy(NONCE_BYTES)
            )
            if new is not None:
                changes.append((user_id, envelope, new))
        await _invalidate(cache, [user for user, _, _ in changes], hold_ms)
        stored = await durable.reseal_records(current, changes)
        resealed += stored
        kept_newer += len(changes) - stored
        after = rows[-1][0]
        batches += 1
        progress.update(resealed + kept_newer)
    progress.close()
    return RotationReport(
        resealed=resealed,
        kept_newer=kept_newer,
        seconds=time.monotonic() - started,
        versions_in_use=dict.fromkeys(keyring.keys, 0) | await durable.key_versions(),
        current=current,
        finished=finished,
    )


async def _invalidate(cache: CacheInvalidation, users: list[str], hold_ms: int) -> None:
    """Drop and hold each user's record cache entry before their record changes."""
    limiter = trio.CapacityLimiter(INVALIDATIONS_AT_ONCE)

    async def one(user: str) -> None:
        async with limiter:
            await cache.invalidate_record(user, hold_ms)

    async with trio.open_nursery() as nursery:
        for user in users:
            nursery.start_soon(one, user)


def rotate_keys(settings: Settings, batch: int = DEFAULT_BATCH) -> int:
    """The command: 0 when every record is sealed under the current version."""
    if settings.embedded:
        raise CommandFailed(2, "needs REDIS_URL and DATABASE_URL")

    async def work(postgres: PostgresStore) -> RotationReport:
        redis = await aio(RedisStore.connect)(
            url=settings.redis_url,
            cluster_nodes=settings.redis_cluster_nodes,
            keys=KeySpace(settings.redis_prefix),
        )
        try:
            return await rotate(
                bridged(postgres, dependency="postgresql", timeout=60),
                from_trio(redis, timeout=settings.redis_timeout),
                settings.secrets.keyring,
                hold_ms=settings.record_hold_ms,
                out=sys.stdout if not sys.stderr.isatty() else sys.stderr,
                batch=batch,
            )
        finally:
            await aio(redis.aclose)()

    try:
        report = on_postgres(settings.database_url, work)
    except UnconfiguredVersions as exc:
        versions = ", ".join(map(str, exc.versions))
        raise CommandFailed(
            2,
            f"records are sealed under key version(s) {versions}, missing from "
            "ZEROPAY_MASTER_KEYS: add them back before rotating",
        ) from None
    summary = {
        "resealed": report.resealed,
        "kept_newer": report.kept_newer,
        "seconds": round(report.seconds, 2),
        "per_s": round((report.resealed + report.kept_newer) / max(report.seconds, 1e-9), 1),
        "current": report.current,
        "versions_in_use": {str(v): n for v, n in sorted(report.versions_in_use.items())},
        "droppable": report.droppable,
    }
    print(json.dumps(summary))
    return 0
