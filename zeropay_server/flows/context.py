"""What a flow gets and gives: its request's context, its reply, its error answers."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from adapters.ports import NOT_ENROLLED, CachedEnrollment, StoredEnrollment

#: The request headers flows read (names in lower case); the HTTP layer passes only these.
FLOW_HEADERS = ("x-nonce", "x-timestamp", "x-api-key", "authorization", "idempotency-key")


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """What a flow knows of its request: built once per request by the HTTP layer."""

    #: The client's address (the peer, or what a trusted proxy forwarded).
    client: str
    #: The request's one clock reading (epoch seconds): every decision of it uses this.
    now: float
    #: The headers in :data:`FLOW_HEADERS` that the request carried, by lower-case name.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Reply:
    """A flow's answer: status, JSON body, extra response headers and the body's media type
    (``application/problem+json`` for an error)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: The body's bytes when they must go out exactly so (a replayed answer); else the
    #: body is serialized from ``body``.
    raw: bytes | None = None

    def encoded(self) -> bytes:
        """The body as it goes out (and as an idempotent answer keeps it)."""
        return self.raw if self.raw is not None else json.dumps(self.body).encode()


class ApiError(Exception):
    """A response other than success, raised from anywhere in a flow."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def retry_after(wait_ms: int) -> dict[str, str]:
    """The ``Retry-After`` header for a wait: whole seconds, at least one."""
    return {"Retry-After": str(max(1, math.ceil(wait_ms / 1000)))}


@contextlib.asynccontextmanager
async def open_task_group() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single failure is raised as itself, not wrapped in an exception group:
    the HTTP layer answers by the exception's type (DependencyUnavailable is a 503)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def cached_form(stored: StoredEnrollment | None) -> CachedEnrollment:
    """What the record cache holds of a PostgreSQL row (or of its absence)."""
    if stored is None:
        return NOT_ENROLLED
    return CachedEnrollment(
        sealed_record=stored.sealed_record,
        wrapped_key=stored.wrapped_key,
        passkeys=stored.passkeys,
    )
