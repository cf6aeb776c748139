"""Audit events: what happened, to whom, from where (anonymised), and when.

Events are facts the driver records for every enrollment, initiate, verification outcome,
lockout, revoke, delete and export (SPEC section 5). They travel through a Redis Stream as
flat string fields (:meth:`AuditEvent.to_fields`) and land in PostgreSQL's ``audit_log``
idempotently by ``event_id``. An event never carries a digest, verifier, token or key: its
``details`` accept only short scalar values, and the drivers put nothing secret there.

Client addresses are anonymised before they are recorded (:func:`anonymise_client`): IPv4 to
its /24 and IPv6 to its /48, the truncation GDPR guidance and analytics tools commonly use.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ._errors import LocalProtocolError

#: Limits that keep one event small (a stream entry and a table row).
MAX_DETAIL_ENTRIES = 16
MAX_DETAIL_TEXT = 128


class AuditAction(enum.Enum):
    """What an event records."""

    ENROLLED = "ENROLLED"
    ENROLLMENT_UPDATED = "ENROLLMENT_UPDATED"
    ENROLLMENT_DELETED = "ENROLLMENT_DELETED"
    ENROLLMENT_EXPORTED = "ENROLLMENT_EXPORTED"
    SESSION_INITIATED = "SESSION_INITIATED"
    VERIFICATION_SUCCEEDED = "VERIFICATION_SUCCEEDED"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    TOKEN_REVOKED = "TOKEN_REVOKED"  # noqa: S105 - an action name, not a secret
    PASSKEY_REGISTERED = "PASSKEY_REGISTERED"
    PASSKEY_DELETED = "PASSKEY_DELETED"
    #: A passkey's signature verified but its sign count did not rise (a cloned device?).
    PASSKEY_CLONE_SUSPECTED = "PASSKEY_CLONE_SUSPECTED"


DetailValue = str | int | bool | None


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One audit record. ``event_id`` is a UUID string, unique per event."""

    event_id: str
    action: AuditAction
    user_id: str | None
    client: str | None
    at_ms: int
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        uuid.UUID(self.event_id)  # ValueError for a malformed id: a driver bug
        if len(self.details) > MAX_DETAIL_ENTRIES:
            raise LocalProtocolError("too many audit details")
        for key, value in self.details.items():
            if len(key) > MAX_DETAIL_TEXT or (
                isinstance(value, str) and len(value) > MAX_DETAIL_TEXT
            ):
                raise LocalProtocolError("audit details are short")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_fields(self) -> dict[str, str]:
        """Flat string fields, as stored in a Redis Stream entry."""
        return {
            "id": self.event_id,
            "action": self.action.value,
            "user": self.user_id or "",
            "client": self.client or "",
            "at": str(self.at_ms),
            "details": json.dumps(dict(self.details), sort_keys=True, separators=(",", ":")),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> AuditEvent:
        """Inverse of :meth:`to_fields`; raises ``LocalProtocolError`` on a malformed entry."""
        try:
            details = json.loads(fields["details"])
            return cls(
                event_id=fields["id"],
                action=AuditAction(fields["action"]),
                user_id=fields["user"] or None,
                client=fields["client"] or None,
                at_ms=int(fields["at"]),
                details=dict(details),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise LocalProtocolError("malformed audit entry") from exc


#: The detail of an ``ACCOUNT_LOCKED`` event naming when the lock ends (epoch ms).
LOCK_END_DETAIL = "locked_until_ms"


def with_lock_end(event: AuditEvent, locked_until_ms: int) -> AuditEvent:
    """The ``ACCOUNT_LOCKED`` event as the reservation that locked the account appends it:
    with the lock's end, which only that reservation decides (so the stores add it there,
    and ``account.unlocked`` is scheduled from it)."""
    return replace(event, details={**event.details, LOCK_END_DETAIL: locked_until_ms})


def new_event_id(entropy: bytes) -> str:
    """A UUIDv4 string from 16 CSPRNG bytes (RFC 9562 section 5.4)."""
    if len(entropy) != 16:
        raise LocalProtocolError("an event id needs 16 bytes of entropy")
    return str(uuid.UUID(bytes=entropy, version=4))


@functools.lru_cache(maxsize=4096)  # a pure function of a few active client addresses
def anonymise_client(address: str | None) -> str | None:
    """Truncate an IP address to its /24 (IPv4) or /48 (IPv6); anything else is dropped."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
