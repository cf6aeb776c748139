"""``zeropay-server webhooks``: an operator adds, lists, disables endpoints and rotates their
secrets in PostgreSQL; a URL that is not HTTPS, or whose host resolves to a private or
loopback address, is refused (loopback only where WEBHOOKS_ALLOW_LOOPBACK says so)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.servers import command, production_env
from tests.services import REDIS_URL, temporary_database, unique_prefix


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    with temporary_database() as database_url:
        settings = production_env(REDIS_URL, unique_prefix(), database_url)
        done = command(settings, "migrate")
        assert done.returncode == 0, done.stderr
        yield settings


def test_an_endpoint_is_added_with_a_secret_shown_once_listed_rotated_and_disabled(
    env: dict[str, str],
) -> None:
    local = {**env, "WEBHOOKS_ALLOW_LOOPBACK": "true"}
    added = command(
        local, "webhooks", "add", "shop-1", "http://127.0.0.1:9/hooks", "session.verified"
    )
    assert added.returncode == 0, added.stderr
    head, secret = added.stdout.strip().splitlines()
    endpoint = head.split()[1]
    assert secret.startswith("whsec_")
    listed = command(env, "webhooks", "list", "shop-1")
    assert endpoint in listed.stdout
    assert "session.verified" in listed.stdout
    assert secret not in listed.stdout  # shown once
    rotated = command(env, "webhooks", "rotate-secret", endpoint)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip().splitlines()[-1].startswith("whsec_")
    assert rotated.stdout.strip().splitlines()[-1] != secret
    assert command(env, "webhooks", "disable", endpoint).returncode == 0
    assert "DISABLED" in command(env, "webhooks", "list").stdout
    again = command(env, "webhooks", "disable", endpoint)
    assert again.returncode == 2
    assert "no enabled endpoint" in again.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hooks", "HTTPS"),  # loopback not allowed here
        ("https://127.0.0.1:9/hooks", "loopback"),
        ("https://10.1.2.3/hooks", "private"),
        ("https://169.254.169.254/latest", "link-local"),
        ("https://localhost/hooks", "loopback"),
    ],
)
def test_a_url_aimed_at_the_services_own_network_is_refused(
    env: dict[str, str], url: str, why: str
) -> None:
    refused = command(env, "webhooks", "add", "shop-1", url)
    assert refused.returncode == 2
    assert why in refused.stderr


def test_unknown_event_types_and_bad_usage_are_refused(env: dict[str, str]) -> None:
    unknown = command(env, "webhooks", "add", "shop-1", "https://93.184.216.34/h", "session.won")
    assert (unknown.returncode, "unknown event types session.won" in unknown.stderr) == (2, True)
    assert command(env, "webhooks", "frobnicate").returncode == 2
    assert command(env, "webhooks", "disable", "not-a-uuid").returncode == 2
