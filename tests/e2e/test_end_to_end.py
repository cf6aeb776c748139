"""End to end: server processes over HTTP against the real Redis and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trio

from tests.e2e.servers import (
    ServerProcess,
    add_merchant,
    command,
    fresh,
    production_env,
    production_keys,
    running_server,
)
from tests.helpers import answers
from tests.services import (
    REDIS_URL,
    _stop,
    delete_prefix,
    own_prefix,
    running_private_redis,
    temporary_database,
    unique_prefix,
)

FACTORS = ("PIN", "COLOUR", "EMOJI", "WORDS", "FACE")


@pytest.fixture(scope="module")
def stack_env() -> Iterator[dict[str, str]]:
    prefix = unique_prefix()
    with temporary_database() as database_url:
        yield production_env(
            REDIS_URL,
            prefix,
            database_url,
            DB_AUTO_MIGRATE="true",
            DB_POOL_MIN="1",
            DB_POOL_SIZE="5",
            AUDIT_FLUSH_INTERVAL="200",
            RATE_LIMIT_GLOBAL="100000",
            RATE_LIMIT_PER_IP="100000",
            RATE_LIMIT_PER_USER="100000",
        )
    delete_prefix(REDIS_URL, prefix)


@pytest.fixture(scope="module")
def merchant(stack_env: dict[str, str]) -> dict[str, str]:
    """The X-API-Key header of a merchant added with the CLI before the servers start."""
    return {"X-API-Key": add_merchant(stack_env)}


@pytest.fixture(scope="module")
def two_servers(
    stack_env: dict[str, str], merchant: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    workdir = tmp_path_factory.mktemp("servers")
    with running_server(stack_env, workdir, "a") as a, running_server(stack_env, workdir, "b") as b:
        yield a, b


async def call(
    client: httpx.AsyncClient, method: str, url: str, body: Any = None, **headers: str
) -> httpx.Response:
    if method != "GET":
        headers = {**fresh(), **headers}
    return await client.request(method, url, json=body, headers=headers)


async def audit_actions(database_url: str, user: str) -> list[str]:
    async def fetch() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT action FROM audit_log WHERE user_id = $1 ORDER BY at, action", user
            )
        finally:
            await conn.close()
        return [r[0] for r in rows]

    # asyncpg needs asyncio; run it in a thread with its own loop.
    import asyncio

    return await trio.to_thread.run_sync(lambda: asyncio.run(fetch()))


async def test_full_flow_over_http(
    two_servers: tuple[ServerProcess, ServerProcess],
    stack_env: dict[str, str],
    merchant: dict[str, str],
) -> None:
    server, _ = two_servers
    user = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=merchant) as client:
        enrolled = await call(
            client,
            "POST",
            "/v1/enrollment/store",
            {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "phone-1"},
        )
        assert enrolled.status_code == 201, enrolled.text
        started = await call(
            client,
            "POST",
            "/v1/verification/initiate",
            {"user_uuid": user, "amount": 9999, "currency": "EUR"},
        )
        assert started.status_code == 200
        body = started.json()
        verified = await call(
            client,
            "POST",
            "/v1/verification/verify",
            {
                "session_id": body["session_id"],
                "user_uuid": user,
                "factors": answers(user, body["required_factors"]),
            },
        )
        assert verified.status_code == 200, verified.text
        token = verified.json()["auth_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/v1/session/validate", headers=auth)).status_code == 200
        assert (await call(client, "POST", "/v1/session/revoke", **auth)).status_code == 200
        assert (await client.get("/v1/session/validate", headers=auth)).status_code == 401
        again = await call(client, "POST", "/v1/verification/initiate", {"user_uuid": user})
        second = await call(
            client,
            "POST",
            "/v1/verification/verify",
            {
                "session_id": again.json()["session_id"],
                "user_uuid": user,
                "factors": answers(user, again.json()["required_factors"]),
            },
        )
        auth = {"Authorization": f"Bearer {second.json()['auth_token']}"}
        with trio.fail_after(30):  # the flusher writes the trail within its interval
            while len(await audit_actions(stack_env["DATABASE_URL"], user)) < 6:
                await trio.sleep(0.1)
        exported = await client.get(f"/v1/enrollment/export/{user}", headers=auth)
        assert exported.status_code == 200
        trail = [e["action"] for e in exported.json()["audit_trail"]]
        assert trail[:4] == [
            "ENROLLED",
            "SESSION_INITIATED",
            "VERIFICATION_SUCCEEDED",
            "TOKEN_REVOKED",
        ]
        deleted = await call(client, "DELETE", f"/v1/enrollment/delete/{user}", **auth)
        assert deleted.status_code == 200
        assert (await client.get(f"/v1/enrollment/export/{user}", headers=auth)).status_code == 401
    with trio.fail_after(30):
        while "ENROLLMENT_DELETED" not in await audit_actions(stack_env["DATABASE_URL"], user):
            await trio.sleep(0.1)


async def test_a_session_initiated_on_one_instance_verifies_on_the_other(
    two_servers: tuple[ServerProcess, ServerProcess],
    merchant: dict[str, str],
) -> None:
    """The original service kept sessions in one process's memory."""
    a, b = two_servers
    user = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30, headers=merchant) as client:
        await call(
            client,
            "POST",
            f"{a.url}/v1/enrollment/store",
            {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"},
        )
        started = (
            await call(client, "POST", f"{a.url}/v1/verification/initiate", {"user_uuid": user})
        ).json()
        status = await client.get(f"{b.url}/v1/verification/status/{started['session_id']}")
        assert status.json()["status"] == "pending"
        done = await call(
            client,
            "POST",
            f"{b.url}/v1/verification/verify",
            {
                "session_id": started["session_id"],
                "user_uuid": user,
                "factors": answers(user, started["required_factors"]),
            },
        )
        assert done.status_code == 200
        token = done.json()["auth_token"]
        valid = await client.get(
            f"{a.url}/v1/session/validate", headers={"Authorization": f"Bearer {token}"}
        )
        assert valid.status_code == 200


async def test_fifty_concurrent_wrong_verifications_across_processes_evaluate_five(
    two_servers: tuple[ServerProcess, ServerProcess],
    merchant: dict[str, str],
) -> None:
    a, b = two_servers
    user = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=60, headers=merchant) as client:
        await call(
            client,
            "POST",
            f"{a.url}/v1/enrollment/store",
            {"user_uuid": user, "factors": answers(user, list(FACTORS)), "device_id": "d"},
        )
        sessions = []
        for i in range(17):  # 17 sessions x 3 attempts >= 50 attempts
            server = (a, b)[i % 2]
            started = await call(
                client, "POST", f"{server.url}/v1/verification/initiate", {"user_uuid": user}
            )
            sessions.append(started.json())
        statuses: list[int] = []

        async def guess(i: int) -> None:
            session, server = sessions[i % len(sessions)], (a, b)[i % 2]
            response = await call(
                client,
                "POST",
                f"{server.url}/v1/verification/verify",
                {
                    "session_id": session["session_id"],
                    "user_uuid": user,
                    "factors": answers(user, session["required_factors"], "wrong"),
                },
            )
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(guess, i)
    assert len(statuses) == 50
    assert statuses.count(401) == 5  # evaluated, and failed
    assert statuses.count(429) == 45  # refused by the lock before any comparison


