"""A revoked merchant key stops working within seconds, PostgreSQL up or down, and no key
is trusted once neither PostgreSQL nor Redis has answered for the staleness bound.

Found by attack: a revoked key kept opening sessions for the whole 60 s observed while
PostgreSQL was unreachable, and by design could for up to 300 s (the directory trusted its
last list that long and only PostgreSQL carried revocations).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trio_asyncio

from tests.e2e.servers import add_merchant, production_env, running_server
from tests.faults.history import headers
from tests.services import REDIS_URL, delete_prefix, private_postgres, unique_prefix, wait_until
from zeropay_server.config import Settings, load_settings
from zeropay_server.migrate import publish_revocation
from zeropay_server.stack.postgres import PrivatePostgres


async def _publish(settings: Settings, key_id: str) -> str:
    async with trio_asyncio.open_loop():
        return await publish_revocation(settings, key_id)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def test_a_revocation_holds_while_postgresql_is_down(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    env = production_env(REDIS_URL, prefix, postgres.url)
    revoked_key = add_merchant(env, "revoked-shop")
    kept_key = add_merchant(env, "kept-shop")
    try:
        with running_server(env, tmp_path) as server:

            def authenticated(key: str) -> int:
                """A merchant route that needs no PostgreSQL: 404 for a key that is good."""
                answer = httpx.get(
                    f"{server.url}/v1/psp/session/psp_unknown", headers=headers(key), timeout=10
                )
                return answer.status_code

            assert authenticated(revoked_key) == authenticated(kept_key) == 404
            postgres.stop()
            # What `merchants revoke` publishes after PostgreSQL took the revocation.
            key_id = revoked_key.split("_")[1]
            said = trio.run(_publish, load_settings(env), key_id)
            assert "within 2 s" in said
            wait_until(
                lambda: authenticated(revoked_key) == 401,
                timeout=10,
                what="the revocation applied",
            )
            # The other merchant is not refused for PostgreSQL's outage: Redis answers, so the
            # list stays trusted past the staleness bound too (tests/server/test_merchants.py
            # moves a clock past it).
            assert authenticated(kept_key) == 404
    finally:
        delete_prefix(REDIS_URL, prefix)
