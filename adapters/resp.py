"""RESP, the Redis protocol's request encoding, for the standalone store's round trips.

redis-py encodes each argument through its ``Encoder`` and builds each command from joined
pieces: 3.4 % of an initiate's CPU (every script call carries a dozen arguments, the audit
event's fields among them). The encoding is small and fixed (RESP2/3 requests are arrays of
bulk strings): here it is one pass over the arguments into one buffer. Byte for byte what
redis-py's ``pack_commands`` writes (tests/adapters/test_resp.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: What an argument may be, as for redis-py (``bool`` is refused there too: ambiguous).
Argument = bytes | str | int | float


def pack(commands: Iterable[Sequence[Argument]]) -> bytes:
    """The bytes that send ``commands`` in one write."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for argument in command:
            if isinstance(argument, bytes):
                data = argument
            elif isinstance(argument, str):
                data = argument.encode()
            elif isinstance(argument, int | float) and not isinstance(argument, bool):
                data = repr(argument).encode()
            else:
                raise TypeError(f"cannot send a {type(argument).__name__} to Redis")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)
