"""The original service made 9-11 Redis and 5 PostgreSQL round trips per verify; this one
makes 2 per initiate and 3 per verify (admission with the reservation; the merchant's failure
budget, reserved before anything is compared; the conclusion, with the failure given back
beside it), and reads PostgreSQL at most once.

Counted, not timed: every Redis round trip passes through the Trio pool's ``round_trip`` (a
request's steps on standalone Redis) or redis-py's ``send_packed_command`` (one command or one
pipeline on one connection, behind the bridge); PostgreSQL statements are counted at the
adapter's pool. Real Redis and PostgreSQL, standalone Redis. A verify reads PostgreSQL only when
the user's record is not in the record cache.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.connection as redis_connection
import trio_asyncio
import trio_parallel

from adapters.redis_keys import KeySpace
from adapters.redis_trio import TrioRedisPool
from tests.services import REDIS_URL, delete_prefix, temporary_database, unique_prefix
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key
from zeropay_server.app import create_app
from zeropay_server.config import load_settings
from zeropay_server.runtime import open_runtime

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


@pytest.fixture
def database_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


async def test_initiate_and_verify_take_two_and_three_redis_round_trips_and_one_query(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: Counter[str] = Counter()
    send = redis_connection.AbstractConnection.send_packed_command

    async def counting_send(self: Any, command: Any, check_health: bool = True) -> None:
        trips["redis"] += 1
        await send(self, command, check_health)

    monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", counting_send)
    trio_round_trip = TrioRedisPool.round_trip

    async def counting_round_trip(self: TrioRedisPool, packed: bytes, count: int) -> list[Any]:
        trips["redis"] += 1
        trips["on trio"] += 1
        return await trio_round_trip(self, packed, count)

    monkeypatch.setattr(TrioRedisPool, "round_trip", counting_round_trip)

    def key() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    prefix = unique_prefix()
    settings = load_settings(
        {
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
            "DATABASE_URL": database_url,
            "DB_AUTO_MIGRATE": "true",
            "PBKDF2_ITERATIONS": "1000",
            "ZEROPAY_MASTER_KEYS": f"1:{key()}",
            "ZEROPAY_PEPPER": key(),
            "ZEROPAY_RECEIPT_SIGNING_KEY": key(),
        }
    )
    user = str(uuid.uuid4())
    try:
        async with (
            trio_asyncio.open_loop(),
            open_runtime(settings, run_sync=trio_parallel.run_sync) as runtime,
        ):
            assert runtime.postgres is not None
            queries: Counter[str] = Counter()
            load = runtime.postgres.load_enrollment

            async def counting_load(user_id: str) -> Any:
                queries["load_enrollment"] += 1
                return await load(user_id)

            monkeypatch.setattr(runtime.postgres, "load_enrollment", counting_load)
            client = create_app(runtime).test_client()
            api_key, credential = issue_api_key(
                "shop-1", entropy=secrets.token_bytes(API_KEY_ENTROPY_BYTES), now_ms=0
            )
            await runtime.durable.add_merchant_key(credential)
            await runtime.merchants.refresh()

            async def post(path: str, body: dict[str, Any]) -> Any:
                headers = {
                    "X-Nonce": str(uuid.uuid4()),
                    "X-Timestamp": str(int(time.time() * 1000)),
                    "X-API-Key": api_key,
                }
                response = await client.post(path, json=body, headers=headers)
                assert response.status_code in {200, 201}, await response.get_data()
                return await response.get_json()

            digests = {f: f"{f}:{user}".encode().hex().ljust(64, "0")[:64] for f in FACTORS}
            await post(
                "/v1/enrollment/store", {"user_uuid": user, "factors": digests, "device_id": "d"}
            )

            async def initiate_and_verify() -> tuple[int, int, int, int]:
                trips.clear()
                queries.clear()
                started = await post("/v1/verification/initiate", {"user_uuid": user})
                assert trips["on trio"] == trips["redis"], "an initiate step crossed the bridge"
                initiate = trips["redis"], queries["load_enrollment"]
                trips.clear()
                queries.clear()
                await post(
                    "/v1/verification/verify",
                    {
                        "session_id": started["session_id"],
                        "user_uuid": user,
                        "factors": {f: digests[f] for f in started["required_factors"]},
                    },
                )
                assert trips["on trio"] == trips["redis"], "a verify step crossed the bridge"
                return (*initiate, trips["redis"], queries["load_enrollment"])

            # Just enrolled: the record is held (nothing cached), so PostgreSQL is read.
            held = await initiate_and_verify()
            # As if the hold had ended: the next initiate caches the record, which its
            # verify then reads from Redis, in its first round trip.
            hold_key = KeySpace(prefix).user(user, "hold")
            redis.Redis.from_url(REDIS_URL).delete(hold_key)
            filled = await initiate_and_verify()
            cached = await initiate_and_verify()
    finally:
        delete_prefix(REDIS_URL, prefix)
    # (initiate Redis trips, initiate queries, verify Redis trips, verify queries)
    assert held == (2, 1, 3, 1)
    assert filled == (2, 1, 3, 0)  # initiate's miss cached the record with the session
    assert cached == (2, 0, 3, 0)
