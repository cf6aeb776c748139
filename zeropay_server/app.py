"""The HTTP API (SPEC section 3) on Quart-Trio.

The HTTP layer only: for each route of the table (``zeropay_server.openapi.ROUTES``) build
the request's context, call the flow it names (``zeropay_server.flows``) and turn the outcome
into a response. Every error is RFC 9457 problem details (``zeropay_server.problems``); bad
input is a 4xx naming the field, a down dependency a 503 with ``Retry-After``, and nothing a
client sends can cause a 500.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from adapters.errors import DependencyUnavailable
from adapters.ports import ScopeKind
from zeropay_proto import (
    MAX_BODY_BYTES,
    IntegrityError,
    RemoteProtocolError,
)

from .flows import (
    FLOW_HEADERS,
    RETRY_AFTER_UNAVAILABLE,
    ApiError,
    Flows,
    Reply,
    RequestContext,
)
from .observability import AccessLog
from .openapi import ROUTES
from .pages import TEMPLATES, choose_language
from .pages import render as render_page
from .problems import PROBLEM_MEDIA_TYPE, problem, problem_type
from .runtime import Runtime

log = logging.getLogger("zeropay.http")


def _static(name: str, kind: str) -> tuple[bytes, str]:
    return (resources.files("zeropay_server") / "static" / name).read_bytes(), kind


_HTML = "text/html; charset=utf-8"
#: The assets the payer's pages load, by name (the pages themselves: zeropay_server.pages).
ASSETS = {
    "zeropay.js": _static("zeropay.js", "text/javascript; charset=utf-8"),
    "style.css": _static("style.css", "text/css; charset=utf-8"),
}
#: What every answer carries, pages and API alike: the pages run only their own script and
#: style sheet (no inline code, so an injected tag runs nothing), talk only to this origin,
#: and are never framed (a pay page inside another site's frame is clickjacking); no answer is
#: sniffed into another type, and no URL leaks into a Referer.
PAGE_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
#: Answers that may be kept by a cache: the public key set and the pages' assets (the same
#: for everyone). Every other answer (pages, sessions, tokens, receipts, errors) is
#: ``no-store``: a shared or browser cache must never replay one.
CACHEABLE = ("/v1/keys", "/static/")
#: Machine codes of the errors the framework raises before a handler runs.
HTTP_ERROR_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
}


def problem_reply(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Reply:
    """An error's answer: its problem details, with ``retry_after`` beside ``Retry-After``."""
    headers = headers or {}
    wait = headers.get("Retry-After")
    extensions = {**(extra or {}), **({"retry_after": int(wait)} if wait else {})}
    body = problem(status, code, detail, field=field, **extensions)
    return Reply(status, body, headers, content_type=PROBLEM_MEDIA_TYPE)


@functools.lru_cache(maxsize=4096)  # the same few active clients, request after request
def client_address(peer: str | None, forwarded: str | None, trusted: tuple[Any, ...]) -> str:
    """The client's address: the socket peer, or, only when the peer is a trusted proxy, the
    right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy (the left
    part of the header is whatever the client chose to write)."""
    address = peer or "0.0.0.0"  # noqa: S104 - a placeholder for "unknown", never bound

    def trusted_address(text: str) -> bool:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not forwarded or not trusted_address(address):
        return address
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        if not trusted_address(hop):
            return hop
    return address


def error_reply(exc: Exception, route: str) -> Reply:
    """The answer for a flow's exception: its own (ApiError), a 4xx naming the field (bad
    input), a 503 with Retry-After (a dependency down, or stored data that fails
    authentication), the framework's 4xx, or a logged 500 for a bug."""
    unavailable = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
    match exc:
        case ApiError():
            return problem_reply(
                exc.status,
                exc.code,
                exc.message,
                field=exc.field,
                headers=exc.headers,
                extra=exc.extra,
            )
        case RemoteProtocolError():
            return problem_reply(exc.error_status_hint, exc.code, exc.message, field=exc.field)
        case DependencyUnavailable():
            message = f"{exc.dependency} is unavailable"
            return problem_reply(503, "DEPENDENCY_UNAVAILABLE", message, headers=unavailable)
        case IntegrityError():
            log.exception("stored data failed authentication", extra={"fields": {"route": route}})
            message = "stored data could not be authenticated"
            return problem_reply(503, "INTEGRITY", message, headers=unavailable)
        case HTTPException():  # 413 from MAX_CONTENT_LENGTH, and the like
            return http_problem(exc)
        case _:
            log.exception("unhandled error", extra={"fields": {"route": route}})
            return problem_reply(500, "INTERNAL", "internal error")


def http_problem(exc: HTTPException) -> Reply:
    """The framework's own errors (404, 405, 413, 408) as problem details."""
    status = exc.code or 400
    code = HTTP_ERROR_CODES.get(status, "BAD_REQUEST")
    return problem_reply(status, code, exc.description or problem_type(code).title)


def render(reply: Reply) -> Response:
    return Response(
        reply.encoded(), status=reply.status, headers=reply.headers, content_type=reply.content_type
    )


