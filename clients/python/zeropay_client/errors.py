"""The service's errors as exceptions: each carries the RFC 9457 problem details it answered."""

from __future__ import annotations

from typing import Any


class ZeroPayError(Exception):
    """An error answer (or no answer). ``problem`` is the whole problem-details object."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code", "UNKNOWN"))
        self.type: str | None = problem.get("type")
        self.title: str | None = problem.get("title")
        self.detail: str | None = problem.get("detail")
        self.field: str | None = problem.get("field")
        self.attempts_remaining: int | None = problem.get("attempts_remaining")
        self.retry_after: int | None = problem.get("retry_after")
        super().__init__(f"{status} {self.code}: {self.detail or self.title or ''}".strip())


class InvalidRequest(ZeroPayError):
    """400, 413, 422: fix the request (``field`` names what is wrong)."""


class AuthenticationError(ZeroPayError):
    """401: no valid merchant key or bearer token."""


class VerificationFailed(AuthenticationError):
    """401 ``VERIFICATION_FAILED``: the answers did not verify (``attempts_remaining``)."""


class Forbidden(ZeroPayError):
    """403: a merchant mismatch, a step-up needed, a nonce reused."""


class NotFound(ZeroPayError):
    """404."""


class Conflict(ZeroPayError):
    """409: the state does not allow it (or the same idempotency key is still running)."""


class RateLimited(ZeroPayError):
    """429: wait ``retry_after`` seconds."""


class ServiceUnavailable(ZeroPayError):
    """5xx: ours; retry after ``retry_after`` seconds. Nothing was counted against the payer."""


class ConnectionFailed(ZeroPayError):
    """No answer at all (connection refused, reset, timed out)."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, {"code": "CONNECTION_FAILED", "detail": reason})


def error_for(status: int, problem: dict[str, Any]) -> ZeroPayError:
    """The exception of an error answer."""
    if problem.get("code") == "VERIFICATION_FAILED":
        return VerificationFailed(status, problem)
    kinds: dict[int, type[ZeroPayError]] = {
        400: InvalidRequest,
        401: AuthenticationError,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        413: InvalidRequest,
        422: InvalidRequest,
        429: RateLimited,
    }
    kind = kinds.get(status) or (ServiceUnavailable if status >= 500 else ZeroPayError)
    return kind(status, problem)
