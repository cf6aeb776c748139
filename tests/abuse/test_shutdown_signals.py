"""Shutdown by any signal is clean, and a crypto worker's death is an outage, not a bug.

Found by attack: SIGTERM to the whole process group (systemd's default
``KillMode=control-group``, or ``kill -- -PGID``) killed the crypto workers too; in-flight
verifies answered 500 with a ``BrokenWorkerProcessError`` traceback, their sessions left with
an attempt consumed and no outcome audited.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trio_parallel

from tests.e2e.servers import add_merchant, production_env
from tests.faults.history import FACTORS, headers
from tests.helpers import digest
from tests.server.harness import running_app
from tests.services import (
    REDIS_URL,
    delete_prefix,
    free_port,
    temporary_database,
    unique_prefix,
    wait_until,
)

#: Enough PBKDF2 work (a few tenths of a second a verify, on one worker) that the queue of
#: verifies is still running when the signal lands.
ITERATIONS = "3000000"
USERS = 8


@dataclass
class Deployment:
    env: dict[str, str]
    database_url: str
    merchant_key: str


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    prefix = unique_prefix()
    with temporary_database() as database_url:
        env = production_env(
            REDIS_URL,
            prefix,
            database_url,
            PBKDF2_ITERATIONS=ITERATIONS,
            RATE_LIMIT_GLOBAL="0",
            RATE_LIMIT_PER_IP="0",
        )
        try:
            yield Deployment(env, database_url, add_merchant(env, "signals-shop"))
        finally:
            delete_prefix(REDIS_URL, prefix)


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def _audited(database_url: str, action: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = $1", action)
        return count
    finally:
        await conn.close()


@pytest.mark.parametrize("group", [True, False], ids=["process-group", "pid"])
def test_sigterm_lets_in_flight_verifies_finish(
    deployment: Deployment, tmp_path: Path, group: bool
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "zeropay_server"],
            env={**os.environ, **deployment.env, "ZEROPAY_BIND": f"127.0.0.1:{port}"},
            stdout=sink,
            stderr=sink,
            start_new_session=True,  # its own process group, as systemd gives a service
        )
    try:
        wait_until(
            lambda: httpx.get(f"{url}/health/ready", timeout=2).status_code == 200,
            timeout=60,
            what="server",
        )
        users = [str(uuid.uuid4()) for _ in range(USERS)]
        sessions: dict[str, dict[str, Any]] = {}
        with httpx.Client(base_url=url, timeout=60) as client:
            for user in users:
                body = {
                    "user_uuid": user,
                    "device_id": "signals",
                    "factors": {f: digest(user, f) for f in FACTORS},
                }
                enrolled = client.post(
                    "/v1/enrollment/store", json=body, headers=headers(deployment.merchant_key)
                )
                assert enrolled.status_code == 201, enrolled.text
                started = client.post(
                    "/v1/verification/initiate",
                    json={"user_uuid": user},
                    headers=headers(deployment.merchant_key),
                )
                assert started.status_code == 200, started.text
                sessions[user] = started.json()

        def verify(user: str) -> int:
            started = sessions[user]
            body = {
                "session_id": started["session_id"],
                "user_uuid": user,
                "factors": {f: digest(user, f) for f in started["required_factors"]},
            }
            answer = httpx.post(
                f"{url}/v1/verification/verify",
                json=body,
                headers=headers(deployment.merchant_key),
                timeout=60,
            )
            assert answer.status_code != 500, answer.text
            return answer.status_code

        with ThreadPoolExecutor(max_workers=USERS) as pool:
            answers = [pool.submit(verify, user) for user in users]
            # Every verify in flight (one deriving, the others queued for the pool): a request
            # not yet accepted when the listener closes is refused, which is not this test.
            wait_until(
                lambda: _metric(url, "zeropay_crypto_queue_depth") >= USERS - 1,
                timeout=30,
                what="every verify queued for the crypto pool",
            )
            if group:
                os.killpg(server.pid, signal.SIGTERM)
            else:
                server.send_signal(signal.SIGTERM)
            statuses = [a.result() for a in answers]
        exit_code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    output = log.read_text()
    assert exit_code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # Every verify that was running finished with its outcome: nothing given a 500, and the
    # audit holds exactly the outcomes the clients saw.
    assert statuses == [200] * USERS
    assert asyncio.run(_audited(deployment.database_url, "VERIFICATION_SUCCEEDED")) == USERS


def _die() -> None:
    os._exit(1)  # a crypto worker killed mid-derivation (the OOM killer, a stray SIGKILL)


async def test_a_dead_crypto_worker_is_a_503_that_gives_the_attempt_back() -> None:
    async with running_app() as h:
        user = str(uuid.uuid4())
        await h.enroll(user)
        started = await h.initiate(user)
        real = h.runtime.crypto._run_sync

        async def dying(*args: Any, limiter: Any = None) -> Any:
            return await trio_parallel.run_sync(_die, limiter=limiter)

        h.runtime.crypto._run_sync = dying
        answer = await h.pay(user, started.body)
        assert answer.status == 503, answer.text
        assert answer.body["code"] == "DEPENDENCY_UNAVAILABLE"
        status = await h.call("GET", f"/v1/verification/status/{started.body['session_id']}")
        assert status.body["attempts_used"] == 0  # given back: an outage is never an attempt
        h.runtime.crypto._run_sync = real
        assert (await h.pay(user, started.body)).status == 200
