"""``zeropay-server stack``: the production topology on loopback, up, used through the load
balancer as the README's walk-through does, and down by PID."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import answers
from tests.services import free_port
from zeropay_server.stack.processes import alive


def stack(*words: str, state: Path, **options: str) -> subprocess.CompletedProcess[str]:
    flags = [item for name, value in options.items() for item in (f"--{name}", value)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "zeropay_server",
            "stack",
            *words,
            "--state-dir",
            str(state),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def state() -> Iterator[Path]:
    # Not pytest's tmp_path: PostgreSQL's user (the stack runs it as postgres under root)
    # must be able to reach its data.
    parent = Path(tempfile.mkdtemp(prefix="zeropay-stack-test-"))
    parent.chmod(0o711)
    try:
        yield parent / "stack"
    finally:
        stack("down", state=parent / "stack")
        shutil.rmtree(parent, ignore_errors=True)


def headers(**extra: str) -> dict[str, str]:
    return {"X-Nonce": str(uuid.uuid4()), "X-Timestamp": str(int(time.time() * 1000)), **extra}


def test_the_stack_comes_up_serves_through_the_load_balancer_and_goes_down(state: Path) -> None:
    port = free_port()
    started = stack("up", state=state, instances="2", **{"lb-port": str(port)})
    assert started.returncode == 0, started.stderr
    assert f"load balancer  http://127.0.0.1:{port}" in started.stdout
    recorded = json.loads((state / "state.json").read_text())
    names = [p["name"] for p in recorded["processes"]]
    assert names[:3] == ["postgresql-primary", "postgresql-replica", "pgbouncer"]
    assert sum(n.startswith("redis-") for n in names) == 6
    assert names[-3:] == ["api-1", "api-2", "haproxy"]
    key = (state / "merchant-key").read_text().strip()
    user = str(uuid.uuid4())
    factors = answers(user, ["PIN", "COLOUR", "WORDS"])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        body: dict[str, Any] = {"user_uuid": user, "device_id": "phone-1", "factors": factors}
        assert client.post("/v1/enrollment/store", json=body, headers=headers()).status_code == 201
        session = client.post(
            "/v1/verification/initiate",
            json={"user_uuid": user, "amount": 4250, "currency": "EUR"},
            headers=headers(**{"X-API-Key": key}),
        ).json()
        verify = {"session_id": session["session_id"], "user_uuid": user, "factors": factors}
        done = client.post("/v1/verification/verify", json=verify, headers=headers())
        assert done.status_code == 200, done.text
        assert done.json()["receipt"]["merchant_id"] == "stack-shop"
        assert client.get("/v1/keys").json()["keys"][0]["kid"] == "stack-1"
    shown = stack("status", state=state)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["ready"] is True
    pids = [p["pid"] for p in recorded["processes"]]
    stopped = stack("down", state=state)
    assert stopped.returncode == 0
    assert "postgresql-primary" in stopped.stdout
    assert [pid for pid in pids if alive(pid)] == []
    assert not state.exists()
    assert stack("status", state=state).returncode == 1


def test_a_second_stack_on_a_taken_port_is_refused_with_a_message(state: Path) -> None:
    taken = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", taken))
        sock.listen()
        refused = stack("up", state=state, **{"lb-port": str(taken)})
    assert refused.returncode == 1
    assert "is taken" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert os.path.exists(state) is False


def test_a_state_directory_that_is_not_this_users_own_is_never_read(tmp_path: Path) -> None:
    """``down`` signals the PIDs a state file lists: a planted directory (a symlink, or
    another user's) is refused, not read."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "state.json").write_text(
        json.dumps({"directory": str(elsewhere), "urls": {}, "processes": [
            {"name": "victim", "pid": os.getpid(), "stop_signal": "SIGTERM"}
        ]})
    )  # fmt: skip
    planted = tmp_path / "planted"
    planted.symlink_to(elsewhere)
    for words in ("down", "status"):
        refused = stack(words, state=planted)
        assert refused.returncode == 1
        assert "not this user's own directory" in refused.stderr
    assert (elsewhere / "state.json").exists()  # and this process is still here to say so
