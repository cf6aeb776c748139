"""The cost of one authentication, in Redis commands and round trips and PostgreSQL statements.

    python -m benchmarks.cost [--requests N] [--sessions 100000] [--json]

Drives the real app in-process (its test client; real Redis and PostgreSQL behind the same
bridge the server uses) and measures per request:

- Redis commands: ``INFO commandstats`` deltas (script-internal commands included);
- Redis round trips: calls to the Trio pool's ``round_trip`` (a request's steps on a
  standalone Redis) and to redis-py's ``send_packed_command`` (what crosses the bridge): one
  per command or pipeline sent on one connection, i.e. one per round trip and hash slot;
- PostgreSQL statements: ``pg_stat_database.xact_commit`` deltas (every statement here is an
  autocommit transaction), with the audit flusher's batched writes counted separately;
- Redis memory per verification session at ``--sessions`` sessions (``MEMORY USAGE`` of the
  session keys; and ``used_memory`` growth, which also counts each session's audit event
  waiting in the stream).

Uses ZEROPAY_TEST_REDIS_URL / ZEROPAY_TEST_DATABASE_URL (default: the local servers), a key
prefix and a database of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import redis
import redis.asyncio.connection as redis_connection
import trio
import trio_asyncio
import trio_parallel

from adapters.redis_trio import TrioRedisPool
from tests.services import DATABASE_URL, REDIS_URL, delete_prefix, temporary_database
from zeropay_proto import Factor
from zeropay_proto.answers import example_answer, factor_digest
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key
from zeropay_server.app import create_app
from zeropay_server.config import load_settings
from zeropay_server.runtime import open_runtime

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")
IK = "Idempotency-Key"
ROUND_TRIPS = Counter[str]()


def _count_round_trips() -> None:
    original = redis_connection.AbstractConnection.send_packed_command
    on_trio = TrioRedisPool.round_trip

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        ROUND_TRIPS["redis"] += 1
        await original(self, command, check_health)

    async def counting_on_trio(self: TrioRedisPool, packed: bytes, count: int) -> list[Any]:
        ROUND_TRIPS["redis"] += 1
        return await on_trio(self, packed, count)

    redis_connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    TrioRedisPool.round_trip = counting_on_trio  # type: ignore[method-assign]


def digest(user: str, factor: str) -> str:
    """The client's digest of the example answer (:mod:`zeropay_proto.answers`)."""
    named = Factor(factor)
    return factor_digest(user, named, example_answer(named, "bench")).hex()


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name: int(v["calls"]) for name, v in stats.items()})


#: PostgreSQL 15 publishes each backend's counters at most once a second, or after up to
#: 10 s idle: wait that long before reading a delta.
STATS_SETTLE_SECONDS = 11


async def xacts(database_url: str) -> int:
    """Committed transactions so far, once every backend has published its counters (read
    from a thread: asyncpg needs an event loop of its own)."""
    await trio.sleep(STATS_SETTLE_SECONDS)
    return await trio.to_thread.run_sync(_xacts, database_url)


def _xacts(database_url: str) -> int:
    async def fetch() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            value = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        return int(value)

    return asyncio.run(fetch())


