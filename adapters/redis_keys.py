"""Redis key scheme and compact value codecs.

Slot groups. A user's keys carry the hash tag ``{<prefix>:g<k>}`` with
``k = crc32(uuid bytes) mod groups``, so all of one user's work is one hash slot, and that
group's audit stream ``{<prefix>:g<k>}:audit`` lives in the same slot: a Lua script appends the
audit event in the same atomic step as the change it records. With the default 64 groups the
slots spread evenly over any realistic number of masters (64 over 6 is within 10 %), and the
flusher reads 64 streams. The global and per-IP limiters share ``{<prefix>:rl}`` so that they
decide in one atomic script.

Every key on a request path has a TTL (sessions, windows, lockouts, limiters, nonces, tokens,
the record cache); only the audit streams and the 64 epoch keys (one short value per slot
group, which reveals a node that lost its data) have none, and stream entries are deleted
once written to PostgreSQL.

A session is stored as one binary string (user and id are in the key), which keeps a session
well under 300 bytes of Redis memory. Byte offsets (0-based; the Lua scripts use 1-based):

====== ============================================
0      format (1)
1      state (0 pending, 1 verified, 2 failed, 3 expired)
2      attempts used
3      max attempts
4      decoy (0/1)
5-12   expires_at_ms, unsigned big-endian
13     n, number of challenged factors
14..   n factor indexes, then three length-prefixed
       ASCII strings: amount, currency, merchant id
       (formats 2 and 4) k, the number of passkeys the
       session allows, then k ids, each after its
       length (2 bytes, big-endian)
       (formats 3 and 4) the return and cancel URLs,
       each after its length (2 bytes, big-endian)
====== ============================================

Formats 3 and 4 carry the amount in minor units of the currency and the return URLs; 4 is
a session that challenges a passkey, 3 one that does not. Formats 1 and 2, written before
amounts were minor units, carry it as a decimal text of major units, read here in minor
units during a rolling upgrade. An instance that does not know a format refuses the session
(an error) rather than verify it without its passkey, or misread its amount. The scripts
read and rewrite only the head.
"""

from __future__ import annotations

import functools
import struct
import uuid
import zlib
from decimal import Decimal

from zeropay_proto import (
    CATALOGUE,
    ChallengeWindow,
    Lockout,
    PaymentBinding,
    Session,
    SessionState,
    WrappedKey,
)
from zeropay_proto.admission import AdmissionRequest, shard_of
from zeropay_proto.money import CURRENCY_EXPONENTS
from zeropay_proto.passkeys import Passkey
from zeropay_proto.returns import ReturnUrls

from .ports import NOT_ENROLLED, CachedEnrollment

DEFAULT_PREFIX = "zp"
DEFAULT_SLOT_GROUPS = 64

STATE_CODES = {
    SessionState.PENDING: 0,
    SessionState.VERIFIED: 1,
    SessionState.FAILED: 2,
    SessionState.EXPIRED: 3,
}
STATES = {code: state for state, code in STATE_CODES.items()}
#: The session head: its fields in order, and their layout.
SESSION_HEAD = ("format", "state", "used", "max", "decoy", "expires_at_ms", "factor_count")
_HEAD = struct.Struct(">BBBBBQB")
_LEGACY, _LEGACY_WITH_PASSKEYS, _FORMAT, _FORMAT_WITH_PASSKEYS = 1, 2, 3, 4
_SESSION_FORMATS_WITH_PASSKEYS = frozenset({_LEGACY_WITH_PASSKEYS, _FORMAT_WITH_PASSKEYS})


def session_head_offsets() -> dict[str, int]:
    """Each head field's 0-based byte offset, from the layout (the Lua scripts read them)."""
    offsets, position = {}, 0
    for name, code in zip(SESSION_HEAD, _HEAD.format[1:], strict=True):
        offsets[name] = position
        position += struct.calcsize(">" + code)
    return offsets


@functools.lru_cache(maxsize=16_384)
def _user_hash(user_id: str) -> int:
    """A user id's hash for its slot group: asked for each of a request's keys (several per
    request), and for the same active users again and again."""
    return zlib.crc32(uuid.UUID(user_id).bytes)


