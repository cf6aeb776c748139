"""Real servers for the SDK's tests: the embedded default, and Redis with PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.servers import DEMO_MERCHANT_KEY, add_merchant, production_env, running_server
from tests.services import REDIS_URL, delete_prefix, temporary_database, unique_prefix

LIMITS = {
    "RATE_LIMIT_GLOBAL": "100000",
    "RATE_LIMIT_PER_IP": "100000",
    "RATE_LIMIT_PER_USER": "100000",
    "PBKDF2_ITERATIONS": "1000",
}


@dataclass(frozen=True)
class Server:
    kind: str
    url: str
    api_key: str


@pytest.fixture(scope="module", params=["embedded", "redis+postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("sdk")
    if request.param == "embedded":
        env = {
            **LIMITS,
            "REDIS_URL": "",
            "DATABASE_URL": "",
            "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY,
        }
        with running_server(env, workdir) as process:
            yield Server("embedded", process.url, DEMO_MERCHANT_KEY)
        return
    prefix = unique_prefix()
    with temporary_database() as database_url:
        env = production_env(REDIS_URL, prefix, database_url, DB_AUTO_MIGRATE="true", **LIMITS)
        key = add_merchant(env, "sdk-shop")
        with running_server(env, workdir) as process:
            yield Server("redis+postgresql", process.url, key)
    delete_prefix(REDIS_URL, prefix)
