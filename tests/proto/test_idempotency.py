"""What an Idempotency-Key decides: claim, replay, still running, reused; which answers are
kept; the stored form."""

from __future__ import annotations

import pytest

from zeropay_proto import IntegrityError, LocalProtocolError, RemoteProtocolError
from zeropay_proto.crypto import MasterKeyring
from zeropay_proto.idempotency import (
    TOKEN_BYTES,
    Answer,
    AnswerReplayed,
    Claim,
    ClaimGranted,
    KeptAnswer,
    KeyReused,
    StillRunning,
    decide_idempotency,
    decode_held,
    encode_held,
    keeps_answer,
    open_answer,
    parse_idempotency_key,
    request_fingerprint,
    scoped_key,
    seal_answer,
)

FINGERPRINT = request_fingerprint("POST", "/v1/verification/initiate", b'{"a":1}')
TOKEN = b"t" * TOKEN_BYTES
ANSWER = KeptAnswer(fingerprint=FINGERPRINT, sealed=b"\x01sealed")
KEYRING = MasterKeyring(keys={1: b"k" * 32, 2: b"K" * 32}, current=2)


def test_a_key_is_one_to_255_visible_ascii_characters() -> None:
    assert parse_idempotency_key(None) is None
    for good in ("a", "~" * 255, "order-42:retry", "550e8400-e29b-41d4-a716-446655440000"):
        assert parse_idempotency_key(good) == good
    for bad in ("", "a" * 256, "has space", "tab\t", "é", "\x7f"):
        with pytest.raises(RemoteProtocolError) as refused:
            parse_idempotency_key(bad)
        assert (refused.value.code, refused.value.field) == (
            "INVALID_IDEMPOTENCY_KEY",
            "Idempotency-Key",
        )


def test_keys_are_scoped_and_requests_told_apart_by_method_path_and_body() -> None:
    assert scoped_key("merchant:shop-1", "k") != scoped_key("merchant:shop-2", "k")
    assert scoped_key("merchant:shop-1", "k") != scoped_key("user:shop-1", "k")
    assert len(scoped_key("user:u", "k" * 255)) == 64
    variants = {
        request_fingerprint("POST", "/v1/verification/initiate", b'{"a":1}'),
        request_fingerprint("PUT", "/v1/verification/initiate", b'{"a":1}'),
        request_fingerprint("POST", "/v1/verification/verify", b'{"a":1}'),
        request_fingerprint("POST", "/v1/verification/initiate", b'{"a": 1}'),
    }
    assert len(variants) == 4
    # Length prefixes: moving a byte from path to body is another request.
    assert request_fingerprint("POST", "/a", b"b") != request_fingerprint("POST", "/ab", b"")


def test_what_a_request_does_with_what_is_held() -> None:
    mine = Claim(token=TOKEN, fingerprint=FINGERPRINT)
    assert decide_idempotency(None, fingerprint=FINGERPRINT, token=TOKEN) == ClaimGranted(mine)
    assert decide_idempotency(ANSWER, fingerprint=FINGERPRINT, token=TOKEN) == AnswerReplayed(
        ANSWER
    )
    running = decide_idempotency(
        Claim(token=b"o" * TOKEN_BYTES, fingerprint=FINGERPRINT),
        fingerprint=FINGERPRINT,
        token=TOKEN,
    )
    assert isinstance(running, StillRunning)
    assert running.retry_after_ms > 0
    other = request_fingerprint("POST", "/v1/verification/initiate", b'{"a":2}')
    assert decide_idempotency(ANSWER, fingerprint=other, token=TOKEN) == KeyReused()
    assert decide_idempotency(mine, fingerprint=other, token=TOKEN) == KeyReused()


@pytest.mark.parametrize(
    ("status", "code", "kept"),
    [
        (200, None, True),
        (201, None, True),
        (401, "VERIFICATION_FAILED", True),
        (404, "SESSION_NOT_FOUND", True),
        (409, "ALREADY_ENROLLED", True),
        (400, "MISSING_FIELD", True),
        (403, "MERCHANT_MISMATCH", True),
        (403, "NONCE_REUSED", False),
        (400, "TIMESTAMP_OUT_OF_WINDOW", False),
        (400, "INVALID_NONCE", False),
        (429, "RATE_LIMITED", False),
        (429, "ACCOUNT_LOCKED", False),
        (408, "REQUEST_TIMEOUT", False),
        (413, "PAYLOAD_TOO_LARGE", False),
        (500, "INTERNAL", False),
        (502, "PSP_UNAVAILABLE", False),
        (503, "DEPENDENCY_UNAVAILABLE", False),
    ],
)
def test_only_the_operations_decisions_are_kept(status: int, code: str | None, kept: bool) -> None:
    assert keeps_answer(status, code) is kept


def test_the_stored_form_round_trips_and_refuses_what_it_cannot_read() -> None:
    claim = Claim(token=TOKEN, fingerprint=FINGERPRINT)
    assert decode_held(encode_held(claim)) == claim
    assert decode_held(encode_held(ANSWER)) == ANSWER
    with pytest.raises(LocalProtocolError):
        encode_held(Claim(token=b"short", fingerprint=FINGERPRINT))
    with pytest.raises(LocalProtocolError):
        encode_held(Claim(token=TOKEN, fingerprint=b"short"))
    for junk in (b"", b"C", b"Cshort", b"X" + bytes(60), b"A" + bytes(32)):
        with pytest.raises(ValueError, match="not an idempotency record"):
            decode_held(junk)


def test_a_kept_answer_is_sealed_to_its_key_and_opens_only_there() -> None:
    answer = Answer(
        status=200,
        headers=(("Content-Type", "application/json"), ("X-RateLimit-Remaining", "4")),
        body=b'{"auth_token": "secret-token"}',
    )
    kept = seal_answer(
        answer, fingerprint=FINGERPRINT, keyring=KEYRING, scoped="a" * 64, nonce=bytes(12)
    )
    assert b"secret-token" not in encode_held(kept)  # a Redis dump yields no token
    assert open_answer(kept, keyring=KEYRING, scoped="a" * 64) == answer
    rotated = MasterKeyring(keys={**KEYRING.keys, 3: b"3" * 32}, current=3)
    assert open_answer(kept, keyring=rotated, scoped="a" * 64) == answer  # old versions open
    with pytest.raises(IntegrityError):
        open_answer(kept, keyring=KEYRING, scoped="b" * 64)  # moved to another key
