"""The route table, and the OpenAPI 3.1 document generated from it and the core's schemas.

:data:`ROUTES` is the one list of what the service answers: the app registers exactly these
(``zeropay_server.app.create_app``) and the document describes exactly these, so the two
cannot diverge (``tests/server/test_routes.py`` checks the app's URL map against it).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from adapters.ports import ScopeKind
from zeropay_proto import schemas

from .contract import ANSWERS, PROBLEM
from .problems import PROBLEM_MEDIA_TYPE

_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_STATE_CHANGING = [
    {
        "name": "X-Nonce",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
        "description": "A lower-case UUIDv4, used once (a replay is refused).",
    },
    {
        "name": "X-Timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        "description": "Milliseconds since the epoch; 5 minutes past to 30 seconds ahead.",
    },
]
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "description": "Makes a retry safe: the first complete answer to this key (with the same "
    "body) is kept for 24 hours and replayed byte for byte, with `Idempotent-Replayed: "
    "true`; the key with another body is a 422, and while the first request runs a 409.",
}
_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Idempotent-Replayed": {
        "description": "`true` on an answer replayed for an `Idempotency-Key`.",
        "schema": {"const": "true"},
    },
    "X-RateLimit-Limit": {"schema": {"type": "string"}, "description": "The caller's quota."},
    "X-RateLimit-Remaining": {"schema": {"type": "string"}, "description": "What is left."},
    "X-RateLimit-Reset": {"schema": {"type": "string"}, "description": "Seconds to its reset."},
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_DESCRIBED = {
    200: "OK",
    201: "Created",
    400: "Invalid input; `field` names it",
    401: "Not authenticated, or the verification failed",
    403: "Nonce reused, a merchant mismatch, or a step-up needed",
    404: "Not found",
    409: "A conflict with the current state, or the same idempotency key still running",
    413: "Body over 10 kB",
    422: "The idempotency key was used with another request",
    429: "Rate limited, account locked or merchant throttled; see `Retry-After`",
    502: "The payment provider failed",
    503: "A dependency is down; see `Retry-After`. Nothing was counted against the payer.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(handler: str, statuses: tuple[int, ...], success: int) -> dict[str, Any]:
    answer = {
        "description": _DESCRIBED[success],
        "content": {"application/json": {"schema": _ref(_schema_name(handler))}},
        "headers": {
            name: {"$ref": f"#/components/headers/{name}"}
            for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
        },
    }
    out: dict[str, Any] = {str(success): answer}
    for status in sorted({*statuses, 429, 503}):
        out[str(status)] = {"description": _DESCRIBED[status], "content": _PROBLEM_CONTENT}
        if status in (429, 503, 409):
            out[str(status)]["headers"] = {
                "Retry-After": {"$ref": "#/components/headers/Retry-After"}
            }
    return out


def _schema_name(handler: str) -> str:
    return "".join(part.capitalize() for part in handler.split("_")) + "Answer"


def _operation(
    handler: str,
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    *,
    body: dict[str, Any] | None = None,
    statuses: tuple[int, ...] = (400,),
    success: int = 200,
    state_changing: bool = False,
    bearer: bool = False,
    merchant: bool = False,
    path_params: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": _responses(handler, statuses, success),
    }
    parameters = list(_STATE_CHANGING) if state_changing else []
    parameters += [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in path_params
    ]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["413"] = {"description": _DESCRIBED[413], "content": _PROBLEM_CONTENT}
    if bearer:
        op["security"] = _BEARER
    if merchant:
        op["security"] = [{"merchantKey": []}]
        op["responses"]["401"] = {
            "description": "No valid merchant API key (X-API-Key)",
            "content": _PROBLEM_CONTENT,
        }
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


def _plain(
    handler: str,
    operation_id: str,
    summary: str,
    description: str,
    *,
    statuses: tuple[int, ...] = (),
    path_params: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    """An operator's route: no admission, no rate limit, never a 429."""
    content = {"application/json": {"schema": _ref(_schema_name(handler))}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    for status in statuses:
        kind = content if handler in ("ready", "health") else _PROBLEM_CONTENT
        responses[str(status)] = {"description": _DESCRIBED[status], "content": kind}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": ["operations"],
        "summary": summary,
        "description": description,
        "responses": responses,
    }
    if path_params:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in path_params
        ]
    return op