async def request_context(runtime: Runtime) -> RequestContext:
    """The current request, as flows see it: its client (computed once), its one clock
    reading, the headers flows read, and its body (already read, see ``read_whole_body``)."""
    peer = request.scope.get("client")
    headers = request.headers
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    return RequestContext(
        client=client_address(
            peer[0] if peer else None,
            headers.get("X-Forwarded-For"),
            runtime.settings.trusted_proxies,
        ),
        now=runtime.clock(),
        headers={name: value for name in FLOW_HEADERS if (value := headers.get(name)) is not None},
        body=bytes(body),
    )


def create_app(runtime: Runtime, *, api: bool = True) -> QuartTrio:
    """The Quart-Trio application over ``runtime``: the API routes (unless ``api`` is false,
    for an ``audit``-role instance), the key set, health and metrics."""
    app = QuartTrio("zeropay")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = runtime.settings.read_timeout
    app.config["JSON_SORT_KEYS"] = False
    metrics = runtime.metrics
    access_log = AccessLog()

    def route(method: str, name: str, flow: str, idempotent: ScopeKind | None) -> None:
        """Serve the flow named ``flow`` at the path template ``name`` (``{param}``, as in
        OpenAPI), which is also its label in metrics and logs; path parameters are passed to
        the flow in order. An ``idempotent`` route honours ``Idempotency-Key`` in the scope
        it names."""

        async def endpoint(**params: str) -> Response:
            started = time.perf_counter()
            try:
                flows = Flows(runtime, await request_context(runtime))
                run: Callable[..., Awaitable[Reply]] = getattr(flows, flow)

                async def answer() -> Reply:
                    try:
                        return await run(*params.values())
                    except Exception as exc:
                        return error_reply(exc, name)

                if idempotent is None:
                    reply = await answer()
                else:
                    reply = await flows.idempotently(idempotent, method, request.path, answer)
            except Exception as exc:
                reply = error_reply(exc, name)
            elapsed = time.perf_counter() - started
            metrics.observe(name, method, reply.status, elapsed)
            access_log(name, method, reply.status, elapsed)
            return render(reply)

        endpoint.__name__ = name.replace("/", "_").strip("_") or "root"
        rule = name.replace("{", "<").replace("}", ">")
        app.add_url_rule(rule, endpoint=f"{method} {name}", view_func=endpoint, methods=[method])

    async def metrics_endpoint() -> Response:
        runtime.refresh_fast_gauges()
        return Response(metrics.exposition(), content_type="text/plain; version=0.0.4")

    def static_view(path: str) -> Callable[..., Awaitable[Response]]:
        """The page at ``path``, or for ``/static/{name}`` the asset named: files, the same
        for everyone (a page asks the API, which judges the session id)."""

        async def view(**params: str) -> Response:
            template = TEMPLATES.get(path)
            if template is not None:
                asked = request.args.get("lang")
                language = choose_language(request.headers.get("Accept-Language"), asked)
                page = Response(
                    render_page(template, language, demo=runtime.settings.embedded),
                    content_type=_HTML,
                )
                page.headers["Content-Language"] = language
                page.headers["Vary"] = "Accept-Language"
                return page
            content = ASSETS.get(params.get("name", ""))
            if content is None:
                return render(problem_reply(404, "NOT_FOUND", "no such page"))
            body, content_type = content
            return Response(body, content_type=content_type)

        return view

    for entry in ROUTES:  # the one table the OpenAPI document describes
        if entry.handler == "metrics":
            app.add_url_rule(entry.path, view_func=metrics_endpoint, methods=[entry.method])
        elif entry.handler == "page" and api:
            rule = entry.path.replace("{", "<").replace("}", ">")
            view = static_view(entry.path)
            app.add_url_rule(rule, endpoint=entry.path, view_func=view, methods=["GET"])
        elif api or not entry.api:
            route(entry.method, entry.path, entry.handler, entry.idempotent)

    @app.before_request
    async def read_whole_body() -> None:
        """Read every request body before answering, whatever the route: Hypercorn drops
        the end of a body the app never read, and the next request on that keep-alive
        connection is never answered (docs/stack.md, "Hypercorn and request bodies"). The
        read is bounded by MAX_CONTENT_LENGTH (413) and BODY_TIMEOUT (408); handlers get the
        cached bytes."""
        await request.get_data(cache=True, as_text=False, parse_form_data=False)
        g.body_read = True

    @app.after_request
    async def close_when_needed(response: Response) -> Response:
        """Close the connection when shutdown began (a keep-alive client must not send its
        next request to a closing server) or when the body was not read (413, 408)."""
        if runtime.draining or not g.get("body_read", False):
            response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def lock_down(response: Response) -> Response:
        """The security headers on every answer, and ``no-store`` on all but the cacheable."""
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith(CACHEABLE):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        """Routing and body errors (404, 405, 413, 408) as problem details."""
        return render(http_problem(exc))

    return app
