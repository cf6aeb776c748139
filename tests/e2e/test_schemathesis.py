"""schemathesis against /openapi.json: no 5xx, no response that breaks the schema.

The document is the one the server serves (generated from the core's schemas); the cases run
against a real server process (embedded storage, limits raised so that throttling does not
hide the routes), a bounded number of examples per operation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.e2e.servers import DEMO_MERCHANT_KEY, ServerProcess, running_server
from zeropay_server.openapi import openapi_document

EXAMPLES_PER_OPERATION = 40
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "RATE_LIMIT_GLOBAL": "1000000",
        "RATE_LIMIT_PER_IP": "1000000",
        "RATE_LIMIT_PER_USER": "1000000",
        "PBKDF2_ITERATIONS": "1000",
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "ZEROPAY_DEMO_MERCHANT_KEY": DEMO_MERCHANT_KEY,
    }
    with running_server(env, Path(tmp_path_factory.mktemp("schemathesis"))) as server:
        yield server


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_errors_and_always_matches_its_schema(
    case: schemathesis.Case[Any], embedded_server: ServerProcess
) -> None:
    if case.method.upper() in {"POST", "PUT", "DELETE"} and case.headers is not None:
        # Mostly fresh replay headers, so the cases reach the handlers behind the check.
        case.headers["X-Nonce"] = str(uuid.uuid4())
        case.headers["X-Timestamp"] = str(int(time.time() * 1000))
    if case.headers is not None and "X-API-Key" in case.headers:
        case.headers["X-API-Key"] = DEMO_MERCHANT_KEY  # mostly valid, to reach the handlers
    response = case.call(base_url=embedded_server.url, timeout=30)
    case.validate_response(
        response,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
    assert response.status_code < 500