def _page(
    operation_id: str,
    summary: str,
    *params: tuple[str, dict[str, Any]],
    kinds: tuple[str, ...] = ("text/html",),
) -> dict[str, Any]:
    """A static page or asset (``zeropay_server/static``), not JSON."""
    return {
        "operationId": operation_id,
        "tags": ["pages"],
        "summary": summary,
        "description": "For the payer's browser, not for API clients.",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in params
        ],
        "responses": {
            "200": {"description": "the page", "content": {kind: {} for kind in kinds}},
            "404": {"description": "no such page", "content": _PROBLEM_CONTENT},
        },
    }


@dataclass(frozen=True, kw_only=True)
class Route:
    """One thing the service answers: ``method`` on the path template ``path`` (``{param}``,
    which is also its label in metrics and logs), served by the handler named ``handler``,
    described by ``operation``. ``api`` routes are not served by an ``audit``-role instance."""

    method: str
    path: str
    handler: str
    operation: dict[str, Any]
    api: bool = True
    #: Honours ``Idempotency-Key``, in the authenticated merchant's or the named user's scope.
    idempotent: ScopeKind | None = None


_UUID_PARAM = ("uuid", schemas.USER_UUID)
_SESSION_PARAM = ("session_id", {"type": "string", "pattern": schemas.SESSION_ID_PATTERN})
_CREDENTIAL_PARAM = (
    "credential_id",
    {"type": "string", "pattern": "^[A-Za-z0-9_-]{2,1364}$", "description": "base64url"},
)
TAGS = {
    "verification": "Payment time: open a session, answer it, read its status.",
    "enrollment": "A user's factors: enroll, replace, delete, export.",
    "passkeys": "A user's passkeys (WebAuthn), the possession factor.",
    "tokens": "The auth tokens a verification issues.",
    "payments": "Payment-provider checkouts.",
    "operations": "Keys, health, metrics, this document, error types.",
    "pages": "The payer's pages, for browsers.",
}

