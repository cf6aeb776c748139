"""The text formats the parsers accept, each written once.

A parser compiles one with :func:`matcher` (anchored by ``\\Z``: Python's ``$`` also accepts a
trailing newline) and a JSON Schema states it with :func:`schema_pattern` (``^...$``, which in
ECMA-262 is the end), so the parser and the published contract cannot drift apart.
"""

from __future__ import annotations

import re

UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: RFC 9562 section 5.4, lower case: version nibble 4, variant bits 10 (the X-Nonce header).
UUID4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
DIGEST = "[0-9a-fA-F]{64}"
SESSION_ID = "[A-Za-z0-9_-]{43}"
MERCHANT_ID = "[A-Za-z0-9._:-]{1,64}"
DEVICE_ID = "[\\x21-\\x7e]{1,128}"


def matcher(pattern: str) -> re.Pattern[str]:
    """``pattern`` for ``.match``: the whole string, nothing after it."""
    return re.compile(pattern + r"\Z")


def schema_pattern(pattern: str) -> str:
    """``pattern`` as a JSON Schema states it."""
    return f"^{pattern}$"
