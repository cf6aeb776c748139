"""The app answers exactly the routes the OpenAPI document describes (one table, ROUTES)."""

from __future__ import annotations

import re

from quart_trio import QuartTrio

from tests.server.harness import running_app
from zeropay_server.app import create_app
from zeropay_server.flows import Flows
from zeropay_server.openapi import ROUTES, openapi_document

AUTOMATIC = {"HEAD", "OPTIONS"}


def served(app: QuartTrio) -> set[tuple[str, str]]:
    """(method, path template) of every rule the app registered (Quart's own excluded)."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        out |= {(method, path) for method in (rule.methods or set()) - AUTOMATIC}
    return out


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }


async def test_the_app_serves_exactly_the_documented_routes() -> None:
    async with running_app() as h:
        assert served(h.app) == documented()
        assert len(documented()) == len(ROUTES)  # no route listed twice


async def test_an_audit_instance_serves_only_the_operational_routes() -> None:
    async with running_app() as h:
        audit = create_app(h.runtime, api=False)
        assert served(audit) == {(r.method, r.path) for r in ROUTES if not r.api}
        assert any(r.api for r in ROUTES)


def test_every_route_names_a_flow() -> None:
    """A route names its flow by method name (but the metrics and the static pages, served
    apart); a typo would be a 500 on first use."""
    apart = {"metrics", "page"}
    missing = [
        r.handler for r in ROUTES if r.handler not in apart and not hasattr(Flows, r.handler)
    ]
    assert missing == []
