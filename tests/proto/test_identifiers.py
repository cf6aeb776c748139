"""User UUIDs and session ids."""

from __future__ import annotations

import pytest

from tests.helpers import USER, entropy
from zeropay_proto import (
    LocalProtocolError,
    RemoteProtocolError,
    make_session_id,
    parse_session_id,
    parse_user_id,
    session_names_user,
)


def test_user_id_is_canonicalised_to_lower_case() -> None:
    assert parse_user_id(USER.upper()) == USER


@pytest.mark.parametrize("value", [None, 5, "", "123e4567e89b42d3a456426614174000", USER + "0"])
def test_bad_user_id_names_the_field(value: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_user_id(value, field="user_uuid")
    assert info.value.field == "user_uuid"


def test_session_id_names_its_user_and_round_trips() -> None:
    sid = make_session_id(USER, entropy(16))
    assert len(sid) == 43
    assert parse_session_id(sid) == (sid, USER)
    assert make_session_id(USER, entropy(16, "other")) != sid
    with pytest.raises(LocalProtocolError):
        make_session_id(USER, b"short")


@pytest.mark.parametrize(
    "value", [None, 7, "", "a" * 42, "!" * 43, "!" + "A" * 42, "é" * 43, "A" * 42 + "B"]
)
def test_malformed_session_ids_are_refused(value: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_session_id(value)
    assert info.value.code == "INVALID_SESSION_ID"


def test_a_session_id_names_its_own_user_only() -> None:
    other = "00000000-0000-4000-8000-000000000002"
    session_id = make_session_id(USER, entropy(16, "names"))
    assert session_names_user(session_id, USER)
    assert not session_names_user(session_id, other)
    assert not session_names_user("not-a-session-id", USER)  # malformed: names nobody
