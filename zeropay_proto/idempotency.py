"""Idempotent retries: what an ``Idempotency-Key`` decides.

A client that did not get an answer (a timeout, a dropped connection) retries with the same
``Idempotency-Key`` and the same request; the operation runs once, and every retry gets the
first complete answer, byte for byte. Keys are scoped: a merchant's routes by the merchant,
a payer's routes by the user, so no one else's key can collide with or reveal an answer.

The store holds, per scoped key, either a **claim** (the first request is running: a token
naming it, the request's fingerprint, and a lease after which a crashed instance's claim
lapses) or the **answer** (the fingerprint, and the answer sealed under the master keyring,
for :data:`ANSWER_KEPT_MS`: a verify's answer holds a bearer token, and no token is ever
stored in the clear).
:func:`decide_idempotency` says what a request does with what the store holds:

- nothing: :class:`ClaimGranted` (run, then keep the answer or release the claim);
- the answer of the same request: :class:`AnswerReplayed`;
- a claim of the same request: :class:`StillRunning` (409, retry after the lease);
- either, for another request (method, path or body differ): :class:`KeyReused` (422).

:func:`keeps_answer` says which answers are kept: the operation's decisions (2xx and 4xx),
not what a retry should not see again (a 5xx outage, a 429 to wait out, a 408 or 413 of the
transport, or a refused nonce or timestamp, which a retry with fresh headers passes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ._errors import LocalProtocolError, RemoteProtocolError
from .crypto import MasterKeyring, open_sealed, seal

#: A kept answer lives this long (Stripe keeps them 24 hours too).
ANSWER_KEPT_MS = 24 * 60 * 60 * 1000
#: A claim lapses after this long: a request that has not answered by then died with its
#: instance, and a retry may run the operation.
CLAIM_LEASE_MS = 60 * 1000
#: A duplicate of a running request is told to ask again after this long: most requests
#: answer well within it, and a dead instance's claim lapses after CLAIM_LEASE_MS anyway.
STILL_RUNNING_RETRY_MS = 1000
MAX_KEY_LENGTH = 255
_DOMAIN = b"zeropay/idempotency/v1"
#: Refusals of the request's envelope (its replay headers), not of the operation: a retry
#: with fresh headers passes them, so they are never kept.
ENVELOPE_CODES = frozenset(
    {"INVALID_NONCE", "INVALID_TIMESTAMP", "TIMESTAMP_OUT_OF_WINDOW", "NONCE_REUSED"}
)
_TRANSIENT_STATUSES = frozenset({408, 413, 429})


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def parse_idempotency_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1-255 visible ASCII characters, or absent."""
    if header is None:
        return None
    if not (0 < len(header) <= MAX_KEY_LENGTH and all("!" <= c <= "~" for c in header)):
        raise RemoteProtocolError(
            f"must be 1-{MAX_KEY_LENGTH} visible ASCII characters",
            code="INVALID_IDEMPOTENCY_KEY",
            field="Idempotency-Key",
        )
    return header


def scoped_key(scope: str, key: str) -> str:
    """The store's name for ``key`` within ``scope`` (hex SHA-256: bounded, opaque)."""
    return hashlib.sha256(_lp(_DOMAIN, scope.encode(), key.encode())).hexdigest()


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests the same request: method, path and body bytes."""
    return hashlib.sha256(_lp(_DOMAIN, method.encode(), path.encode(), body)).digest()


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The first request with a key is running (``token`` names it)."""

    token: bytes
    fingerprint: bytes


@dataclass(frozen=True, kw_only=True)
class Answer:
    """An answer as it went out: status, the headers to replay, the body's bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, kw_only=True)
class KeptAnswer:
    """The first complete answer with a key, as stored: sealed under the master keyring
    (:func:`seal_answer`), since it may hold a bearer token, which is never stored in the
    clear; the request's fingerprint beside it."""

    fingerprint: bytes
    sealed: bytes


@dataclass(frozen=True)
class ClaimGranted:
    """Nothing was held: this request runs under ``claim``."""

    claim: Claim


@dataclass(frozen=True)
class AnswerReplayed:
    answer: KeptAnswer


