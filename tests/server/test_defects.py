"""Regression tests for defects of the original service not covered route by route."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path

from tests.helpers import answers
from tests.server.harness import running_app

ROOT = Path(__file__).parents[2]


def test_no_scan_or_keys_command_anywhere_in_the_service() -> None:
    """The original service's admin statistics ran an unbounded SCAN loop (77,303 in 4 s)."""
    sources = [
        *sorted((ROOT / "adapters").rglob("*.py")),
        *sorted((ROOT / "adapters" / "lua").glob("*.lua")),
        *sorted((ROOT / "zeropay_server").rglob("*.py")),
    ]
    assert len(sources) > 15
    # A client's scan/scan_iter/keys methods, or the commands by name (Lua or raw).
    pattern = re.compile(
        r"\.(scan_iter|scan|keys)\(|['\"](SCAN|KEYS)['\"]|execute_command\(\s*['\"](SCAN|KEYS)"
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


async def test_a_tampered_wrapped_key_fails_verification_even_with_right_factors() -> None:
    """The original service's "ZK proof" returned constants. Here a success needs the data
    key to unwrap under the PBKDF2 key derived from the stored verifiers."""
    async with running_app() as h:
        user = str(uuid.uuid4())
        await h.enroll(user)
        stored = await h.runtime.durable.load_enrollment(user)
        assert stored is not None
        key = stored.wrapped_key
        broken = replace(key, wrapped=key.wrapped[:-1] + bytes([key.wrapped[-1] ^ 1]))
        assert await h.runtime.durable.replace_enrollment(replace(stored, wrapped_key=broken))
        started = await h.initiate(user)
        attempt = await h.verify(
            user, started.body["session_id"], answers(user, started.body["required_factors"])
        )
        assert attempt.status == 401
        assert "auth_token" not in attempt.body