async def test_twenty_concurrent_requests_with_one_nonce_across_processes(
    two_servers: tuple[ServerProcess, ServerProcess],
    merchant: dict[str, str],
) -> None:
    """Twenty copies of one request (a replay is the same request, for the same user), sent
    at once to two server processes: one is served."""
    a, b = two_servers
    headers = fresh()
    statuses: list[int] = []
    user = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30, headers=merchant) as client:

        async def send(i: int) -> None:
            server = (a, b)[i % 2]
            response = await client.post(
                f"{server.url}/v1/verification/initiate",
                json={"user_uuid": user},
                headers=headers,
            )
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(send, i)
    assert sorted(statuses) == [200] + [403] * 19


@pytest.fixture
def private_redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_private_redis(tmp_path) as server:
        yield server


async def test_redis_down_is_503_never_a_success_or_a_500(
    stack_env: dict[str, str],
    private_redis_url: tuple[str, subprocess.Popen[bytes]],
    tmp_path: Path,
    merchant: dict[str, str],
) -> None:
    """In the original service every limiter failed open when Redis was down."""
    url, redis_process = private_redis_url
    with running_server({**stack_env, "REDIS_URL": url}, tmp_path, "doomed") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=merchant) as client:
            user = str(uuid.uuid4())
            ok = await call(client, "POST", "/v1/verification/initiate", {"user_uuid": user})
            assert ok.status_code == 200
            _stop(redis_process)
            for method, path, body in [
                ("POST", "/v1/verification/initiate", {"user_uuid": user}),
                ("POST", "/v1/verification/verify", {"session_id": ok.json()["session_id"],
                  "user_uuid": user, "factors": answers(user, ["PIN"])}),
                ("GET", f"/v1/verification/status/{ok.json()['session_id']}", None),
            ]:  # fmt: skip
                response = await call(client, method, path, body)
                assert response.status_code == 503, (path, response.text)
                assert response.json()["code"] == "DEPENDENCY_UNAVAILABLE"
                assert int(response.headers["Retry-After"]) >= 1
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert (await client.get("/health/live")).status_code == 200


async def test_graceful_shutdown_drains_the_audit_stream(
    stack_env: dict[str, str], tmp_path: Path, merchant: dict[str, str]
) -> None:
    # A prefix of its own: no other instance's flusher may claim these events first.
    with own_prefix() as prefix:
        env = {
            **stack_env,
            "REDIS_PREFIX": prefix,
            "AUDIT_FLUSH_INTERVAL": "600000",
            "AUDIT_BUFFER_SIZE": "1000",
        }
        user = str(uuid.uuid4())
        with running_server(env, tmp_path, "closing") as server:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=30, headers=merchant
            ) as client:
                for _ in range(3):
                    ok = await call(
                        client, "POST", "/v1/verification/initiate", {"user_uuid": user}
                    )
                    assert ok.status_code == 200
            assert await audit_actions(stack_env["DATABASE_URL"], user) == []  # still buffered
            assert server.stop() == 0
        assert await audit_actions(stack_env["DATABASE_URL"], user) == ["SESSION_INITIATED"] * 3
        assert '"audit drained"' in server.log.read_text()