ROUTES: tuple[Route, ...] = (
    Route(
        method="POST",
        path="/v1/enrollment/store",
        handler="enroll",
        idempotent="user",
        operation=_operation(
            "enroll",
            "enroll",
            "enrollment",
            "Enroll a user's factors (digests only)",
            "Stores 3 to 15 factors as the client's SHA-256 digests of the answers (by the "
            "digest protocol, which the SDK implements); the service keeps only peppered "
            "verifiers and a wrapped key. With `register_passkey`, answers the creation "
            "options of a passkey, good without a token for 2 minutes.",
            body=schemas.ENROLLMENT,
            statuses=(400, 403, 404, 409),
            success=201,
            state_changing=True,
        ),
    ),
    Route(
        method="POST",
        path="/v1/enrollment/grants",
        handler="issue_grant",
        idempotent="merchant",
        operation=_operation(
            "issue_grant",
            "issue_enrollment_grant",
            "enrollment",
            "Make an enrollment link for a user",
            "Merchants only (X-API-Key). A short-lived (15 minutes), single-use grant to "
            "enroll this user: send the payer to `enroll_url`, where the page enrolls that "
            "user without asking for an id. A grant only creates an enrollment: replacing "
            "one still needs the user's token.",
            body=schemas.ENROLLMENT_GRANT,
            statuses=(400, 403),
            success=201,
            state_changing=True,
            merchant=True,
        ),
    ),
    Route(
        method="GET",
        path="/v1/enrollment/grants/{grant}",
        handler="read_grant",
        operation=_operation(
            "read_grant",
            "read_enrollment_grant",
            "enrollment",
            "Read an enrollment link's grant",
            "What the enroll page asks first: the user the grant enrolls and how long it "
            "stays good; `400 GRANT_INVALID` for a forged or expired one.",
            statuses=(400,),
            path_params=(("grant", {"type": "string", "pattern": "^zpg_[A-Za-z0-9_-]{1,196}$"}),),
        ),
    ),
    Route(
        method="PUT",
        path="/v1/enrollment/update",
        handler="update_enrollment",
        operation=_operation(
            "update_enrollment",
            "update_enrollment",
            "enrollment",
            "Replace a user's factors",
            "Needs a token of that user (one that proved a passkey, if the user has one). "
            "Every token of the user is revoked.",
            body=schemas.ENROLLMENT,
            statuses=(400, 401, 403, 404),
            state_changing=True,
            bearer=True,
        ),
    ),
    Route(
        method="DELETE",
        path="/v1/enrollment/delete/{uuid}",
        handler="delete_enrollment",
        operation=_operation(
            "delete_enrollment",
            "delete_enrollment",
            "enrollment",
            "Delete a user's enrollment",
            "Needs a token of that user; forgets the factors, passkeys, sessions and tokens.",
            statuses=(400, 401, 403, 404),
            state_changing=True,
            bearer=True,
            path_params=(_UUID_PARAM,),
        ),
    ),
    Route(
        method="GET",
        path="/v1/enrollment/export/{uuid}",
        handler="export_enrollment",
        operation=_operation(
            "export_enrollment",
            "export_enrollment",
            "enrollment",
            "Export what the service holds of a user",
            "GDPR access: the enrollment's metadata and audit trail, never digests or "
            "verifiers. Needs a token of that user.",
            statuses=(400, 401, 404),
            bearer=True,
            path_params=(_UUID_PARAM,),
        ),
    ),
    Route(
        method="POST",
        path="/v1/passkeys/options",
        handler="passkey_options",
        operation=_operation(
            "passkey_options",
            "passkey_options",
            "passkeys",
            "Start registering a passkey",
            "WebAuthn creation options for navigator.credentials.create; needs a strong token.",
            body=schemas.PASSKEY_OPTIONS,
            statuses=(400, 401, 403, 404, 409),
            state_changing=True,
            bearer=True,
        ),
    ),
    Route(
        method="POST",
        path="/v1/passkeys",
        handler="register_passkey",
        operation=_operation(
            "register_passkey",
            "register_passkey",
            "passkeys",
            "Register a passkey",
            "The browser's answer to the creation options (with a strong token, or within "
            "the enrollment's grant). Every token of the user is revoked.",
            body=schemas.PASSKEY_REGISTRATION,
            statuses=(400, 401, 403, 404, 409),
            success=201,
            state_changing=True,
            bearer=True,
        ),
    ),
    Route(
        method="GET",
        path="/v1/passkeys/{uuid}",
        handler="list_passkeys",
        operation=_operation(
            "list_passkeys",
            "list_passkeys",
            "passkeys",
            "A user's passkeys",
            "Their ids, sign counts and ages; needs a token of that user.",
            statuses=(400, 401),
            bearer=True,
            path_params=(_UUID_PARAM,),
        ),
    ),
    Route(
        method="DELETE",
        path="/v1/passkeys/{uuid}/{credential_id}",
        handler="delete_passkey",
        operation=_operation(
            "delete_passkey",
            "delete_passkey",
            "passkeys",
            "Delete one of a user's passkeys",
            "Needs a strong token. Every token of the user is revoked.",
            statuses=(400, 401, 403, 404),
            state_changing=True,
            bearer=True,
            path_params=(_UUID_PARAM, _CREDENTIAL_PARAM),
        ),
    ),
    Route(
        method="POST",
        path="/v1/verification/initiate",
        handler="initiate",
        idempotent="merchant",
        operation=_operation(
            "initiate",
            "initiate_verification",
            "verification",
            "Open a verification session for a payment",
            "Merchants only (X-API-Key). Challenges 2 or 3 of the user's factors (and their "
            "passkey when the payment needs it); an unknown user gets a decoy challenge "
            "indistinguishable from a real one. Send the payer to `/pay/{session_id}`; with "
            "`return_url`, the page sends them back with `session_id` and `status` in the "
            "query, which only say where to look: confirm the outcome with the session's "
            "status, the receipt or a webhook.",
            body=schemas.INITIATE,
            statuses=(400, 403),
            state_changing=True,
            merchant=True,
        ),
    ),
    Route(
        method="POST",
        path="/v1/verification/verify",
        handler="verify",
        idempotent="user",
        operation=_operation(
            "verify",
            "verify",
            "verification",
            "Answer the challenged factors",
            "With the passkey's assertion if the session challenges one. A token and a "
            "signed receipt on success; one generic 401 whatever failed.",
            body=schemas.VERIFY,
            statuses=(400, 401, 403, 404),
            state_changing=True,
        ),
    ),
    Route(
        method="GET",
        path="/v1/verification/status/{session_id}",
        handler="status",
        operation=_operation(
            "status",
            "get_session_status",
            "verification",
            "A session's state and payment",
            "Its state, attempts, payment and way back, and the passkey request of its next "
            "attempt. What a merchant checks before it ships.",
            statuses=(400, 404),
            path_params=(_SESSION_PARAM,),
        ),
    ),
    Route(
        method="GET",
        path="/v1/session/validate",
        handler="validate",
        operation=_operation(
            "validate",
            "validate_token",
            "tokens",
            "Validate an auth token",
            "Whether the bearer token is valid, whose, and for how long.",
            statuses=(401,),
            bearer=True,
        ),
    ),
    Route(
        method="POST",
        path="/v1/session/revoke",
        handler="revoke",
        operation=_operation(
            "revoke",
            "revoke_token",
            "tokens",
            "Revoke an auth token",
            "The bearer token stops being valid everywhere at once.",
            statuses=(400, 401, 403),
            state_changing=True,
            bearer=True,
        ),
    ),
    Route(
        method="POST",
        path="/v1/psp/session/create",
        handler="psp_create",
        idempotent="merchant",
        operation=_operation(
            "psp_create",
            "create_psp_session",
            "payments",
            "Create a payment-provider checkout",
            "Merchants only (X-API-Key).",
            body=schemas.PSP_CREATE,
            statuses=(400, 403, 502),
            success=201,
            state_changing=True,
            merchant=True,
        ),
    ),
    Route(
        method="GET",
        path="/v1/psp/session/{id}",
        handler="psp_get",
        operation=_operation(
            "psp_get",
            "get_psp_session",
            "payments",
            "A payment-provider checkout",
            "Its merchant's only (X-API-Key): another merchant's is not found.",
            statuses=(404,),
            merchant=True,
            path_params=(("id", {"type": "string", "maxLength": 64}),),
        ),
    ),
    Route(
        method="GET",
        path="/v1/keys",
        handler="keys",
        operation=_plain(
            "keys",
            "get_keys",
            "The receipts' public keys",
            "A JWK Set: check a receipt's JWS against the key its `kid` names.",
        ),
        api=False,
    ),
    Route(
        method="GET",
        path="/health/live",
        handler="live",
        operation=_plain("live", "live", "Liveness", "The process answers."),
        api=False,
    ),
    Route(
        method="GET",
        path="/health/ready",
        handler="ready",
        operation=_plain(
            "ready", "ready", "Readiness", "Redis and PostgreSQL accept writes.", statuses=(503,)
        ),
        api=False,
    ),
    Route(
        method="GET",
        path="/health",
        handler="health",
        operation=_plain(
            "health", "health", "Health details", "The checks, storage and queue.", statuses=(503,)
        ),
        api=False,
    ),
    Route(
        method="GET",
        path="/openapi.json",
        handler="openapi",
        operation=_plain("openapi", "get_openapi", "This document", "The service's contract."),
        api=False,
    ),
    Route(
        method="GET",
        path="/problems/{slug}",
        handler="problem_type",
        operation=_plain(
            "problem_type",
            "get_problem_type",
            "What an error's type means",
            "An error's `type` resolves here: its code, usual status, title and meaning.",
            statuses=(404,),
            path_params=(("slug", {"type": "string", "pattern": "^[a-z-]{1,64}$"}),),
        ),
        api=False,
    ),
    Route(
        method="GET",
        path="/metrics",
        handler="metrics",
        operation={
            "operationId": "get_metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics",
            "description": "The text exposition format.",
            "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
        },
        api=False,
    ),
    Route(
        method="GET",
        path="/pay/{session_id}",
        handler="page",
        operation=_page(
            "pay_page", "The payer's page: the payment, then the challenged factors", _SESSION_PARAM
        ),
    ),
    Route(
        method="GET",
        path="/enroll",
        handler="page",
        operation=_page("enroll_page", "The enrollment page"),
    ),
    Route(
        method="GET",
        path="/static/{name}",
        handler="page",
        operation=_page(
            "static_asset",
            "The pages' script and style sheet",
            ("name", {"type": "string", "enum": ["zeropay.js", "style.css"]}),
            kinds=("text/javascript", "text/css"),
        ),
    ),
)


