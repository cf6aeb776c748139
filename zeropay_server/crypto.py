"""The crypto process pool and the receipt signer.

Every PBKDF2 derivation (about 10 ms at 100,000 iterations, docs/stack.md) runs in worker
processes (trio-parallel), never on the event loop: a saturated pool delays only the requests
that need a derivation. A capacity limiter sized to ``CRYPTO_WORKERS`` holds the queue on the
Trio side, so its length is observable (``crypto_queue_depth``). Ed25519 signing takes
microseconds and runs inline.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import trio
import trio_parallel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.errors import DependencyUnavailable
from zeropay_proto import KeyWrapRequested, Receipt, b64url, derive_and_unwrap, derive_and_wrap

from .config import RetiredReceiptKey, receipt_public_key

RunSync = Callable[..., Awaitable[Any]]
#: The receipt JWS's ``typ`` (RFC 8725 section 3.11: a JWS of one kind is not taken for
#: another).
RECEIPT_JWS_TYPE = "zeropay-receipt+json"
_JWS = jwt.PyJWS()

#: Crypto workers run at a lower priority than the event loop, Redis and PostgreSQL: on a
#: saturated machine the slow derivations yield the CPU to the requests that need none
#: (SPEC section 9: initiate P99 unaffected while the crypto pool is saturated).
CRYPTO_WORKER_NICENESS = 10


def init_crypto_worker() -> None:
    """trio-parallel's ``init`` for crypto workers (runs once in each worker process).

    A worker runs at a lower priority, and ignores SIGTERM and SIGINT: the parent owns
    shutdown. systemd's default ``KillMode=control-group`` (like ``kill -- -PGID`` or a
    Ctrl-C on a terminal) signals every process of the group; a worker that died of it would
    fail the derivations of the requests the parent is still finishing. The parent closes the
    workers' pipes when it stops, and they exit on that.
    """
    os.nice(CRYPTO_WORKER_NICENESS)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class CryptoPool:
    """Runs the slow key derivations in worker processes.

    A worker that dies mid-derivation (killed, out of memory) is an outage of the pool, not a
    bug: it raises :class:`DependencyUnavailable`, which answers 503, and the request gives
    back whatever it reserved. trio-parallel starts a new worker for the next derivation.
    """

    def __init__(self, run_sync: RunSync, workers: int) -> None:
        self._run_sync = run_sync
        self._limiter = trio.CapacityLimiter(workers)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._run_sync(function, *args, limiter=self._limiter)
        except trio_parallel.BrokenWorkerError as exc:
            raise DependencyUnavailable("crypto") from exc

    async def wrap(self, request: KeyWrapRequested) -> bytes:
        """PBKDF2 + AES-GCM wrap of a new data key (enrollment)."""
        wrapped: bytes = await self._run(derive_and_wrap, *request.arguments())
        return wrapped

    async def unwrap(
        self, material: bytes, salt: bytes, iterations: int, wrapped: bytes, user_id: str
    ) -> bool:
        """PBKDF2 + AES-GCM unwrap (verification's "double decryption")."""
        ok: bool = await self._run(derive_and_unwrap, material, salt, iterations, wrapped, user_id)
        return ok

    def queue_depth(self) -> int:
        """Derivations waiting for a worker."""
        return int(self._limiter.statistics().tasks_waiting)

    def busy(self) -> int:
        """Derivations running now."""
        return int(self._limiter.statistics().borrowed_tokens)


def _jwk(public_key: bytes, key_id: str) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_key),
        "kid": key_id,
        "use": "sig",
        "alg": "EdDSA",
    }


class ReceiptSigner:
    """Signs receipts with Ed25519 and publishes the public key as a JWK, beside the retired
    keys whose receipts may still be checked (a rotation's overlap)."""

    def __init__(
        self, seed: bytes, key_id: str, retired: tuple[RetiredReceiptKey, ...] = ()
    ) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.key_id = key_id
        self.jwk = _jwk(receipt_public_key(seed), key_id)
        self._retired = retired

    def published(self, now_ms: int) -> list[dict[str, str]]:
        """The key set ``/v1/keys`` serves at ``now_ms``: the signing key, then each retired
        key until its time is up."""
        still = [_jwk(k.public_key, k.key_id) for k in self._retired if now_ms < k.until_ms]
        return [self.jwk, *still]

    def jws(self, receipt: Receipt) -> str:
        """The receipt as a compact JWS (RFC 7515): EdDSA over its fields as compact,
        key-sorted JSON, the signing key's ``kid`` in the header, so any JOSE library checks
        it against ``/v1/keys``."""
        header = {"kid": self.key_id, "typ": RECEIPT_JWS_TYPE}
        return _JWS.encode(receipt.canonical_json(), self._key, algorithm="EdDSA", headers=header)

    def sign(self, receipt: Receipt) -> dict[str, Any]:
        """The receipt as returned to the client: its fields, the key id and the signature
        over :meth:`Receipt.canonical_bytes` (base64url)."""
        signature = self._key.sign(receipt.canonical_bytes())
        return {
            **receipt.as_dict(),
            "key_id": self.key_id,
            "alg": "EdDSA",
            "signature": b64url(signature),
        }
