"""The README's walk-through runs as written: from another directory, against a server that
``PORT`` alone put on a free port, with the demo merchant key it was given."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import DEMO_MERCHANT_KEY
from tests.services import free_port, wait_until

README = Path(__file__).parent.parent.parent / "README.md"


def walk_through() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- walk-through -->\n```sh\n(.*?)```\n<!-- /walk-through -->", text, re.S)
    assert block, "the README's walk-through is marked <!-- walk-through -->"
    return block.group(1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """An embedded server on ``PORT`` (no ``--bind``), as ``PORT=... scripts/serve`` starts it."""
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("ZEROPAY_BIND", "REDIS_URL")}
    env |= {"PORT": port, "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY, "DATABASE_URL": ""}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "zeropay_server"], env=env, stdout=log, stderr=log
    )
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200,
            timeout=60,
            what="the server on PORT",
        )
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_walk_through_runs_as_written(served: str, tmp_path: Path) -> None:
    # The checkout as the walk-through names it: $REPO/.venv/bin/zeropay-server.
    repo = tmp_path / "checkout"
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "zeropay-server").symlink_to(
        Path(sys.executable).parent / "zeropay-server"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PORT": served, "K": DEMO_MERCHANT_KEY, "REPO": str(repo)}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walk_through()],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert '"factor_count": 3' in lines[0]
    assert '"session_id"' in lines[1]
    assert lines[2].startswith("HTTP/1.1 200")
    assert lines[3].strip().lower() == "idempotent-replayed: true"
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", lines[4])  # the receipt's JWS
    assert lines[5] == "verified"
    assert '"type": "/problems/invalid-input"' in lines[6]
    assert '"field": "amount"' in lines[6]
