"""Idempotency keys across two server processes sharing a standalone Redis, or a Redis
Cluster (each key in its owner's slot), and PostgreSQL: concurrent duplicates run once, a
replay from either instance is the first answer byte for byte, another request under the key
is a 422, and a replayed verify spends no attempt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.servers import ServerProcess, add_merchant, fresh, production_env, running_server
from tests.helpers import answers
from tests.services import (
    REDIS_URL,
    delete_prefix,
    running_redis_cluster,
    temporary_database,
    unique_prefix,
)

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")
LIMITS = {
    "RATE_LIMIT_GLOBAL": "100000",
    "RATE_LIMIT_PER_IP": "100000",
    "RATE_LIMIT_PER_USER": "100000",
    "DB_AUTO_MIGRATE": "true",
    "DB_POOL_MIN": "1",
    "DB_POOL_SIZE": "5",
}


@pytest.fixture(scope="module", params=["redis", "cluster"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    """Two server processes on one store, and the X-API-Key header of their merchant."""
    workdir = tmp_path_factory.mktemp(f"idempotency-{request.param}")
    prefix = unique_prefix()
    with temporary_database() as database_url:
        if request.param == "redis":
            env = production_env(REDIS_URL, prefix, database_url, **LIMITS)
            yield from _serving(env, workdir)
            delete_prefix(REDIS_URL, prefix)
            return
        with running_redis_cluster(workdir / "cluster") as cluster:
            nodes = ",".join(f"{host}:{port}" for host, port in cluster.nodes)
            clustered = {"REDIS_CLUSTER_ENABLED": "true", "REDIS_CLUSTER_NODES": nodes}
            env = production_env("", prefix, database_url, **LIMITS, **clustered)
            yield from _serving(env, workdir)


def _serving(
    env: dict[str, str], workdir: Any
) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    merchant = {"X-API-Key": add_merchant(env, "idem-shop")}
    with running_server(env, workdir, "a") as a, running_server(env, workdir, "b") as b:
        yield [a, b], merchant


async def post(client: httpx.AsyncClient, path: str, body: Any, **headers: str) -> httpx.Response:
    return await client.post(path, json=body, headers={**fresh(), **headers})


async def test_duplicates_run_once_and_replay_from_either_instance(
    stack: tuple[list[ServerProcess], dict[str, str]],
) -> None:
    servers, merchant = stack
    user, key = str(uuid.uuid4()), {"Idempotency-Key": str(uuid.uuid4())}
    body = {
        "user_uuid": user,
        "amount": 4250,
        "currency": "EUR",
        "psp_config": {"simulate_delay_ms": 1500},  # the first stays in flight a while
    }
    path = "/v1/verification/initiate"
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30, headers=merchant) for s in servers]
    try:
        answered: list[httpx.Response] = []

        async def send(client: httpx.AsyncClient) -> None:
            answered.append(await post(client, path, body, **key))

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(send, clients[n % 2])
        assert sorted(r.status_code for r in answered) == [200, 409, 409, 409, 409, 409]
        busy = next(r for r in answered if r.status_code == 409)
        assert busy.json()["code"] == "IDEMPOTENCY_IN_PROGRESS"
        first = next(r for r in answered if r.status_code == 200)
        for client in clients:
            replay = await post(client, path, body, **key)
            assert replay.content == first.content
            assert replay.headers["Idempotent-Replayed"] == "true"
        other = await post(clients[1], path, {**body, "amount": 1}, **key)
        assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    finally:
        for client in clients:
            await client.aclose()


async def test_a_replayed_verify_spends_no_attempt_on_any_instance(
    stack: tuple[list[ServerProcess], dict[str, str]],
) -> None:
    servers, merchant = stack
    user = str(uuid.uuid4())
    a = httpx.AsyncClient(base_url=servers[0].url, timeout=30, headers=merchant)
    b = httpx.AsyncClient(base_url=servers[1].url, timeout=30)
    try:
        enrolled = {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"}
        assert (await post(a, "/v1/enrollment/store", enrolled)).status_code == 201
        started = (await post(a, "/v1/verification/initiate", {"user_uuid": user})).json()
        session = started["session_id"]
        wrong = {
            "session_id": session,
            "user_uuid": user,
            "factors": answers(user, started["required_factors"], "wrong"),
        }
        key = {"Idempotency-Key": str(uuid.uuid4())}
        failed = await post(a, "/v1/verification/verify", wrong, **key)
        assert (failed.status_code, failed.json()["attempts_remaining"]) == (401, 2)
        replayed = await post(b, "/v1/verification/verify", wrong, **key)
        assert replayed.content == failed.content
        status = (await b.get(f"/v1/verification/status/{session}")).json()
        assert status["attempts_used"] == 1
    finally:
        await a.aclose()
        await b.aclose()