async def measure(args: argparse.Namespace, database_url: str, prefix: str) -> dict[str, Any]:
    def b64(n: int) -> str:
        return base64.b64encode(secrets.token_bytes(n)).decode()

    settings = load_settings(
        {
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
            "DATABASE_URL": database_url,
            "DB_AUTO_MIGRATE": "true",
            "PBKDF2_ITERATIONS": "1000",
            "AUDIT_FLUSH_INTERVAL": "600000",
            "AUDIT_BUFFER_SIZE": "100000",
            "RATE_LIMIT_GLOBAL": "1000000",
            "RATE_LIMIT_PER_IP": "1000000",
            "RATE_LIMIT_PER_USER": "1000000",
            "ZEROPAY_MASTER_KEYS": f"1:{b64(32)}",
            "ZEROPAY_PEPPER": b64(32),
            "ZEROPAY_RECEIPT_SIGNING_KEY": b64(32),
        }
    )
    sync_redis = redis.Redis.from_url(REDIS_URL)
    results: dict[str, Any] = {}
    async with (
        trio_asyncio.open_loop(),
        open_runtime(settings, run_sync=trio_parallel.run_sync) as runtime,
    ):
        app = create_app(runtime)
        client = app.test_client()

        key, credential = issue_api_key(
            "cost-shop", entropy=secrets.token_bytes(API_KEY_ENTROPY_BYTES), now_ms=0
        )
        await runtime.durable.add_merchant_key(credential)
        await runtime.merchants.refresh()

        def headers() -> dict[str, str]:
            return {
                "X-Nonce": str(uuid.uuid4()),
                "X-Timestamp": str(int(time.time() * 1000)),
                "X-API-Key": key,
            }

        async def post(path: str, body: dict[str, Any], **extra: str) -> Any:
            response = await client.post(path, json=body, headers={**headers(), **extra})
            return response.status_code, await response.get_json()

        users = [str(uuid.uuid4()) for _ in range(args.requests)]
        for user in users:
            await post(
                "/v1/enrollment/store",
                {
                    "user_uuid": user,
                    "device_id": "d",
                    "factors": {f: digest(user, f) for f in FACTORS},
                },
            )

        # The steady state: users who enrolled a while ago (their enrollment's hold on the
        # record cache has ended: README, "The record cache") and have paid before (their
        # record is cached).
        print(
            f"waiting {settings.record_hold_ms / 1000:g} s for the enrollments' holds ...",
            file=sys.stderr,
        )
        await trio.sleep(settings.record_hold_ms / 1000)
        for user in users:
            status, body = await post("/v1/verification/initiate", {"user_uuid": user})
            assert status == 200, body

        totals: dict[str, Counter[str]] = {}

        async def phase(name: str, run: Any) -> None:
            """Run ``run`` and add what it cost to ``name``'s totals (a phase run twice
            reports the mean of both)."""
            await runtime.merchants.refresh()  # what the server's background task does
            before, trips = commandstats(sync_redis), ROUND_TRIPS["redis"]
            x0 = await xacts(database_url)
            cpu = time.process_time()
            count = await run()
            cpu = time.process_time() - cpu
            after, x1 = commandstats(sync_redis), await xacts(database_url)
            delta = after - before
            delta.pop("cmdstat_info", None)
            total = totals.setdefault(name, Counter())
            total.update(delta)
            total["~requests"] += count
            total["~trips"] += ROUND_TRIPS["redis"] - trips
            total["~cpu_us"] += round(1e6 * cpu)
            total["~xacts"] += x1 - x0 - 1  # the xact_commit read itself is one transaction
            n = total["~requests"]
            commands = {k: v for k, v in total.items() if not k.startswith("~")}
            results[name] = {
                "requests": n,
                "redis_round_trips_per_request": total["~trips"] / n,
                # the server process's CPU (event loop, bridge, client), not Redis's
                "cpu_ms_per_request": round(total["~cpu_us"] / 1000 / n, 3),
                "redis_commands_per_request": sum(commands.values()) / n,
                "redis_commands": {
                    k.removeprefix("cmdstat_"): round(v / n, 2) for k, v in sorted(commands.items())
                },
                "postgres_statements_per_request": total["~xacts"] / n,
            }

        sessions: list[tuple[str, Any]] = []

        async def initiate() -> int:
            for user in users:
                status, body = await post("/v1/verification/initiate", {"user_uuid": user})
                assert status == 200, body
                sessions.append((user, body))
            return len(users)

        async def verify() -> int:
            for user, body in sessions:
                status, answer = await post(
                    "/v1/verification/verify",
                    {
                        "session_id": body["session_id"],
                        "user_uuid": user,
                        "factors": {f: digest(user, f) for f in body["required_factors"]},
                    },
                )
                assert status == 200, answer
            return len(sessions)

        keys = [str(uuid.uuid4()) for _ in users]

        async def initiate_keyed() -> int:
            for user, key in zip(users, keys, strict=True):
                body = {"user_uuid": user}
                status, answer = await post("/v1/verification/initiate", body, **{IK: key})
                assert status == 200, answer
            return len(users)

        # Side by side: the same initiates without and with an Idempotency-Key (twice each,
        # interleaved, so drift of the machine falls on both), then replays of the keyed.
        await phase("initiate", initiate)
        await phase("initiate_with_key", initiate_keyed)
        await phase("initiate_replayed", initiate_keyed)  # the same keys again: replays
        keys[:] = [str(uuid.uuid4()) for _ in users]
        await phase("initiate_with_key", initiate_keyed)
        sessions.clear()
        await phase("initiate", initiate)
        await phase("verify", verify)
        x0 = await xacts(database_url)
        drained = await runtime.flusher.drain()
        results["audit"] = {
            "events": drained,
            "postgres_statements": await xacts(database_url) - x0 - 1,
            "batch_size": settings.audit_buffer_size,
        }

        results["memory"] = await session_memory(args.sessions, prefix + "m")
    return results


