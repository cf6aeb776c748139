"""Which merchant is calling: API keys checked against an in-memory directory (which also
holds the merchants' display names, shown to payers).

The live keys are few and change rarely, so every instance holds them in memory: checking a
key costs no round trip. Two sources keep the directory true:

- PostgreSQL, the keys' home, reloaded every :data:`REFRESH_SECONDS`;
- Redis, where ``zeropay-server merchants revoke`` also publishes each revocation, polled every
  :data:`REVOCATION_POLL_SECONDS`. So a revoked key stops working within seconds on every
  instance, and keeps being refused while PostgreSQL is unreachable.

The directory trusts its list while either source answered within ``max_staleness``
(``MERCHANT_KEYS_MAX_STALENESS``, :data:`DEFAULT_MAX_STALENESS_SECONDS`): with PostgreSQL
down, Redis still brings revocations; with both down for longer, it refuses every key (503).
It fails closed rather than trusting a list it cannot check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from adapters.errors import DependencyUnavailable
from adapters.ports import MerchantPort, MerchantRevocationPort
from zeropay_proto import RemoteProtocolError
from zeropay_proto.merchants import MerchantCredential, key_matches, parse_api_key

log = logging.getLogger("zeropay.merchants")

#: How often the directory reloads the live keys from PostgreSQL.
REFRESH_SECONDS = 10.0
#: How often it reads the revocations published in Redis (a revocation takes effect within).
REVOCATION_POLL_SECONDS = 2.0
#: Beyond this without an answer from either source, no key is trusted.
DEFAULT_MAX_STALENESS_SECONDS = 30


class MerchantDirectory:
    """The live merchant keys of the durable store, by key id, less those revoked."""

    def __init__(
        self,
        store: MerchantPort,
        revocations: MerchantRevocationPort,
        *,
        clock: Callable[[], float] = trio.current_time,
        max_staleness: float = DEFAULT_MAX_STALENESS_SECONDS,
    ) -> None:
        self._store = store
        self._revocations = revocations
        self._clock = clock
        self.max_staleness = max_staleness
        self._keys: dict[str, MerchantCredential] = {}
        self._names: dict[str, str] = {}
        self._revoked: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._revocations_at: float | None = None

    async def refresh(self) -> int:
        """Reload the live keys and the merchants' display names; returns how many keys
        there are."""
        keys = await self._store.merchant_keys()
        self._names = await self._store.merchant_names()
        self._keys = {credential.key_id: credential for credential in keys}
        self._loaded_at = self._clock()
        return len(keys)

    def display_name(self, merchant_id: str | None) -> str | None:
        """The name payers are shown for the merchant, if an operator gave it one."""
        return None if merchant_id is None else self._names.get(merchant_id)

    async def read_revocations(self) -> int:
        """Read the revocations published in Redis; returns how many there are."""
        self._revoked = await self._revocations.revoked_merchant_keys()
        self._revocations_at = self._clock()
        return len(self._revoked)

    async def keep_fresh(self) -> None:
        """Reload from PostgreSQL and read Redis's revocations, each on its own period, forever
        (a background task). A failed read keeps the last state until it is too stale."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._every, REFRESH_SECONDS, self.refresh, "postgresql")
            nursery.start_soon(self._every, REVOCATION_POLL_SECONDS, self.read_revocations, "redis")

    @staticmethod
    async def _every(seconds: float, read: Callable[[], Awaitable[int]], source: str) -> None:
        while True:
            await trio.sleep(seconds)
            try:
                await read()
            except DependencyUnavailable:
                log.warning("merchant keys not refreshed", extra={"fields": {"source": source}})

    def _fresh(self, at: float | None) -> bool:
        return at is not None and self._clock() - at <= self.max_staleness

    def authenticate(self, header: str | None) -> str:
        """The merchant id of a live key in ``header`` (``X-API-Key``); raises the client's
        401 for a missing, malformed, unknown or revoked key, and 503 while neither source
        has answered for ``max_staleness``."""
        presented = parse_api_key(header)
        if self._loaded_at is None or not (
            self._fresh(self._loaded_at) or self._fresh(self._revocations_at)
        ):
            raise DependencyUnavailable("postgresql")
        credential = self._keys.get(presented.key_id)
        if (
            credential is None
            or presented.key_id in self._revoked
            or not key_matches(credential, presented)
        ):
            raise RemoteProtocolError(
                "the merchant key is not valid",
                code="MERCHANT_UNAUTHENTICATED",
                field="X-API-Key",
                error_status_hint=401,
            )
        return credential.merchant_id
