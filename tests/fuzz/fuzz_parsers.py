"""Fuzz entry point: arbitrary bytes into every parser of untrusted input.

The contract (after h11's fuzz harness): a parser returns a request object or raises
``RemoteProtocolError``; any other exception is a bug. A verify body's passkey assertion and a
registration's credential go on into the WebAuthn decisions, whose contract is the same: an
assertion is decided (never an exception), a registration made or refused with a 400.

Run with atheris (coverage-guided), bounded by its own flags::

    pip install atheris
    python -m tests.fuzz.fuzz_parsers -atheris_runs=1000000

In CI, ``tests/fuzz/test_fuzz_parsers.py`` runs the same :func:`fuzz_one_input` over a bounded
number of Hypothesis examples.
"""

from __future__ import annotations

import contextlib
import sys

from zeropay_proto import (
    RemoteProtocolError,
    check_replay_headers,
    parse_bearer,
    parse_enrollment,
    parse_initiate,
    parse_psp_create,
    parse_session_id,
    parse_user_id,
    parse_verify,
)
from zeropay_proto.passkeys import (
    STAND_IN_KEY,
    LinkedData,
    Passkey,
    PossessionProven,
    PossessionRefused,
    RelyingParty,
    check_assertion,
    check_registration,
)
from zeropay_proto.requests import parse_passkey_registration

BODY_PARSERS = (parse_enrollment, parse_initiate, parse_verify, parse_psp_create)
NOW = 1_800_000_000.0
RP = RelyingParty(rp_id="localhost", name="ZeroPay", origins=("http://localhost:8080",))
LINKED = LinkedData(session_id="s", amount=None, currency=None, payee=None, attempt=1)
#: A passkey the fuzzer may name (its id is "ZnV6eg", base64url of b"fuzz").
PASSKEY = Passkey(credential_id=b"fuzz", public_key=STAND_IN_KEY, sign_count=0, created_at_ms=0)


def _passkey_decisions(data: bytes) -> None:
    """A parsed assertion is decided, never raised; a credential is made or refused (400)."""
    with contextlib.suppress(RemoteProtocolError):
        verify = parse_verify(data)
        if verify.passkey is not None:
            decided = check_assertion(RP, verify.passkey, linked=LINKED, passkeys=[PASSKEY])
            assert isinstance(decided, PossessionRefused | PossessionProven)
    with contextlib.suppress(RemoteProtocolError):
        registration = parse_passkey_registration(data)
        check_registration(RP, registration.credential, challenge=bytes(32), now_ms=0)


def fuzz_one_input(data: bytes) -> None:
    """Feed ``data`` to each body parser and, decoded as text, to each header parser."""
    for parse in BODY_PARSERS:
        with contextlib.suppress(RemoteProtocolError):
            parse(data)
    _passkey_decisions(data)
    text = data.decode("utf-8", "replace")
    header_checks = (
        lambda: parse_bearer(text),
        lambda: parse_session_id(text),
        lambda: parse_user_id(text),
        lambda: check_replay_headers(text, text, now=NOW),
        lambda: check_replay_headers("9f1c2b4e-6a7d-4e8f-9a0b-1c2d3e4f5a6b", text, now=NOW),
    )
    for check in header_checks:
        with contextlib.suppress(RemoteProtocolError):
            check()


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
