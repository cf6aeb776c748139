"""The service's errors as RFC 9457 problem details, and the catalogue of their types.

Every error answer is ``application/problem+json``::

    {"type": "/problems/verification-failed", "title": "Verification failed",
     "status": 401, "detail": "verification failed", "code": "VERIFICATION_FAILED",
     "attempts_remaining": 2}

``type`` is stable per ``code`` and resolves, on the service itself, to that type's entry of
:data:`PROBLEMS` (``GET /problems/{slug}``); ``title`` is the type's, ``detail`` this
occurrence's. The extension members are ``code`` (the machine code, always), ``field`` (the
input at fault, when one is), ``attempts_remaining`` (a failed verification) and
``retry_after`` (seconds, beside the ``Retry-After`` header, on 429 and 503). Errors carry no
``success`` member: a client tells them by the status and the media type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_PATH = "/problems/"


@dataclass(frozen=True, kw_only=True)
class ProblemType:
    """One kind of error: its machine code, usual status, title, and when it happens."""

    code: str
    status: int
    title: str
    description: str

    @property
    def slug(self) -> str:
        return self.code.lower().replace("_", "-")

    @property
    def uri(self) -> str:
        return PROBLEM_PATH + self.slug

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.uri,
            "code": self.code,
            "status": self.status,
            "title": self.title,
            "description": self.description,
        }


def _types(*entries: tuple[str, int, str, str]) -> Mapping[str, ProblemType]:
    return MappingProxyType(
        {
            code: ProblemType(code=code, status=status, title=title, description=description)
            for code, status, title, description in entries
        }
    )


#: Every error the service answers, by code. A test fails if an answer names a code that is
#: not here.
PROBLEMS: Mapping[str, ProblemType] = _types(
    # Bad input: fix the request; retrying it as it is fails the same way.
    (
        "INVALID_INPUT",
        400,
        "Invalid input",
        "A field has the wrong type or format; `field` names it.",
    ),
    (
        "INVALID_JSON",
        400,
        "Invalid JSON",
        "The body is not one JSON object (strict UTF-8, no duplicate keys, no NaN).",
    ),
    ("MISSING_FIELD", 400, "Missing field", "A required field is absent; `field` names it."),
    (
        "FIELD_REMOVED",
        400,
        "Field removed",
        "The field was removed from the contract; `detail` says what replaces it.",
    ),
    ("INVALID_UUID", 400, "Invalid UUID", "A user UUID is not a UUID."),
    (
        "INVALID_SESSION_ID",
        400,
        "Invalid session id",
        "A session id is not one this service issues.",
    ),
    (
        "INVALID_DIGEST",
        400,
        "Invalid digest",
        "A factor's digest is not 64 hexadecimal characters.",
    ),
    ("UNKNOWN_FACTOR", 400, "Unknown factor", "A factor name is not in the catalogue."),
    ("FACTOR_COUNT", 400, "Wrong number of factors", "Enrollment takes 3 to 15 distinct factors."),
    ("INVALID_ANSWER", 400, "Invalid answer", "An answer is not valid for its factor."),
    (
        "INVALID_CREDENTIAL_ID",
        400,
        "Invalid credential id",
        "A passkey's id is not canonical base64url.",
    ),
    ("PASSKEY_INVALID", 400, "Invalid passkey", "The browser's passkey registration was refused."),
    ("INVALID_NONCE", 400, "Invalid nonce", "`X-Nonce` is missing or not a lower-case UUIDv4."),
    (
        "INVALID_TIMESTAMP",
        400,
        "Invalid timestamp",
        "`X-Timestamp` is missing or not milliseconds since the epoch.",
    ),
    (
        "TIMESTAMP_OUT_OF_WINDOW",
        400,
        "Timestamp out of window",
        "`X-Timestamp` is more than 5 minutes old or 30 seconds ahead: check the clock.",
    ),
    (
        "INVALID_IDEMPOTENCY_KEY",
        400,
        "Invalid idempotency key",
        "`Idempotency-Key` is 1 to 255 visible ASCII characters.",
    ),
    ("BAD_REQUEST", 400, "Bad request", "The request could not be read."),
    # Authentication and authorisation.
    (
        "UNAUTHENTICATED",
        401,
        "Not authenticated",
        "No valid bearer token: verify again for a new one.",
    ),
    (
        "MERCHANT_UNAUTHENTICATED",
        401,
        "Merchant not authenticated",
        "No valid merchant API key in `X-API-Key`.",
    ),
    (
        "VERIFICATION_FAILED",
        401,
        "Verification failed",
        "The answers did not verify, or the session is closed; `attempts_remaining` says how "
        "many are left.",
    ),
    (
        "NONCE_REUSED",
        403,
        "Nonce reused",
        "This `X-Nonce` was already used: send every request with a fresh one.",
    ),
    (
        "MERCHANT_MISMATCH",
        403,
        "Merchant mismatch",
        "The body names another merchant than the API key's.",
    ),
    (
        "STEP_UP_REQUIRED",
        403,
        "Step-up required",
        "This change needs a token from a verification that proved a passkey.",
    ),
    # State.
    ("NOT_FOUND", 404, "Not found", "No such route or page."),
    (
        "SESSION_NOT_FOUND",
        404,
        "Session not found",
        "No such session, or it expired and was removed.",
    ),
    ("NOT_ENROLLED", 404, "Not enrolled", "This user is not enrolled."),
    ("PASSKEY_NOT_FOUND", 404, "Passkey not found", "The user has no passkey with this id."),
    (
        "PASSKEYS_DISABLED",
        404,
        "Passkeys disabled",
        "This deployment has no WebAuthn relying party.",
    ),
    (
        "PSP_SESSION_NOT_FOUND",
        404,
        "Payment-provider session not found",
        "No such checkout of this merchant.",
    ),
    ("METHOD_NOT_ALLOWED", 405, "Method not allowed", "The route does not answer this method."),
    ("REQUEST_TIMEOUT", 408, "Request timeout", "The body did not arrive in time."),
    (
        "GRANT_INVALID",
        400,
        "Enrollment link not valid",
        "The enrollment grant is forged, altered, expired, or for another user: ask the "
        "merchant for a new link.",
    ),
    (
        "GRANT_USED",
        409,
        "Enrollment link already used",
        "Each enrollment grant enrolls once: ask the merchant for a new link.",
    ),
    (
        "ALREADY_ENROLLED",
        409,
        "Already enrolled",
        "This user is enrolled: update needs their token.",
    ),
    (
        "NO_PASSKEY_CHALLENGE",
        409,
        "No passkey challenge",
        "No registration options are pending for this user: ask for new ones.",
    ),
    (
        "PASSKEY_NOT_ADDED",
        409,
        "Passkey not added",
        "The passkey is registered already, or the user has the most allowed.",
    ),
    ("TOO_MANY_PASSKEYS", 409, "Too many passkeys", "The user has the most passkeys allowed."),
    (
        "IDEMPOTENCY_IN_PROGRESS",
        409,
        "Idempotent request in progress",
        "A request with this `Idempotency-Key` is still running: retry after `retry_after` "
        "seconds for its answer.",
    ),
    ("PAYLOAD_TOO_LARGE", 413, "Payload too large", "Bodies are at most 10 kB."),
    (
        "IDEMPOTENCY_KEY_REUSED",
        422,
        "Idempotency key reused",
        "This `Idempotency-Key` was used with another request: use a new key for a new request.",
    ),
    # Slow down.
    ("RATE_LIMITED", 429, "Rate limited", "Too many requests: retry after `retry_after` seconds."),
    (
        "ACCOUNT_LOCKED",
        429,
        "Account locked",
        "Too many failed verifications for this user: retry after `retry_after` seconds.",
    ),
    (
        "MERCHANT_THROTTLED",
        429,
        "Merchant throttled",
        "The merchant's budget of failed verifications is spent: retry after `retry_after` "
        "seconds.",
    ),
    # Ours: retry after `retry_after` seconds; nothing was counted against the payer.
    ("INTERNAL", 500, "Internal error", "A bug: it is logged. Retrying may work."),
    (
        "PSP_UNAVAILABLE",
        502,
        "Payment provider unavailable",
        "The payment provider did not answer in time.",
    ),
    (
        "DEPENDENCY_UNAVAILABLE",
        503,
        "Service unavailable",
        "A dependency is down: retry after `retry_after` seconds.",
    ),
    (
        "INTEGRITY",
        503,
        "Stored data not authenticated",
        "Stored data failed its integrity check: the operators are alerted.",
    ),
)


def problem_type(code: str) -> ProblemType:
    """The type of ``code``; an unknown code is a bug, answered as ``INTERNAL``'s type."""
    return PROBLEMS.get(code) or PROBLEMS["INTERNAL"]


def problem(
    status: int, code: str, detail: str, *, field: str | None = None, **extensions: Any
) -> dict[str, Any]:
    """The problem details of one error."""
    kind = problem_type(code)
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    body.update(extensions)
    return body
