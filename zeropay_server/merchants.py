"""Which merchant is calling: API keys checked against an in-memory directory.

The live keys are few and change rarely, so every instance holds them in memory and
refreshes them from PostgreSQL every :data:`REFRESH_SECONDS` (a supervised background task):
checking a key costs no round trip, and a revoked key stops working within that interval.
If PostgreSQL cannot be read for longer than :data:`MAX_STALENESS_SECONDS`, the directory
refuses every key (503): it fails closed rather than trusting a list it cannot refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from adapters.errors import DependencyUnavailable
from adapters.ports import MerchantPort
from zeropay_proto import RemoteProtocolError
from zeropay_proto.merchants import MerchantCredential, key_matches, parse_api_key

log = logging.getLogger("zeropay.merchants")

#: How often the directory reloads the live keys (revocation takes effect within this).
REFRESH_SECONDS = 10.0
#: Beyond this without a successful reload, no key is trusted.
MAX_STALENESS_SECONDS = 300.0


class MerchantDirectory:
    """The live merchant keys of the durable store, by key id."""

    def __init__(
        self, store: MerchantPort, *, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self._store = store
        self._clock = clock
        self._keys: dict[str, MerchantCredential] = {}
        self._loaded_at: float | None = None

    async def refresh(self) -> int:
        """Reload the live keys; returns how many there are."""
        keys = await self._store.merchant_keys()
        self._keys = {credential.key_id: credential for credential in keys}
        self._loaded_at = self._clock()
        return len(keys)

    async def keep_fresh(self) -> None:
        """Reload every REFRESH_SECONDS, forever (a background task). A failed reload keeps
        the last list until it is too stale to trust."""
        while True:
            await trio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except DependencyUnavailable:
                log.warning("merchant keys not refreshed: postgresql unavailable")

    def authenticate(self, header: str | None) -> str:
        """The merchant id of a live key in ``header`` (``X-API-Key``); raises the client's
        401 for a missing, malformed, unknown or revoked key."""
        presented = parse_api_key(header)
        if self._loaded_at is None or self._clock() - self._loaded_at > MAX_STALENESS_SECONDS:
            raise DependencyUnavailable("postgresql")
        credential = self._keys.get(presented.key_id)
        if credential is None or not key_matches(credential, presented):
            raise RemoteProtocolError(
                "the merchant key is not valid",
                code="MERCHANT_UNAUTHENTICATED",
                field="X-API-Key",
                error_status_hint=401,
            )
        return credential.merchant_id