async def test_api_instances_leave_the_audit_to_an_audit_instance(
    stack_env: dict[str, str], tmp_path: Path, merchant: dict[str, str]
) -> None:
    """``--role api`` serves and flushes nothing; ``--role audit`` flushes and serves no API."""
    with own_prefix() as prefix:
        env = {**stack_env, "REDIS_PREFIX": prefix}
        user = str(uuid.uuid4())
        with running_server({**env, "ZEROPAY_ROLE": "api"}, tmp_path, "api") as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=30, headers=merchant) as client:
                for _ in range(3):
                    ok = await call(
                        client, "POST", "/v1/verification/initiate", {"user_uuid": user}
                    )
                    assert ok.status_code == 200
            assert api.stop() == 0
        assert '"audit drained"' not in api.log.read_text()
        assert await audit_actions(stack_env["DATABASE_URL"], user) == []  # waiting in the stream
        with running_server({**env, "ZEROPAY_ROLE": "audit"}, tmp_path, "audit") as audit:
            async with httpx.AsyncClient(
                base_url=audit.url, timeout=30, headers=merchant
            ) as client:
                refused = await call(
                    client, "POST", "/v1/verification/initiate", {"user_uuid": user}
                )
                assert refused.status_code == 404
                assert (await client.get("/metrics")).status_code == 200

            async def flushed() -> bool:
                return (
                    await audit_actions(stack_env["DATABASE_URL"], user)
                    == ["SESSION_INITIATED"] * 3
                )

            with trio.fail_after(30):  # the audit instance flushes what the api one left
                while not await flushed():
                    await trio.sleep(0.1)
            horizon = await partition_horizon(audit)
            assert audit.stop() == 0
    # ... and keeps the audit partitions ahead: three months after this one.
    today = dt.datetime.now(dt.UTC)
    months = today.year * 12 + today.month - 1 + 4
    assert horizon == dt.datetime(months // 12, months % 12 + 1, 1, tzinfo=dt.UTC).timestamp()


async def partition_horizon(server: ServerProcess) -> float:
    """The horizon gauge, once the instance's first maintenance run has set it."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        with trio.fail_after(30):
            while True:
                for line in (await client.get("/metrics")).text.splitlines():
                    if line.startswith("zeropay_audit_partition_horizon_seconds "):
                        return float(line.rsplit(" ", 1)[1])
                await trio.sleep(0.1)


def test_maintain_runs_once_from_the_command_line(stack_env: dict[str, str]) -> None:
    """For cron users: one run, its report as JSON."""
    assert command(stack_env, "migrate").returncode == 0
    result = command(stack_env, "maintain")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ran"] is True
    assert dt.datetime.fromisoformat(report["horizon"]) > dt.datetime.now(dt.UTC)


def test_production_refuses_to_start_without_configured_keys(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in stack_env.items() if not k.startswith("ZEROPAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "zeropay_server"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"ZEROPAY_MASTER_KEYS" in result.stderr
    assert b"never generated" in result.stderr


async def test_several_worker_processes_share_one_port_and_their_metrics(
    stack_env: dict[str, str], tmp_path: Path, merchant: dict[str, str]
) -> None:
    env = {**stack_env, "ZEROPAY_WORKERS": "2"}
    with running_server(env, tmp_path, "workers") as server:
        children = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
        ).stdout.split()
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=merchant) as client:
            statuses = []
            for _ in range(30):  # new connections, spread by the kernel over the workers
                async with httpx.AsyncClient(
                    base_url=server.url, timeout=30, headers=merchant
                ) as fresh_client:
                    statuses.append((await fresh_client.get("/health/live")).status_code)
            metrics = (await client.get("/metrics")).text
        assert statuses == [200] * 30
        served = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('zeropay_http_requests_total{method="GET",route="/health/live"')
        ]
        assert sum(served) >= 30  # counted across both processes
        assert len([c for c in children if c]) >= 2
        assert server.stop() == 0
    # One audit flusher per host, not one per process.
    flushers = [line for line in server.log.read_text().splitlines() if '"listening"' in line]
    assert len(flushers) == 2
    assert sum('"audit_flusher": true' in line for line in flushers) == 1


@pytest.mark.parametrize("words", ["migrate", "maintain", "rotate-keys"])
def test_a_command_meets_an_unreachable_database_with_a_message(
    stack_env: dict[str, str], words: str
) -> None:
    result = command({**stack_env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/n"}, words)
    assert result.returncode == 1
    assert "unavailable" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_command_on_a_database_never_migrated_says_so() -> None:
    with temporary_database() as empty:
        env = {**production_keys(), "REDIS_URL": REDIS_URL, "DATABASE_URL": empty}
        result = command(env, "maintain")
    assert result.returncode == 2
    assert "not migrated" in result.stderr
    assert "Traceback" not in result.stderr
