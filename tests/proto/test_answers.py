"""The client digest protocol: the shipped test vectors, and every answer a factor refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zeropay_proto import Factor, RemoteProtocolError
from zeropay_proto.answers import canonical_answer, example_answer, factor_digest, factor_digests

VECTORS = Path(__file__).parent.parent / "vectors" / "factor_digests.json"
USER = "7d4c8f0e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"


def vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return cases


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: v["note"])
def test_the_reference_reproduces_every_vector(vector: dict[str, Any]) -> None:
    factor = Factor(vector["factor"])
    assert canonical_answer(factor, vector["answer"]).hex() == vector["canonical_hex"]
    assert (
        factor_digest(vector["user_uuid"], factor, vector["answer"]).hex() == (vector["digest_hex"])
    )


def test_the_vectors_show_what_binds_and_what_does_not() -> None:
    by_note = {v["note"]: v["digest_hex"] for v in vectors()}
    assert by_note["the simplest PIN"] != by_note["the same PIN, another user: another digest"]
    assert by_note["a capture template, as hex"] == by_note["hex case does not count"]
    assert (
        by_note["a capture template, as hex"]
        != (by_note["the same template, another factor: another digest"])
    )


REFUSED = [
    (Factor.PIN, "123"),
    (Factor.PIN, "1234567890123"),
    (Factor.PIN, "12a4"),
    (Factor.PIN, "1234\n"),
    (Factor.COLOUR, ""),
    (Factor.COLOUR, "magenta"),
    (Factor.COLOUR, "red,red,red,red,red,red,red"),
    (Factor.EMOJI, ""),
    (Factor.EMOJI, "\U0001f680x"),
    (Factor.WORDS, ""),
    (Factor.WORDS, "hello!"),
    (Factor.WORDS, "one\ttab"),
    (Factor.WORDS, "a b c d e f g"),
    (Factor.FACE, ""),
    (Factor.FACE, "abc"),
    (Factor.FACE, "zz"),
]


@pytest.mark.parametrize(("factor", "answer"), REFUSED)
def test_an_answer_the_factor_does_not_accept_is_a_400_naming_the_factor(
    factor: Factor, answer: str
) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        canonical_answer(factor, answer)
    assert refused.value.field == factor.value
    assert refused.value.code == "INVALID_ANSWER"


def test_a_request_body_is_each_factors_digest_in_hex() -> None:
    body = factor_digests(USER, {Factor.PIN: "4827", Factor.COLOUR: "teal"})
    assert body == {
        "PIN": factor_digest(USER, Factor.PIN, "4827").hex(),
        "COLOUR": factor_digest(USER, Factor.COLOUR, "teal").hex(),
    }


def test_the_user_is_canonical_whatever_its_case() -> None:
    assert factor_digest(USER.upper(), Factor.PIN, "4827") == factor_digest(
        USER, Factor.PIN, "4827"
    )


@pytest.mark.parametrize("factor", list(Factor))
def test_every_factor_has_valid_examples_that_differ_by_seed(factor: Factor) -> None:
    right, wrong = example_answer(factor, "right"), example_answer(factor, "wrong")
    assert canonical_answer(factor, right) != canonical_answer(factor, wrong)
    assert example_answer(factor, "right") == right
