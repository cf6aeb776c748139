"""adapters.resp writes what redis-py writes, byte for byte (its encoding is the reference)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from adapters import resp

arguments = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=50),
    st.integers(),
    st.floats(allow_nan=False),
)
commands = st.lists(
    st.tuples(st.sampled_from(["EVALSHA", "GET", "SET", "XACK"]), st.lists(arguments, max_size=12)),
    min_size=1,
    max_size=5,
)


@given(commands)
def test_packed_requests_equal_redis_pys(drawn: list[tuple[str, list[resp.Argument]]]) -> None:
    wanted = [(name, *args) for name, args in drawn]
    assert resp.pack(wanted) == b"".join(Connection().pack_commands(wanted))


@pytest.mark.parametrize("argument", [True, None, object()])
def test_what_redis_py_refuses_is_refused(argument: object) -> None:
    with pytest.raises(TypeError, match="cannot send"):
        resp.pack([("SET", "k", argument)])  # type: ignore[list-item]
