"""Fuzz entry point: arbitrary bytes into every parser of untrusted input.

The contract (after h11's fuzz harness): a parser returns a request object or raises
``RemoteProtocolError``; any other exception is a bug.

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

BODY_PARSERS = (parse_enrollment, parse_initiate, parse_verify, parse_psp_create)
NOW = 1_800_000_000.0


def fuzz_one_input(data: bytes) -> None:
    """Feed ``data`` to each body parser and, decoded as text, to each header parser."""
    for parse in BODY_PARSERS:
        with contextlib.suppress(RemoteProtocolError):
            parse(data)
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