class KeySpace:
    """Key names for one deployment (``prefix``) and its number of slot groups."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, groups: int = DEFAULT_SLOT_GROUPS) -> None:
        if groups < 1:
            raise ValueError("at least one slot group")
        self.prefix = prefix
        self.groups = groups

    def group_of(self, user_id: str) -> int:
        """The slot group of a user."""
        return _user_hash(user_id) % self.groups

    def _tag(self, group: int) -> str:
        return f"{{{self.prefix}:g{group}}}"

    def user(self, user_id: str, kind: str) -> str:
        """``rec`` (record cache), ``win``, ``lock``, ``tb`` (bucket), ``tokidx``, ``pkc`` and
        ``pke`` (passkey registration challenges: after a token's step-up, after enrolling),
        ``grant:<id>`` (an enrollment grant spent)."""
        return f"{self._tag(self.group_of(user_id))}:{kind}:{user_id}"

    def session(self, session_id: str, user_id: str) -> str:
        return f"{self._tag(self.group_of(user_id))}:s:{session_id}"

    def token(self, user_id: str, digest: bytes) -> str:
        return f"{self._tag(self.group_of(user_id))}:t:{digest.hex()}"

    def nonce_group(self, nonce: str) -> int:
        """Nonces are single-use across all users, spread over the groups by their own hash."""
        return zlib.crc32(nonce.encode()) % self.groups

    def nonce(self, nonce: str, user_id: str | None = None) -> str:
        """A claimed nonce: in the slot of the user the request names (a replay is the same
        request, for the same user), so that a request's nonce and its session share a
        master; spread by its own hash where the request names no user."""
        if user_id is not None:
            return f"{self._tag(self.group_of(user_id))}:n:{nonce}"
        return f"{self._tag(self.nonce_group(nonce))}:n:{nonce}"

    def psp(self, psp_session_id: str) -> str:
        group = zlib.crc32(psp_session_id.encode()) % self.groups
        return f"{self._tag(group)}:psp:{psp_session_id}"

    def stream(self, group: int) -> str:
        return f"{self._tag(group)}:audit"

    def stream_of(self, user_id: str | None) -> str:
        return self.stream(self.group_of(user_id) if user_id else 0)

    def all_streams(self) -> list[str]:
        return [self.stream(g) for g in range(self.groups)]

    def epoch(self, group: int) -> str:
        """The slot group's epoch: set once; gone or changed when its data was lost."""
        return f"{self._tag(group)}:epoch"

    def _limits_tag(self, request: AdmissionRequest) -> str:
        """The one slot of a request's limiters: its merchant's, or its address's shard of
        the global limit (so no slot holds every request's limiters)."""
        if request.merchant_id is not None:
            return self._merchant_tag(request.merchant_id)
        return self._shard_tag(shard_of(request.client_ip, request.limits.shards))

    def idempotency(self, kind: str, owner: str, key: str) -> str:
        """An idempotency key (hashed within its scope): a merchant's in the merchant's slot,
        a user's in the user's."""
        if kind == "merchant":
            return f"{self._merchant_tag(owner)}:idem:{key}"
        return f"{self._tag(self.group_of(owner))}:idem:{key}"

    def _merchant_tag(self, merchant_id: str) -> str:
        return f"{{{self.prefix}:rl:m:{merchant_id}}}"

    def _shard_tag(self, shard: int) -> str:
        return f"{{{self.prefix}:rl:{shard}}}"

    def limiters(self, request: AdmissionRequest) -> list[str]:
        """The keys of a request's limiters, all in one slot: the address's window, the
        global shard, the merchant's bucket and failures, and the caller's bucket for the
        user (the merchant's, or the address's when the user's own token calls)."""
        tag, ip, user = self._limits_tag(request), request.client_ip, request.user_id or "-"
        caller = user if request.merchant_id is not None else f"{ip}:{user}"
        return [f"{tag}:ip:{ip}", f"{tag}:g", f"{tag}:m", f"{tag}:f", f"{tag}:u:{caller}"]

    def revoked_merchant_keys(self) -> str:
        """The key ids ``merchants revoke`` published (a set; few, kept for good)."""
        return f"{{{self.prefix}:merchants}}:revoked"

    def merchant_failures(self, merchant_id: str) -> str:
        """A merchant's failure budget (where :meth:`limiters` has it for its requests)."""
        return f"{self._merchant_tag(merchant_id)}:f"

    def auth_failures(self, client_ip: str, shards: int) -> str:
        """An address's wrong merchant keys, in its shard's slot."""
        return f"{self._shard_tag(shard_of(client_ip, shards))}:af:{client_ip}"

    def all_prefixed(self) -> str:
        """A MATCH pattern for every key of this deployment (tests' clean-up only)."""
        return f"{{{self.prefix}:*"


def _text(value: str | None) -> bytes:
    data = (value or "").encode("ascii")
    return bytes([len(data)]) + data


def encode_session(session: Session) -> bytes:
    """The stored form of a session (see the module docstring)."""
    head = _HEAD.pack(
        _FORMAT_WITH_PASSKEYS if session.passkey_ids else _FORMAT,
        STATE_CODES[session.state],
        session.attempts_used,
        session.max_attempts,
        int(session.decoy),
        session.expires_at_ms,
        len(session.challenged),
    )
    amount = session.binding.amount
    return (
        head
        + bytes(f.index for f in session.challenged)
        + _text(None if amount is None else str(amount))
        + _text(session.binding.currency)
        + _text(session.binding.merchant_id)
        + _passkey_ids(session.passkey_ids)
        + _long_text(session.return_to.return_url)
        + _long_text(session.return_to.cancel_url)
    )


def _long_text(value: str | None) -> bytes:
    data = (value or "").encode("ascii")
    return len(data).to_bytes(2, "big") + data


def _minor_units(text: str | None, currency: str | None, fmt: int) -> int | None:
    """The stored amount in minor units (formats 1 and 2 stored a decimal of major units)."""
    if text is None:
        return None
    if fmt in (_FORMAT, _FORMAT_WITH_PASSKEYS):
        return int(text)
    exact = Decimal(text).scaleb(CURRENCY_EXPONENTS.get(currency or "", 2))
    if exact != exact.to_integral_value():
        raise ValueError("a stored amount finer than its currency's minor unit")
    return int(exact)


def _passkey_ids(ids: tuple[bytes, ...]) -> bytes:
    if not ids:
        return b""
    return bytes([len(ids)]) + b"".join(len(i).to_bytes(2, "big") + i for i in ids)


def decode_session(session_id: str, user_id: str, data: bytes) -> Session:
    """Inverse of :func:`encode_session`."""
    fmt, state, used, maximum, decoy, expires, count = _HEAD.unpack_from(data)
    if fmt not in (_LEGACY, _LEGACY_WITH_PASSKEYS, _FORMAT, _FORMAT_WITH_PASSKEYS):
        raise ValueError("unknown session format")
    pos = _HEAD.size
    factors = tuple(CATALOGUE[i] for i in data[pos : pos + count])
    pos += count
    texts: list[str | None] = []
    for _ in range(3):
        length = data[pos]
        texts.append(data[pos + 1 : pos + 1 + length].decode("ascii") or None)
        pos += 1 + length
    amount, currency, merchant = texts
    passkey_ids: list[bytes] = []
    if fmt in _SESSION_FORMATS_WITH_PASSKEYS:
        pos += 1
        for _ in range(data[pos - 1]):
            length = int.from_bytes(data[pos : pos + 2], "big")
            passkey_ids.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
    return Session(
        session_id=session_id,
        user_id=user_id,
        challenged=factors,
        expires_at_ms=expires,
        binding=PaymentBinding(
            amount=_minor_units(amount, currency, fmt),
            currency=currency,
            merchant_id=merchant,
        ),
        state=STATES[state],
        attempts_used=used,
        max_attempts=maximum,
        decoy=bool(decoy),
        passkey_ids=tuple(passkey_ids),
        return_to=_return_urls(data, pos)
        if fmt in (_FORMAT, _FORMAT_WITH_PASSKEYS)
        else ReturnUrls(),
    )


def _return_urls(data: bytes, pos: int) -> ReturnUrls:
    urls: list[str | None] = []
    for _ in range(2):
        length = int.from_bytes(data[pos : pos + 2], "big")
        urls.append(data[pos + 2 : pos + 2 + length].decode("ascii") or None)
        pos += 2 + length
    return ReturnUrls(return_url=urls[0], cancel_url=urls[1])


def encode_window(window: ChallengeWindow) -> bytes:
    return b"%d:%d:%s" % (
        window.index,
        window.window_seconds,
        bytes(f.index for f in window.factors).hex().encode(),
    )


def decode_window(data: bytes) -> ChallengeWindow:
    index, seconds, factors = data.split(b":")
    return ChallengeWindow(
        factors=tuple(CATALOGUE[i] for i in bytes.fromhex(factors.decode())),
        index=int(index),
        window_seconds=int(seconds),
    )


#: Record cache entries: a tag byte, then the entry.
_NOT_ENROLLED, _RECORD_ONLY, _WITH_KEY, _WITH_PASSKEYS = b"\x00", b"\x01", b"\x02", b"\x03"
#: After ``_WITH_KEY``: iterations, key version, factor count, salt length, wrapped length.
_KEY_HEADER = struct.Struct(">IHHBH")
#: Each passkey of ``_WITH_PASSKEYS``: id length, key length, sign count, created (ms).
_PASSKEY_HEADER = struct.Struct(">HHQQ")


def encode_cached(entry: CachedEnrollment) -> bytes:
    """A record cache value: ``\\x00`` not enrolled; ``\\x02``, the wrapped key and the
    sealed record; ``\\x03``, the same with the user's passkeys between them (their count,
    then each passkey's header, id and public key). (``\\x01`` + record, the earliest format,
    is still read.) A user without passkeys keeps ``\\x02``, which every version reads."""
    if entry.sealed_record is None:
        return _NOT_ENROLLED
    key = entry.wrapped_key
    if key is None:
        return _RECORD_ONLY + entry.sealed_record
    header = _KEY_HEADER.pack(
        key.iterations, key.key_version, key.factor_count, len(key.salt), len(key.wrapped)
    )
    if not entry.passkeys:
        return _WITH_KEY + header + key.salt + key.wrapped + entry.sealed_record
    passkeys = bytes([len(entry.passkeys)]) + b"".join(
        _PASSKEY_HEADER.pack(len(p.credential_id), len(p.public_key), p.sign_count, p.created_at_ms)
        + p.credential_id
        + p.public_key
        for p in entry.passkeys
    )
    return _WITH_PASSKEYS + header + key.salt + key.wrapped + passkeys + entry.sealed_record


def decode_cached(user_id: str, data: bytes) -> CachedEnrollment | None:
    """The entry, or ``None`` for a value of a format this version does not know (a later
    one, during a rolling upgrade): treated as a cache miss, never as "not enrolled"."""
    tag, body = data[:1], data[1:]
    if tag == _NOT_ENROLLED:
        return NOT_ENROLLED
    if tag == _RECORD_ONLY:
        return CachedEnrollment(sealed_record=body, wrapped_key=None)
    if tag not in (_WITH_KEY, _WITH_PASSKEYS):
        return None
    iterations, version, factors, salt_length, wrapped_length = _KEY_HEADER.unpack_from(body)
    start = _KEY_HEADER.size
    salt = body[start : start + salt_length]
    wrapped = body[start + salt_length : start + salt_length + wrapped_length]
    pos = start + salt_length + wrapped_length
    passkeys: list[Passkey] = []
    if tag == _WITH_PASSKEYS:
        pos += 1
        for _ in range(body[pos - 1]):
            id_length, key_length, count, created = _PASSKEY_HEADER.unpack_from(body, pos)
            pos += _PASSKEY_HEADER.size
            passkeys.append(
                Passkey(
                    credential_id=body[pos : pos + id_length],
                    public_key=body[pos + id_length : pos + id_length + key_length],
                    sign_count=count,
                    created_at_ms=created,
                )
            )
            pos += id_length + key_length
    return CachedEnrollment(
        sealed_record=body[pos:],
        passkeys=tuple(passkeys),
        wrapped_key=WrappedKey(
            user_id=user_id,
            wrapped=wrapped,
            salt=salt,
            iterations=iterations,
            key_version=version,
            factor_count=factors,
        ),
    )


def decode_lockout(values: list[int]) -> Lockout:
    failures, level, locked_until, updated = values
    return Lockout(failures=failures, level=level, locked_until_ms=locked_until, updated_ms=updated)
