"""The SDK against a real server, embedded and on Redis with PostgreSQL: every operation
has a method, a payment runs end to end, receipts check, errors are typed, and retries are
safe (the same idempotency key, fresh nonces)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import trio
from zeropay_client import (
    OPERATIONS,
    AsyncZeroPay,
    AuthenticationError,
    InvalidReceipt,
    InvalidRequest,
    NotFound,
    VerificationFailed,
    ZeroPay,
    factor_digest,
    factor_digests,
    verify_receipt,
)

from tests.sdk.conftest import Server

VECTORS = Path(__file__).parent.parent / "vectors" / "factor_digests.json"
ANSWERS = {"PIN": "2468", "COLOUR": "red,teal", "WORDS": "blue harbour"}


def test_the_digests_reproduce_the_published_vectors() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    for vector in vectors:
        digest = factor_digest(vector["user_uuid"], vector["factor"], vector["answer"])
        assert digest == vector["digest_hex"], vector["note"]


def test_every_operation_of_the_contract_has_one_method(server: Server) -> None:
    with ZeroPay(server.url, server.api_key) as zp:
        document = zp.get_openapi()
    ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert ids == set(OPERATIONS), ids ^ set(OPERATIONS)
    for method in OPERATIONS.values():
        assert callable(getattr(ZeroPay, method)), method
        assert callable(getattr(AsyncZeroPay, method)), method


def test_a_payment_end_to_end_with_a_checked_receipt(server: Server) -> None:
    user = str(uuid.uuid4())
    with ZeroPay(server.url, server.api_key) as zp:
        assert zp.enroll(user, factor_digests(user, ANSWERS))["factor_count"] == 3
        session = zp.initiate_verification(
            user, amount=4250, currency="EUR", return_url="https://shop.example/done"
        )
        assert zp.pay_page_url(session["session_id"]).endswith(session["session_id"])
        asked = [f for f in session["required_factors"] if f in ANSWERS]
        wrong = {f: factor_digest(user, f, "9999" if f == "PIN" else "black") for f in asked}
        with pytest.raises(VerificationFailed) as failed:
            zp.verify(session["session_id"], user, {**factor_digests(user, ANSWERS), **wrong})
        assert failed.value.attempts_remaining == 2
        assert failed.value.type == "/problems/verification-failed"
        done = zp.verify(session["session_id"], user, factor_digests(user, ANSWERS))
        receipt = verify_receipt(done["receipt_jws"], zp.get_keys())
        assert (receipt["amount"], receipt["currency"]) == (4250, "EUR")
        assert receipt["session_id"] == session["session_id"]
        status = zp.get_session_status(session["session_id"])
        assert (status["status"], status["return_url"]) == ("verified", "https://shop.example/done")
        assert zp.validate_token(done["auth_token"])["user_uuid"] == user
        zp.revoke_token(done["auth_token"])
        with pytest.raises(AuthenticationError):
            zp.validate_token(done["auth_token"])
        tampered = done["receipt_jws"][:-4] + (
            "AAAA" if not done["receipt_jws"].endswith("AAAA") else "BBBB"
        )
        with pytest.raises(InvalidReceipt):
            verify_receipt(tampered, zp.get_keys())


def test_a_merchant_sends_an_enrollment_link_that_enrolls_once(server: Server) -> None:
    user = str(uuid.uuid4())
    with ZeroPay(server.url, server.api_key) as zp:
        link = zp.enrollment_link(user)
        assert link["enroll_url"].startswith("/enroll?grant=zpg_")
        assert zp.read_enrollment_grant(link["grant"])["user_uuid"] == user
        digests = factor_digests(user, ANSWERS)
        assert zp.enroll(user, digests, grant=link["grant"])["factor_count"] == 3
        with pytest.raises(InvalidRequest) as other:
            zp.enroll(str(uuid.uuid4()), digests, grant=link["grant"])
        assert (other.value.code, other.value.field) == ("GRANT_INVALID", "grant")


def test_a_retry_with_the_key_gets_the_first_answer(server: Server) -> None:
    user, key = str(uuid.uuid4()), str(uuid.uuid4())
    with ZeroPay(server.url, server.api_key) as zp:
        first = zp.initiate_verification(user, amount=500, currency="JPY", idempotency_key=key)
        again = zp.initiate_verification(user, amount=500, currency="JPY", idempotency_key=key)
        assert again == first
        with pytest.raises(InvalidRequest) as reused:
            zp.initiate_verification(user, amount=501, currency="JPY", idempotency_key=key)
        assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
        with pytest.raises(InvalidRequest) as bad:
            zp.initiate_verification(user, amount=42.5, currency="EUR")  # type: ignore[arg-type]
        assert bad.value.field == "amount"
        with pytest.raises(NotFound):
            zp.get_session_status("A" * 43)


def test_a_wrong_merchant_key_is_an_authentication_error(server: Server) -> None:
    with (
        ZeroPay(server.url, "zpk_0123456789ab_" + "B" * 43) as zp,
        pytest.raises(AuthenticationError) as refused,
    ):
        zp.initiate_verification(str(uuid.uuid4()))
    assert refused.value.code == "MERCHANT_UNAUTHENTICATED"


async def test_the_async_client_runs_the_same_payment(server: Server) -> None:
    user = str(uuid.uuid4())
    async with AsyncZeroPay(server.url, server.api_key) as zp:
        await zp.enroll(user, factor_digests(user, ANSWERS))
        session = await zp.initiate_verification(user, amount=1250, currency="KWD")
        done = await zp.verify(session["session_id"], user, factor_digests(user, ANSWERS))
        receipt = verify_receipt(done["receipt_jws"], await zp.get_keys())
        assert (receipt["amount"], receipt["currency"]) == (1250, "KWD")
        assert (await zp.ready())["status"] == "ready"


# ------------------------------------------------------------------ retries


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose transport answers ``answers`` in turn, recording each request."""
    sent: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.Client(base_url="http://zeropay.test", transport=httpx.MockTransport(handle)), sent


