"""The use cases (enroll, initiate, verify, ...), one method each, free of HTTP.

A flow is the request's whole story in terms of the core and the ports: parse with the
core's parsers, decide with the core, carry out its outputs through the ports, and answer a
:class:`Reply`, or raise: :class:`ApiError` for an answer other than success,
``RemoteProtocolError`` for bad input (4xx naming the field), ``DependencyUnavailable`` for a
down dependency (503). Everything a flow knows of its request is its :class:`RequestContext`:
the client's address, the one clock reading of the request, the headers flows read, and the
body. So flows run, and are tested, without Quart (``tests/server/test_flows.py``); the HTTP
layer (``zeropay_server.app``) builds the context, calls the flow its route table names and
turns the outcome into a response.

One module per concern: :mod:`.enrollment`, :mod:`.passkeys`, :mod:`.verification`,
:mod:`.tokens`, :mod:`.payments` and :mod:`.operations`, on the shared steps of :mod:`.steps`.
"""

from __future__ import annotations

from .context import FLOW_HEADERS, ApiError, Reply, RequestContext, cached_form
from .enrollment import EnrollmentFlows
from .idempotency import IdempotentFlows
from .operations import RETRY_AFTER_UNAVAILABLE, OperationFlows
from .passkeys import PasskeyFlows
from .payments import PaymentFlows
from .tokens import TokenFlows
from .verification import VerificationFlows

__all__ = [
    "FLOW_HEADERS",
    "RETRY_AFTER_UNAVAILABLE",
    "ApiError",
    "Flows",
    "Reply",
    "RequestContext",
    "cached_form",
]


class Flows(
    EnrollmentFlows,
    PasskeyFlows,
    VerificationFlows,
    TokenFlows,
    PaymentFlows,
    OperationFlows,
    IdempotentFlows,
):
    """Every flow of one request (its :class:`RequestContext`)."""
