"""Test-wide settings.

Hypothesis runs derandomized (the same examples on every run, so CI is deterministic) and
without deadlines (a deadline is a timing threshold, and this machine is shared and noisy).
``HYPOTHESIS_PROFILE=deep`` runs many more examples, with fresh randomness, by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "deep",
    derandomize=False,
    deadline=None,
    max_examples=5_000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """The run fails if a test left keys under one of its Redis prefixes, or a database of
    its own, in the shared Redis and PostgreSQL: every test stops what it started (servers,
    background tasks) before it deletes what it made, so nothing writes after the cleanup."""
    yield
    from tests.services import (
        DATABASE_URL,
        MADE_DATABASES,
        MADE_PREFIXES,
        REDIS_URL,
        leftover_databases,
        leftover_keys,
    )

    problems = []
    if MADE_PREFIXES:
        for prefix, count in sorted(leftover_keys(REDIS_URL, MADE_PREFIXES).items()):
            problems.append(f"{count} Redis keys under {prefix!r} ({MADE_PREFIXES[prefix]})")
    if MADE_DATABASES:
        for name in leftover_databases(DATABASE_URL, MADE_DATABASES):
            problems.append(f"database {name!r} ({MADE_DATABASES[name]})")
    assert not problems, "left behind in the shared servers:\n" + "\n".join(problems)
