"""Every answer against the published contract: its status documented for its operation, its
media type, and its body valid by the operation's schema for that status, closed objects
included (a field the contract does not declare fails).

The in-process harness (``tests/server/harness.py``) checks every answer of every server
test with :func:`check_answer`; schemathesis does the same with generated requests against a
server process (``tests/e2e/test_schemathesis.py``).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from zeropay_server.openapi import ROUTES, openapi_document

_DOCUMENT_URI = "urn:zeropay:openapi"


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = DRAFT202012.create_resource(openapi_document())
    registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, resource)
    return registry


@functools.cache
def _templates() -> tuple[tuple[re.Pattern[str], str, str], ...]:
    out = []
    for route in ROUTES:
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", route.path)
        out.append((re.compile(f"^{pattern}$"), route.method, route.path))
    return tuple(out)


def operation_of(method: str, path: str) -> dict[str, Any] | None:
    """The documented operation that answers ``method`` on ``path`` (a concrete path)."""
    path = path.split("?", 1)[0]
    for pattern, route_method, template in _templates():
        if route_method == method and pattern.match(path):
            operation: dict[str, Any] = openapi_document()["paths"][template][method.lower()]
            return operation
    return None


def check_answer(method: str, path: str, status: int, content_type: str, text: str) -> None:
    """Raise ``AssertionError`` unless the answer is one the contract declares (outside
    every operation, a 404 or 405 problem)."""
    operation = operation_of(method, path)
    if operation is None:
        assert status in (404, 405), f"{method} {path}: {status} outside the contract"
        assert content_type.startswith("application/problem+json"), content_type
        _validate({"$ref": f"{_DOCUMENT_URI}#/components/schemas/Problem"}, text, path)
        return
    declared = operation["responses"].get(str(status))
    assert declared is not None, f"{method} {path}: status {status} is not documented"
    kind = content_type.split(";")[0].strip()
    content = declared.get("content", {})
    if not content:
        return
    assert kind in content, f"{method} {path} {status}: {kind} is not documented ({content})"
    schema = content[kind].get("schema")
    if schema is None:
        return
    pointer = f"{_DOCUMENT_URI}#/paths/{_pointer(method, path, status, kind)}"
    _validate({"$ref": pointer}, text, f"{method} {path} {status}")


def _validate(schema: dict[str, Any], text: str, what: str) -> None:
    validator = jsonschema.Draft202012Validator(
        schema,
        registry=_registry(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    errors = list(validator.iter_errors(json.loads(text)))
    assert not errors, f"{what}: {[e.message for e in errors][:5]}"


def _pointer(method: str, path: str, status: int, kind: str) -> str:
    """The JSON pointer (under ``#/paths/``) of the answer's schema."""
    for pattern, route_method, template in _templates():
        if route_method == method and pattern.match(path.split("?", 1)[0]):
            escaped = template.replace("~", "~0").replace("/", "~1")
            media = kind.replace("~", "~0").replace("/", "~1")
            return f"{escaped}/{method.lower()}/responses/{status}/content/{media}/schema"
    raise AssertionError("unreachable: operation_of found it")
