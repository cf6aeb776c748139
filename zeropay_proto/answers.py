"""The client-side digest protocol: how a client turns one factor's answer into the 32-byte
digest it sends. The service never sees an answer, and never needs to: it compares digests.

A digest is SHA-256 over four length-prefixed fields (``LP(x)`` is ``len(x)`` as two bytes,
big-endian, then ``x``)::

    SHA-256( LP("zeropay/factor-digest/v1") || LP(user uuid) || LP(factor name) || LP(answer) )

- **Domain separation**: the first field names this use and its version, so no other hash a
  client or server computes over the same data can collide with a digest.
- **User binding**: the user's canonical uuid (lower-case, hyphenated ASCII) is hashed in, so
  one user's PIN digest is not every user's: a table of the digests of common PINs serves one
  user, not the whole population.
- **Factor binding**: the factor's wire name (``PIN``) is hashed in, so one answer given to two
  factors makes two digests.
- The length prefixes make the encoding injective: no two field lists share an input.

The answer is hashed in its **canonical form** (:func:`canonical_answer`), so that every client
that accepts the same answer sends the same digest:

- ``PIN``: 4 to 12 ASCII digits, as typed (leading zeros count).
- ``COLOUR``: 1 to 6 picks from :data:`COLOURS`, in order: their names, lower case, joined by
  ``,`` (input: the names, any case, separated by commas and/or spaces).
- ``EMOJI``: 1 to 6 picks from :data:`EMOJI`, in order: their names joined by ``,`` (input: the
  emoji themselves; U+FE0F variation selectors are ignored).
- ``WORDS``: 1 to 6 words: NFKC-normalised, lower-cased, separated by single spaces (input:
  words of letters, marks and digits, separated by runs of U+0020 spaces, which are also
  trimmed at either end; NFKC turns other spaces, such as U+00A0, into U+0020).
- every other factor (behaviour, biometric, possession): the device's capture template as hex
  (2 to 1024 hex digits); canonical form, the bytes.

Test vectors every client must reproduce: ``tests/vectors/factor_digests.json``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

from ._errors import RemoteProtocolError
from .factors import Factor
from .identifiers import parse_user_id

DOMAIN = b"zeropay/factor-digest/v1"

#: The colour picker's palette (names are the canonical form).
COLOURS: tuple[str, ...] = (
    "red", "orange", "amber", "yellow", "lime", "green", "teal", "cyan",
    "blue", "indigo", "violet", "pink", "brown", "grey", "black", "white",
)  # fmt: skip

#: The emoji picker's palette: one code point each, name first.
EMOJI: Mapping[str, str] = MappingProxyType(
    {
        "apple": "\U0001f34e",
        "banana": "\U0001f34c",
        "cherry": "\U0001f352",
        "grapes": "\U0001f347",
        "rocket": "\U0001f680",
        "bicycle": "\U0001f6b2",
        "anchor": "\u2693",
        "umbrella": "\u2614",
        "cat": "\U0001f408",
        "dog": "\U0001f415",
        "owl": "\U0001f989",
        "fish": "\U0001f41f",
        "sun": "\U0001f31e",
        "moon": "\U0001f319",
        "star": "\u2b50",
        "snowflake": "\u2744",
        "guitar": "\U0001f3b8",
        "key": "\U0001f511",
        "gift": "\U0001f381",
        "house": "\U0001f3e0",
    }
)
_EMOJI_NAMES = {char: name for name, char in EMOJI.items()}

MAX_PICKS = 6
_PIN = re.compile(r"[0-9]{4,12}\Z")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){1,512}\Z")
_VARIATION_SELECTOR = "\ufe0f"


def _invalid(factor: Factor, rule: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{rule}", code="INVALID_ANSWER", field=factor.value)


def _picks(factor: Factor, names: list[str], palette: Mapping[str, object]) -> bytes:
    if not 1 <= len(names) <= MAX_PICKS or any(n not in palette for n in names):
        raise _invalid(factor, f"1 to {MAX_PICKS} picks from the {factor.value} palette")
    return ",".join(names).encode("ascii")


def canonical_answer(factor: Factor, answer: str) -> bytes:
    """The bytes a digest hashes for ``answer`` to ``factor`` (see the module docstring), or a
    400 naming the factor if the answer is not one this factor accepts."""
    if factor is Factor.PIN:
        if not _PIN.match(answer):
            raise _invalid(factor, "a PIN is 4 to 12 digits")
        return answer.encode("ascii")
    if factor is Factor.COLOUR:
        names = [n for n in re.split(r"[,\s]+", answer.lower()) if n]
        return _picks(factor, names, dict.fromkeys(COLOURS))
    if factor is Factor.EMOJI:
        chars = answer.replace(_VARIATION_SELECTOR, "")
        return _picks(factor, [_EMOJI_NAMES.get(c, "?") for c in chars], EMOJI)
    if factor is Factor.WORDS:
        words = re.split(" +", unicodedata.normalize("NFKC", answer).lower().strip(" "))
        if not 1 <= len(words) <= MAX_PICKS or not all(_is_word(w) for w in words):
            raise _invalid(factor, f"1 to {MAX_PICKS} words of letters or digits")
        return " ".join(words).encode("utf-8")
    if not _HEX.match(answer):
        raise _invalid(factor, "a capture template as hex")
    return bytes.fromhex(answer)


def _is_word(word: str) -> bool:
    return bool(word) and all(unicodedata.category(c)[0] in "LMN" for c in word)


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def factor_digest(user_id: str, factor: Factor, answer: str) -> bytes:
    """The digest a client sends for ``answer`` to ``factor`` of ``user_id``: the reference
    implementation of the protocol."""
    user = parse_user_id(user_id).encode("ascii")
    fields = (DOMAIN, user, factor.value.encode("ascii"), canonical_answer(factor, answer))
    return hashlib.sha256(b"".join(_field(f) for f in fields)).digest()


def factor_digests(user_id: str, answers: Mapping[Factor, str]) -> dict[str, str]:
    """A request body's ``factors`` object: each factor's digest, hex-encoded."""
    return {f.value: factor_digest(user_id, f, a).hex() for f, a in answers.items()}


def example_answer(factor: Factor, seed: str) -> str:
    """A valid answer to ``factor``, the same for the same ``seed`` and (but for a rare
    collision) another for another: for demos, tests and benchmarks, never for users."""
    h = hashlib.sha256(f"zeropay/example-answer/{factor.value}/{seed}".encode()).digest()
    if factor is Factor.PIN:
        return str(int.from_bytes(h[:8], "big") % 10**6).zfill(6)
    if factor is Factor.COLOUR:
        return f"{COLOURS[h[0] % len(COLOURS)]},{COLOURS[h[1] % len(COLOURS)]}"
    if factor is Factor.EMOJI:
        names = sorted(EMOJI)
        return EMOJI[names[h[0] % len(names)]] + EMOJI[names[h[1] % len(names)]]
    if factor is Factor.WORDS:
        return f"{h[:3].hex()} {h[3:6].hex()}"
    return h[:16].hex()