def _with_idempotency(operation: dict[str, Any]) -> dict[str, Any]:
    """An operation that honours ``Idempotency-Key``: the header, its 409 and 422, and
    ``Idempotent-Replayed`` on its success."""
    op = copy.deepcopy(operation)
    op["parameters"] = [*op.get("parameters", ()), _IDEMPOTENCY_KEY]
    for status in (409, 422):
        op["responses"][str(status)] = {
            "description": _DESCRIBED[status],
            "content": _PROBLEM_CONTENT,
        }
    success = next(s for s in op["responses"] if s.startswith("2"))
    op["responses"][success]["headers"]["Idempotent-Replayed"] = {
        "$ref": "#/components/headers/Idempotent-Replayed"
    }
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The service's contract: every route of :data:`ROUTES`."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation = _with_idempotency(route.operation) if route.idempotent else route.operation
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ZeroPay",
            "version": "1.0.0",
            "description": "Payment authentication with memorable factors: enroll digests, "
            "challenge a subset at payment time, verify in constant time, and receive a "
            "short-lived token and an Ed25519-signed receipt.",
        },
        "servers": [{"url": "/", "description": "This service, where it answers."}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": {
                "Problem": PROBLEM,
                **{_schema_name(handler): schema for handler, schema in ANSWERS.items()},
            },
            "headers": _HEADERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "merchantKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