async def session_memory(count: int, prefix: str) -> dict[str, Any]:
    from adapters.bridge import TrioBridge, aio
    from adapters.redis_keys import KeySpace
    from adapters.redis_store import RedisStore
    from tests.adapters.helpers import event, new_session, new_user

    sync = redis.Redis.from_url(REDIS_URL)
    before = int(sync.info("memory")["used_memory"])
    store = await aio(RedisStore.connect)(url=REDIS_URL, keys=KeySpace(prefix))
    bridged: Any = TrioBridge(store, dependency="redis", timeout=60)
    keys: list[str] = []
    limiter = trio.Semaphore(64)
    now = time.time()

    async def one() -> None:
        async with limiter:
            user = new_user()
            issued = new_session(user, now=now)
            await bridged.store_session(issued, 0, event(user), 60_000)
            keys.append(store.keys.session(issued.session.session_id, user))

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        after = int(sync.info("memory")["used_memory"])
        sample = keys[:: max(1, count // 2000)]
        sizes = [int(sync.memory_usage(k, samples=0) or 0) for k in sample]
        stream_bytes = sum(
            int(sync.memory_usage(s, samples=0) or 0) for s in store.keys.all_streams()
        )
    finally:
        await aio(store.aclose)()
        delete_prefix(REDIS_URL, prefix)
    return {
        "sessions": count,
        "memory_usage_per_session_key_bytes": round(sum(sizes) / len(sizes), 1),
        "used_memory_growth_per_session_bytes": round((after - before) / count, 1),
        "audit_stream_bytes_per_session": round(stream_bytes / count, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=200, help="per phase (200)")
    parser.add_argument("--sessions", type=int, default=100_000, help="for memory (100000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _count_round_trips()
    prefix = f"bench{secrets.token_hex(3)}"
    with temporary_database(DATABASE_URL) as database_url:
        try:
            results = trio.run(measure, args, database_url, prefix)
        finally:
            delete_prefix(REDIS_URL, prefix)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for phase in ("initiate", "initiate_with_key", "initiate_replayed", "verify"):
            r = results[phase]
            print(
                f"{phase:17} Redis round trips/request {r['redis_round_trips_per_request']:.2f}, "
                f"commands/request {r['redis_commands_per_request']:.2f}, "
                f"PostgreSQL statements/request {r['postgres_statements_per_request']:.2f}, "
                f"CPU {r['cpu_ms_per_request']:.3f} ms/request"
            )
            print(f"{'':17} commands: {r['redis_commands']}")
        a = results["audit"]
        print(
            f"audit: {a['events']} events written in {a['postgres_statements']} statements "
            f"(batches of {a['batch_size']})"
        )
        m = results["memory"]
        print(
            f"memory at {m['sessions']} sessions: MEMORY USAGE "
            f"{m['memory_usage_per_session_key_bytes']} B per session key; used_memory "
            f"+{m['used_memory_growth_per_session_bytes']} B per session (incl. its audit "
            f"event, {m['audit_stream_bytes_per_session']} B, until flushed)"
        )
    return results


if __name__ == "__main__":
    main()
