"""The merchant directory: keys checked in memory, revocations picked up, fail closed."""

from __future__ import annotations

import secrets

import pytest

from adapters.errors import DependencyUnavailable
from adapters.memory import MemoryStore
from zeropay_proto import RemoteProtocolError
from zeropay_proto.merchants import API_KEY_ENTROPY_BYTES, issue_api_key
from zeropay_server.merchants import DEFAULT_MAX_STALENESS_SECONDS, MerchantDirectory


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def directory_with_a_key() -> tuple[MemoryStore, Clock, MerchantDirectory, str, str]:
    """A store holding one key of shop-1, a directory over it (not yet loaded), the key's id
    and the key itself."""
    store, clock = MemoryStore(), Clock()
    key, credential = issue_api_key(
        "shop-1", entropy=secrets.token_bytes(API_KEY_ENTROPY_BYTES), now_ms=1
    )
    await store.add_merchant_key(credential)
    return store, clock, MerchantDirectory(store, store, clock=clock), credential.key_id, key


async def test_a_revoked_key_stops_working_at_the_next_refresh() -> None:
    store, _, directory, key_id, key = await directory_with_a_key()
    assert await directory.refresh() == 1
    assert directory.authenticate(key) == "shop-1"
    assert await store.revoke_merchant_key(key_id, 2)
    assert directory.authenticate(key) == "shop-1"  # until the refresh
    await directory.refresh()
    with pytest.raises(RemoteProtocolError) as refused:
        directory.authenticate(key)
    assert refused.value.error_status_hint == 401


async def test_a_directory_too_stale_to_trust_fails_closed() -> None:
    _, clock, directory, _, key = await directory_with_a_key()
    with pytest.raises(DependencyUnavailable):
        directory.authenticate(key)  # never loaded
    await directory.refresh()
    clock.now += DEFAULT_MAX_STALENESS_SECONDS + 1
    with pytest.raises(DependencyUnavailable):
        directory.authenticate(key)
    await directory.refresh()
    assert directory.authenticate(key) == "shop-1"


async def test_a_revocation_published_in_redis_holds_without_postgresql() -> None:
    store, _, directory, key_id, key = await directory_with_a_key()
    await directory.refresh()
    await directory.read_revocations()
    assert directory.authenticate(key) == "shop-1"
    await store.publish_merchant_key_revoked(key_id)  # PostgreSQL is not asked again
    await directory.read_revocations()
    with pytest.raises(RemoteProtocolError) as refused:
        directory.authenticate(key)
    assert refused.value.error_status_hint == 401


async def test_the_list_is_trusted_while_either_source_answers_and_no_longer() -> None:
    _, clock, directory, _, key = await directory_with_a_key()
    await directory.refresh()
    clock.now += DEFAULT_MAX_STALENESS_SECONDS + 1  # PostgreSQL unreachable since
    await directory.read_revocations()  # Redis still answers
    assert directory.authenticate(key) == "shop-1"
    clock.now += DEFAULT_MAX_STALENESS_SECONDS + 1  # and now neither
    with pytest.raises(DependencyUnavailable):
        directory.authenticate(key)