def problem(status: int, code: str, **more: object) -> httpx.Response:
    body = {"type": f"/problems/{code.lower()}", "title": code, "status": status, "code": code}
    return httpx.Response(status, json={**body, **more}, headers={"Retry-After": "2"})


def test_a_keyed_call_is_retried_with_its_key_and_fresh_nonces() -> None:
    http, sent = scripted(
        httpx.ConnectError("refused"),
        problem(409, "IDEMPOTENCY_IN_PROGRESS", retry_after=2),
        problem(503, "DEPENDENCY_UNAVAILABLE", retry_after=2),
        httpx.Response(200, json={"success": True, "session_id": "s"}),
    )
    waits: list[float] = []
    zp = ZeroPay("http://zeropay.test", "zpk_x", http=http, sleep=waits.append)
    assert zp.initiate_verification(str(uuid.uuid4()))["session_id"] == "s"
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1
    assert len({r.headers["X-Nonce"] for r in sent}) == 4
    assert waits[1:] == [2.0, 2.0]  # Retry-After honoured
    assert 0 < waits[0] <= 0.25


def test_a_call_the_service_does_not_make_idempotent_is_never_retried() -> None:
    http, sent = scripted(httpx.ConnectError("refused"))
    zp = ZeroPay("http://zeropay.test", http=http, sleep=lambda s: None)
    with pytest.raises(Exception, match="ConnectError"):
        zp.revoke_token("t" * 64)
    assert len(sent) == 1
    http, sent = scripted(problem(401, "VERIFICATION_FAILED", attempts_remaining=1))
    zp = ZeroPay("http://zeropay.test", http=http, sleep=lambda s: None)
    with pytest.raises(VerificationFailed):
        zp.verify("s", str(uuid.uuid4()), {"PIN": "0" * 64})
    assert len(sent) == 1  # a decision, not a fault: never retried


async def test_the_async_client_retries_alike() -> None:
    sent: list[httpx.Request] = []
    answers = [problem(503, "DEPENDENCY_UNAVAILABLE"), httpx.Response(200, json={"keys": []})]

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0)

    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        await trio.lowlevel.checkpoint()

    http = httpx.AsyncClient(base_url="http://zeropay.test", transport=httpx.MockTransport(handle))
    zp = AsyncZeroPay("http://zeropay.test", http=http, sleep=sleep)
    assert await zp.get_keys() == {"keys": []}
    assert (len(sent), waited) == (2, [2.0])
