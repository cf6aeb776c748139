"""The route table, and the OpenAPI 3.1 document generated from it and the core's schemas.

:data:`ROUTES` is the one list of what the service answers: the app registers exactly these
(``zeropay_server.app.create_app``) and the document describes exactly these, so the two
cannot diverge (``tests/server/test_routes.py`` checks the app's URL map against it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from zeropay_proto import schemas

_ERROR = {
    "type": "object",
    "required": ["success", "error", "code"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
        "attempts_remaining": {"type": "integer", "minimum": 0},
    },
}
_OK = {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}}
_STATE_CHANGING = [
    {
        "name": "X-Nonce",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
        "description": "A UUIDv4, used once.",
    },
    {
        "name": "X-Timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        "description": "Milliseconds since the epoch; 5 minutes past to 30 seconds ahead.",
    },
]
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _responses(*statuses: int, success: int = 200) -> dict[str, Any]:
    described = {
        200: "OK",
        201: "Created",
        400: "Invalid input (the field is named)",
        401: "Verification failed or not authenticated",
        403: "Nonce reused, a merchant mismatch, or a step-up needed",
        404: "Not found",
        409: "Already enrolled",
        413: "Body over 10 kB",
        429: "Rate limited or account locked",
        502: "Payment provider failed",
        503: "A dependency is down",
    }
    out: dict[str, Any] = {
        str(success): {
            "description": described[success],
            "content": {"application/json": {"schema": _OK}},
        }
    }
    for status in (*statuses, 429, 503):
        out[str(status)] = {
            "description": described[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _operation(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    statuses: tuple[int, ...] = (400,),
    success: int = 200,
    state_changing: bool = False,
    bearer: bool = False,
    merchant: bool = False,
    path_params: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(*statuses, success=success)}
    parameters = list(_STATE_CHANGING) if state_changing else []
    parameters += [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in path_params
    ]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["413"] = {
            "description": "Body over 10 kB",
            "content": {"application/json": {"schema": _ERROR}},
        }
    if bearer:
        op["security"] = _BEARER
    if merchant:
        op["security"] = [{"merchantKey": []}]
        op["responses"]["401"] = {
            "description": "No valid merchant API key (X-API-Key)",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return op


def _plain(summary: str, *, status: int = 200) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            str(status): {"description": "OK", "content": {"application/json": {"schema": {}}}}
        },
    }


def _page(
    summary: str, *params: tuple[str, dict[str, Any]], kinds: tuple[str, ...] = ("text/html",)
) -> dict[str, Any]:
    """A static page or asset (``zeropay_server/static``), not JSON."""
    return {
        "summary": summary,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in params
        ],
        "responses": {"200": {"description": "the page", "content": {kind: {} for kind in kinds}}},
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


_UUID_PARAM = ("uuid", schemas.USER_UUID)
_SESSION_PARAM = ("session_id", {"type": "string", "pattern": schemas.SESSION_ID_PATTERN})
_CREDENTIAL_PARAM = (
    "credential_id",
    {"type": "string", "pattern": "^[A-Za-z0-9_-]{2,1364}$", "description": "base64url"},
)
_HEALTH = {"200": {"description": "ready"}, "503": {"description": "not ready"}}

ROUTES: tuple[Route, ...] = (
    Route(
        method="POST",
        path="/v1/enrollment/store",
        handler="enroll",
        operation=_operation(
            "Enroll a user's factors (digests only)",
            body=schemas.ENROLLMENT,
            statuses=(400, 403, 409),
            success=201,
            state_changing=True,
        ),
    ),
    Route(
        method="PUT",
        path="/v1/enrollment/update",
        handler="update_enrollment",
        operation=_operation(
            "Replace a user's factors; needs a token of that user",
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
            "Delete a user's enrollment",
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
            "GDPR export: metadata and audit trail, never digests or verifiers",
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
            "Start registering a passkey: WebAuthn creation options; needs a strong token",
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
            "Register a passkey: the browser's response to the creation options",
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
            "A user's passkeys (ids, sign counts, ages)",
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
            "Delete one of a user's passkeys; needs a strong token",
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
        operation=_operation(
            "Open a verification session (and a PSP checkout in parallel); merchants only",
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
        operation=_operation(
            "Verify the challenged factors (and the passkey's assertion, if the session "
            "challenges one); a token and a signed receipt on success",
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
            "A session's state, attempts and payment, and the passkey request of its next attempt",
            statuses=(400, 404),
            path_params=(_SESSION_PARAM,),
        ),
    ),
    Route(
        method="GET",
        path="/v1/session/validate",
        handler="validate",
        operation=_operation("Validate an auth token", statuses=(401,), bearer=True),
    ),
    Route(
        method="POST",
        path="/v1/session/revoke",
        handler="revoke",
        operation=_operation(
            "Revoke an auth token", statuses=(400, 401, 403), state_changing=True, bearer=True
        ),
    ),
    Route(
        method="POST",
        path="/v1/psp/session/create",
        handler="psp_create",
        operation=_operation(
            "Create a payment-provider checkout session",
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
            "A payment-provider checkout session (its merchant's only)",
            statuses=(404,),
            merchant=True,
            path_params=(("id", {"type": "string", "maxLength": 64}),),
        ),
    ),
    Route(
        method="GET",
        path="/v1/keys",
        handler="keys",
        operation=_plain("Public keys (JWK) that verify receipts"),
        api=False,
    ),
    Route(
        method="GET", path="/health/live", handler="live", operation=_plain("Liveness"), api=False
    ),
    Route(
        method="GET",
        path="/health/ready",
        handler="ready",
        operation={**_plain("Readiness: Redis and PostgreSQL accept writes"), "responses": _HEALTH},
        api=False,
    ),
    Route(
        method="GET",
        path="/health",
        handler="health",
        operation={
            **_plain("Health details"),
            "responses": {"200": {"description": "healthy"}, "503": {"description": "degraded"}},
        },
        api=False,
    ),
    Route(
        method="GET",
        path="/openapi.json",
        handler="openapi",
        operation=_plain("This document"),
        api=False,
    ),
    Route(
        method="GET",
        path="/problems/{slug}",
        handler="problem_type",
        operation=_plain("What an error's type means"),
        api=False,
    ),
    Route(
        method="GET",
        path="/metrics",
        handler="metrics",
        operation={
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
        },
        api=False,
    ),
    Route(
        method="GET",
        path="/pay/{session_id}",
        handler="page",
        operation=_page(
            "The payer's page: the payment, then the challenged factors", _SESSION_PARAM
        ),
    ),
    Route(method="GET", path="/enroll", handler="page", operation=_page("The enrollment page")),
    Route(
        method="GET",
        path="/static/{name}",
        handler="page",
        operation=_page(
            "The pages' script and style sheet",
            ("name", {"type": "string", "enum": ["zeropay.js", "style.css"]}),
            kinds=("text/javascript", "text/css"),
        ),
    ),
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The service's contract: every route of :data:`ROUTES`."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ZeroPay",
            "version": "1.0.0",
            "description": "Payment authentication with memorable factors: enroll digests, "
            "challenge a subset at payment time, verify in constant time, and receive a "
            "short-lived token and an Ed25519-signed receipt.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "merchantKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
