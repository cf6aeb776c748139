"""The published contract: complete (ids, tags, descriptions, a schema for every answer),
enforced (the harness checks every answer of every server test against it), and its errors
are RFC 9457 problem details whose types resolve on the service."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from tests.contract import check_answer
from tests.server.harness import running_app
from zeropay_server.openapi import ROUTES, openapi_document
from zeropay_server.problems import PROBLEMS


def operations() -> list[tuple[str, str, dict[str, object]]]:
    paths = openapi_document()["paths"]
    return [(method, path, op) for path, ops in paths.items() for method, op in ops.items()]


def test_every_operation_is_named_tagged_and_described() -> None:
    document = openapi_document()
    assert document["servers"]
    tags = {tag["name"] for tag in document["tags"]}
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids)) == len(ROUTES)
    for method, path, op in operations():
        assert op["summary"], (method, path)
        assert op["description"], (method, path)
        assert set(op["tags"]) <= tags, (method, path)  # type: ignore[call-overload]


def test_every_json_answer_has_a_closed_schema_and_every_error_is_a_problem() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for name, schema in schemas.items():
        if name != "OpenapiAnswer":  # the document itself
            assert schema.get("additionalProperties") is False, name
    for method, path, op in operations():
        for status, answer in op["responses"].items():  # type: ignore[attr-defined]
            content = answer.get("content", {})
            if int(status) >= 400 and path not in ("/health", "/health/ready"):
                assert list(content) == ["application/problem+json"], (method, path, status)
            for media, described in content.items():
                if media.endswith("json"):
                    assert "schema" in described, (method, path, status)


def test_an_undeclared_field_or_status_breaks_the_contract() -> None:
    path = "/v1/session/revoke"
    check_answer("POST", path, 200, "application/json", '{"success": true, "revoked": true}')
    extra = '{"success": true, "revoked": true, "psp_ready": false}'
    with pytest.raises(AssertionError, match="Additional properties"):
        check_answer("POST", path, 200, "application/json", extra)
    with pytest.raises(AssertionError, match="not documented"):
        check_answer("POST", path, 418, "application/problem+json", "{}")
    with pytest.raises(AssertionError, match="not documented"):
        check_answer("POST", path, 200, "text/html", "<p>")


async def test_errors_are_problem_details_whose_type_resolves() -> None:
    async with running_app() as h:
        missing = await h.call("GET", "/v1/verification/status/nope")
        assert missing.headers["Content-Type"] == "application/problem+json"
        assert missing.body["status"] == missing.status == 400
        assert "success" not in missing.body
        kind = await h.call("GET", missing.body["type"])
        assert kind.status == 200
        assert kind.body["code"] == missing.body["code"]
        assert kind.body["title"] == missing.body["title"]
        limited = await h.call("GET", "/problems/no-such-thing")
        assert (limited.status, limited.body["code"]) == (404, "NOT_FOUND")
        for code, problem in PROBLEMS.items():
            listed = await h.call("GET", problem.uri)
            assert (listed.status, listed.body["code"]) == (200, code)


async def test_a_throttled_answer_says_when_to_retry_in_the_body_and_the_header() -> None:
    async with running_app(RATE_LIMIT_PER_IP="1") as h:
        user = str(uuid.uuid4())
        started = await h.initiate(user)
        path = f"/v1/verification/status/{started.body['session_id']}"
        answered = [await h.call("GET", path) for _ in range(3)]
        assert [a.status for a in answered] == [200, 429, 429]
        limited = answered[-1]
        assert limited.body["retry_after"] == int(limited.headers["Retry-After"]) >= 1
        assert json.loads(limited.text)["code"] == "RATE_LIMITED"


def test_every_answer_has_an_example_that_its_schema_accepts() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for name, schema in schemas.items():
        if name == "OpenapiAnswer":
            continue
        assert schema.get("examples"), name
        for example in schema["examples"]:
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(example))
            assert not errors, (name, [e.message for e in errors])
