"""The factor digest protocol: a payer's answer becomes the digest the client sends, so the
service never sees an answer.

``SHA-256(LP("zeropay/factor-digest/v1") || LP(user uuid) || LP(factor) || LP(canonical
answer))``, where ``LP(x)`` is ``x`` after its length in two bytes, big-endian. The canonical
answer: a PIN is its 4-12 digits; colours and emoji are 1-6 palette names in order, joined by
commas (case, spacing and emoji variation selectors do not count); words are NFKC-normalised,
lower-cased and single-spaced; any other factor is its device template, given as hex. Every
client reproduces the service's published test vectors.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid

DOMAIN = b"zeropay/factor-digest/v1"
FACTORS = (
    "PIN", "COLOUR", "EMOJI", "WORDS", "PATTERN_MICRO", "PATTERN_NORMAL", "MOUSE_DRAW",
    "STYLUS_DRAW", "VOICE", "IMAGE_TAP", "BALANCE", "RHYTHM_TAP", "NFC", "FINGERPRINT", "FACE",
)  # fmt: skip
COLOURS = (
    "red", "orange", "amber", "yellow", "lime", "green", "teal", "cyan",
    "blue", "indigo", "violet", "pink", "brown", "grey", "black", "white",
)  # fmt: skip
EMOJI = {
    "apple": "\U0001f34e", "banana": "\U0001f34c", "cherry": "\U0001f352",
    "grapes": "\U0001f347", "rocket": "\U0001f680", "bicycle": "\U0001f6b2",
    "anchor": "\u2693", "umbrella": "\u2614", "cat": "\U0001f408", "dog": "\U0001f415",
    "owl": "\U0001f989", "fish": "\U0001f41f", "sun": "\U0001f31e", "moon": "\U0001f319",
    "star": "\u2b50", "snowflake": "\u2744", "guitar": "\U0001f3b8", "key": "\U0001f511",
    "gift": "\U0001f381", "house": "\U0001f3e0",
}  # fmt: skip
_EMOJI_NAMES = {char: name for name, char in EMOJI.items()}
MAX_PICKS = 6
_PIN = re.compile(r"[0-9]{4,12}\Z")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){1,512}\Z")


class InvalidAnswer(ValueError):
    """An answer its factor does not accept (the service would refuse its digest's
    enrollment for nothing: this is caught on the device)."""


def _picks(factor: str, names: list[str], palette: object) -> bytes:
    if not 1 <= len(names) <= MAX_PICKS or any(n not in palette for n in names):  # type: ignore[operator]
        raise InvalidAnswer(f"{factor}: 1 to {MAX_PICKS} picks from its palette")
    return ",".join(names).encode("ascii")


def canonical_answer(factor: str, answer: str) -> bytes:
    """The bytes a digest hashes for ``answer`` to ``factor``."""
    if factor not in FACTORS:
        raise InvalidAnswer(f"unknown factor {factor!r}")
    if factor == "PIN":
        if not _PIN.match(answer):
            raise InvalidAnswer("PIN: 4 to 12 digits")
        return answer.encode("ascii")
    if factor == "COLOUR":
        return _picks(factor, [n for n in re.split(r"[,\s]+", answer.lower()) if n], COLOURS)
    if factor == "EMOJI":
        chars = answer.replace("\ufe0f", "")
        return _picks(factor, [_EMOJI_NAMES.get(c, "?") for c in chars], EMOJI)
    if factor == "WORDS":
        words = re.split(" +", unicodedata.normalize("NFKC", answer).lower().strip(" "))
        if not 1 <= len(words) <= MAX_PICKS or not all(
            w and all(unicodedata.category(c)[0] in "LMN" for c in w) for w in words
        ):
            raise InvalidAnswer(f"WORDS: 1 to {MAX_PICKS} words of letters or digits")
        return " ".join(words).encode("utf-8")
    if not _HEX.match(answer):
        raise InvalidAnswer(f"{factor}: a capture template as hex")
    return bytes.fromhex(answer)


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def factor_digest(user_uuid: str, factor: str, answer: str) -> str:
    """The hex digest a client sends for ``answer`` to ``factor`` of the user."""
    user = str(uuid.UUID(user_uuid)).encode("ascii")  # canonical: lower case, hyphenated
    fields = (DOMAIN, user, factor.encode("ascii"), canonical_answer(factor, answer))
    return hashlib.sha256(b"".join(_lp(f) for f in fields)).hexdigest()


def factor_digests(user_uuid: str, answers: dict[str, str]) -> dict[str, str]:
    """A request's ``factors``: each factor's digest."""
    return {factor: factor_digest(user_uuid, factor, a) for factor, a in answers.items()}
