"""PostgreSQL's stand-in in process memory: enrollments, merchant keys and the audit log.

The embedded default is one process's memory, not an archive: the audit log keeps the newest
:data:`DEFAULT_AUDIT_EVENTS_KEPT` events and drops older ones."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from zeropay_proto.audit import AuditEvent
from zeropay_proto.merchants import MerchantCredential
from zeropay_proto.passkeys import Passkey, rises
from zeropay_proto.webhooks import WebhookEndpoint

from .ports import (
    Delivery,
    OutboxRow,
    OutboxState,
    StoredEndpoint,
    StoredEnrollment,
)

#: A day of a small shop's traffic.
DEFAULT_AUDIT_EVENTS_KEPT = 10_000


class MemoryDurable:
    """EnrollmentPort, MerchantPort and AuditLogPort in memory."""

    def __init__(self, audit_events_kept: int = DEFAULT_AUDIT_EVENTS_KEPT) -> None:
        self._audit_log: dict[str, AuditEvent] = {}  # insertion-ordered: oldest first
        self._audit_events_kept = audit_events_kept
        self._enrollments: dict[str, StoredEnrollment] = {}
        self._merchant_keys: dict[str, MerchantCredential] = {}
        self._merchant_names: dict[str, str] = {}
        self._endpoints: dict[str, StoredEndpoint] = {}
        self._passkeys: dict[str, list[Passkey]] = {}  # by user, oldest first

    async def write_events(self, events: Sequence[AuditEvent]) -> int:
        new = 0
        for event in events:
            if event.event_id not in self._audit_log:
                self._audit_log[event.event_id] = event
                new += 1
        while len(self._audit_log) > self._audit_events_kept:
            del self._audit_log[next(iter(self._audit_log))]
        return new

    async def user_trail(self, user_id: str, limit: int) -> list[AuditEvent]:
        trail = [e for e in self._audit_log.values() if e.user_id == user_id]
        return sorted(trail, key=lambda e: e.at_ms)[:limit]

    async def insert_enrollment(self, enrollment: StoredEnrollment) -> bool:
        user_id = enrollment.wrapped_key.user_id
        if user_id in self._enrollments:
            return False
        self._enrollments[user_id] = enrollment
        return True

    async def replace_enrollment(self, enrollment: StoredEnrollment) -> bool:
        user_id = enrollment.wrapped_key.user_id
        current = self._enrollments.get(user_id)
        if current is None:
            return False
        self._enrollments[user_id] = replace(enrollment, created_at_ms=current.created_at_ms)
        return True

    async def load_enrollment(self, user_id: str) -> StoredEnrollment | None:
        stored = self._enrollments.get(user_id)
        if stored is None:
            return None
        return replace(stored, passkeys=tuple(await self.passkeys(user_id)))

    async def delete_enrollment(self, user_id: str) -> bool:
        self._passkeys.pop(user_id, None)
        return self._enrollments.pop(user_id, None) is not None

    async def export_enrollment(self, user_id: str) -> StoredEnrollment | None:
        return self._enrollments.get(user_id)

    async def add_merchant_key(self, credential: MerchantCredential) -> None:
        self._merchant_keys[credential.key_id] = credential

    async def merchant_keys(self, *, include_revoked: bool = False) -> list[MerchantCredential]:
        keys = sorted(self._merchant_keys.values(), key=lambda c: c.created_at_ms)
        return [c for c in keys if include_revoked or c.revoked_at_ms is None]

    async def revoke_merchant_key(self, key_id: str, now_ms: int) -> bool:
        credential = self._merchant_keys.get(key_id)
        if credential is None or credential.revoked_at_ms is not None:
            return False
        self._merchant_keys[key_id] = replace(credential, revoked_at_ms=now_ms)
        return True

    async def name_merchant(self, merchant_id: str, display_name: str) -> None:
        self._merchant_names[merchant_id] = display_name

    async def merchant_names(self) -> dict[str, str]:
        return dict(self._merchant_names)

    # -------------------------------------------------------------- PasskeyPort

    async def add_passkey(self, user_id: str, passkey: Passkey, limit: int) -> bool:
        known = any(
            p.credential_id == passkey.credential_id for ps in self._passkeys.values() for p in ps
        )
        if user_id not in self._enrollments or known:
            return False
        owned = self._passkeys.setdefault(user_id, [])
        if len(owned) >= limit:
            return False
        owned.append(passkey)
        return True

    async def passkeys(self, user_id: str) -> list[Passkey]:
        return list(self._passkeys.get(user_id, ()))

    async def delete_passkey(self, user_id: str, credential_id: bytes) -> bool:
        owned = self._passkeys.get(user_id, [])
        kept = [p for p in owned if p.credential_id != credential_id]
        self._passkeys[user_id] = kept
        return len(kept) < len(owned)

    async def record_sign_count(self, user_id: str, credential_id: bytes, count: int) -> bool:
        owned = self._passkeys.get(user_id, [])
        for i, passkey in enumerate(owned):
            if passkey.credential_id == credential_id and rises(passkey.sign_count, count):
                owned[i] = replace(passkey, sign_count=count)
                return True
        return False

    async def add_webhook_endpoint(self, endpoint: WebhookEndpoint, sealed_secret: bytes) -> None:
        self._endpoints[endpoint.endpoint_id] = StoredEndpoint(
            endpoint=endpoint, sealed_secrets=(sealed_secret,)
        )

    async def webhook_endpoints(self, merchant_id: str | None = None) -> list[StoredEndpoint]:
        return [
            stored
            for stored in self._endpoints.values()
            if merchant_id is None or stored.endpoint.merchant_id == merchant_id
        ]

    async def disable_webhook_endpoint(self, endpoint_id: str) -> bool:
        stored = self._endpoints.get(endpoint_id)
        if stored is None or not stored.endpoint.enabled:
            return False
        disabled = replace(stored.endpoint, enabled=False)
        self._endpoints[endpoint_id] = replace(stored, endpoint=disabled)
        return True

    async def rotate_webhook_secret(
        self, endpoint_id: str, sealed_secret: bytes, previous_until_ms: int
    ) -> bool:
        stored = self._endpoints.get(endpoint_id)
        if stored is None:
            return False
        endpoint = replace(stored.endpoint, previous_secret_until_ms=previous_until_ms)
        secrets = (sealed_secret, stored.sealed_secrets[0])
        self._endpoints[endpoint_id] = StoredEndpoint(endpoint=endpoint, sealed_secrets=secrets)
        return True

    # Webhook endpoints are added with PostgreSQL's command-line tool: the embedded default
    # has none, so its outbox stays empty.

    async def claim_deliveries(
        self, limit: int, lease_ms: int, *, per_endpoint: int, room: Mapping[str, int]
    ) -> list[Delivery]:
        return []

    async def settle_delivery(
        self,
        delivery: Delivery,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
    ) -> None:
        return None

    async def outbox_state(self) -> OutboxState:
        return OutboxState()

    async def webhook_deliveries(self, endpoint_id: str | None, limit: int) -> list[OutboxRow]:
        return []

    async def requeue_deliveries(
        self,
        *,
        event_id: str | None,
        since_ms: int | None,
        event_types: Collection[str] | None = None,
    ) -> int:
        return 0