@dataclass(frozen=True)
class StillRunning:
    """The same request is running; its answer can be asked for after ``retry_after_ms``."""

    retry_after_ms: int


@dataclass(frozen=True)
class KeyReused:
    """The key names another request."""


IdempotencyDecision = ClaimGranted | AnswerReplayed | StillRunning | KeyReused


def decide_idempotency(
    held: Claim | KeptAnswer | None, *, fingerprint: bytes, token: bytes
) -> IdempotencyDecision:
    """What a request with ``fingerprint`` does, given what the store ``held`` under its key
    when it tried to claim it (``None``: the claim with ``token`` was stored)."""
    if held is None:
        return ClaimGranted(Claim(token=token, fingerprint=fingerprint))
    if held.fingerprint != fingerprint:
        return KeyReused()
    if isinstance(held, KeptAnswer):
        return AnswerReplayed(held)
    return StillRunning(retry_after_ms=STILL_RUNNING_RETRY_MS)


def keeps_answer(status: int, code: str | None) -> bool:
    """Whether an answer is kept for its key: the operation's decisions only."""
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return False
    return code not in ENVELOPE_CODES


_CLAIM, _ANSWER = b"C", b"A"
TOKEN_BYTES, _FINGERPRINT_BYTES = 16, 32


def encode_held(held: Claim | KeptAnswer) -> bytes:
    """The stored form: ``C`` token fingerprint, or ``A`` fingerprint sealed-answer."""
    if len(held.fingerprint) != _FINGERPRINT_BYTES:
        raise LocalProtocolError("a fingerprint is 32 bytes")
    if isinstance(held, Claim):
        if len(held.token) != TOKEN_BYTES:
            raise LocalProtocolError("a claim's token is 16 bytes")
        return _CLAIM + held.token + held.fingerprint
    return _ANSWER + held.fingerprint + held.sealed


def decode_held(data: bytes) -> Claim | KeptAnswer:
    """Inverse of :func:`encode_held` (a stored value this version cannot read raises
    ``ValueError``: the adapter answers 503, never a wrong replay)."""
    tag, rest = data[:1], data[1:]
    if tag == _CLAIM and len(rest) == TOKEN_BYTES + _FINGERPRINT_BYTES:
        return Claim(token=rest[:TOKEN_BYTES], fingerprint=rest[TOKEN_BYTES:])
    if tag != _ANSWER or len(rest) <= _FINGERPRINT_BYTES:
        raise ValueError("not an idempotency record")
    return KeptAnswer(fingerprint=rest[:_FINGERPRINT_BYTES], sealed=rest[_FINGERPRINT_BYTES:])


_SEAL_PURPOSE = "idempotent-answer"


def seal_answer(
    answer: Answer, *, fingerprint: bytes, keyring: MasterKeyring, scoped: str, nonce: bytes
) -> KeptAnswer:
    """``answer`` sealed for the scoped key ``scoped`` (an envelope opens under its own key
    only): status (2 bytes), the headers as JSON after their length (4 bytes), the body."""
    headers = json.dumps([list(pair) for pair in answer.headers], separators=(",", ":")).encode()
    plaintext = (
        answer.status.to_bytes(2, "big") + len(headers).to_bytes(4, "big") + headers + answer.body
    )
    sealed = seal(keyring, purpose=_SEAL_PURPOSE, user_id=scoped, plaintext=plaintext, nonce=nonce)
    return KeptAnswer(fingerprint=fingerprint, sealed=sealed)


def open_answer(kept: KeptAnswer, *, keyring: MasterKeyring, scoped: str) -> Answer:
    """The answer :func:`seal_answer` sealed, or :class:`IntegrityError`."""
    plain = open_sealed(keyring, purpose=_SEAL_PURPOSE, user_id=scoped, envelope=kept.sealed)
    length = int.from_bytes(plain[2:6], "big")
    pairs = json.loads(plain[6 : 6 + length])
    return Answer(
        status=int.from_bytes(plain[:2], "big"),
        headers=tuple((str(name), str(value)) for name, value in pairs),
        body=plain[6 + length :],
    )
