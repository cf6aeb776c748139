"""The factor catalogue and the validation of factor digests.

The catalogue is the original service's: fifteen factor names in four categories. A client
hashes each answer on the device and sends only a 32-byte digest, hex-encoded; the service
never sees an answer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from ._errors import RemoteProtocolError

#: Length of one client-side factor digest (SHA-256 output), SPEC section 4.
DIGEST_BYTES = 32

#: Enrollment bounds, SPEC section 4: at least three factors (so that a two- or three-factor
#: challenge can always be drawn), at most the whole catalogue.
MIN_ENROLLED_FACTORS = 3
MAX_ENROLLED_FACTORS = 15


class Category(enum.Enum):
    """What kind of evidence a factor is (PSD2 RTS article 4: knowledge, possession,
    inherence; "behaviour" is the original service's fourth class)."""

    KNOWLEDGE = "knowledge"
    BEHAVIOUR = "behaviour"
    POSSESSION = "possession"
    BIOMETRIC = "biometric"


class Factor(enum.Enum):
    """One enrollable factor. The value is the wire name used in JSON bodies."""

    PIN = "PIN"
    COLOUR = "COLOUR"
    EMOJI = "EMOJI"
    WORDS = "WORDS"
    PATTERN_MICRO = "PATTERN_MICRO"
    PATTERN_NORMAL = "PATTERN_NORMAL"
    MOUSE_DRAW = "MOUSE_DRAW"
    STYLUS_DRAW = "STYLUS_DRAW"
    VOICE = "VOICE"
    IMAGE_TAP = "IMAGE_TAP"
    BALANCE = "BALANCE"
    RHYTHM_TAP = "RHYTHM_TAP"
    NFC = "NFC"
    FINGERPRINT = "FINGERPRINT"
    FACE = "FACE"

    @property
    def category(self) -> Category:
        """The factor's category."""
        return CATEGORIES[self]

    @property
    def index(self) -> int:
        """A stable small integer for compact encodings (catalogue order, 0-14)."""
        return CATALOGUE.index(self)


#: Catalogue order. Encodings depend on it: append new factors, never reorder.
CATALOGUE: tuple[Factor, ...] = tuple(Factor)

CATEGORIES: Mapping[Factor, Category] = MappingProxyType(
    {
        Factor.PIN: Category.KNOWLEDGE,
        Factor.COLOUR: Category.KNOWLEDGE,
        Factor.EMOJI: Category.KNOWLEDGE,
        Factor.WORDS: Category.KNOWLEDGE,
        Factor.PATTERN_MICRO: Category.BEHAVIOUR,
        Factor.PATTERN_NORMAL: Category.BEHAVIOUR,
        Factor.MOUSE_DRAW: Category.BEHAVIOUR,
        Factor.STYLUS_DRAW: Category.BEHAVIOUR,
        Factor.IMAGE_TAP: Category.BEHAVIOUR,
        Factor.BALANCE: Category.BEHAVIOUR,
        Factor.RHYTHM_TAP: Category.BEHAVIOUR,
        Factor.VOICE: Category.BIOMETRIC,
        Factor.FINGERPRINT: Category.BIOMETRIC,
        Factor.FACE: Category.BIOMETRIC,
        Factor.NFC: Category.POSSESSION,
    }
)

_BY_NAME: Mapping[str, Factor] = MappingProxyType({f.value: f for f in Factor})
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_factor_name(name: object, *, field: str) -> Factor:
    """Map a wire name to a :class:`Factor` or raise a 400 naming ``field``."""
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]
    raise RemoteProtocolError(
        "unknown factor name; expected one of the catalogue's names",
        code="UNKNOWN_FACTOR",
        field=field,
    )


def parse_digest(value: object, *, field: str) -> bytes:
    """Decode a 64-hex-digit digest or raise a 400 naming ``field``.

    The message never repeats the value: a digest is a secret.
    """
    if not isinstance(value, str) or len(value) != 2 * DIGEST_BYTES or not _HEX.issuperset(value):
        raise RemoteProtocolError(
            f"must be a {DIGEST_BYTES}-byte digest as {2 * DIGEST_BYTES} hex digits",
            code="INVALID_DIGEST",
            field=field,
        )
    return bytes.fromhex(value)


def parse_factor_digests(
    value: object, *, field: str, minimum: int, maximum: int
) -> Mapping[Factor, bytes]:
    """Parse ``{NAME: 64-hex, ...}`` with between ``minimum`` and ``maximum`` entries.

    JSON objects cannot repeat a key once decoded, so "distinct" is checked by the JSON
    decoder hook in :mod:`zeropay_proto.requests`; here names must be known and digests
    well-formed.
    """
    if not isinstance(value, dict):
        raise RemoteProtocolError("must be an object mapping factor names to digests", field=field)
    if not minimum <= len(value) <= maximum:
        raise RemoteProtocolError(
            f"must hold between {minimum} and {maximum} factors",
            code="FACTOR_COUNT",
            field=field,
        )
    parsed: dict[Factor, bytes] = {}
    for name, digest in value.items():
        factor = parse_factor_name(name, field=field)
        parsed[factor] = parse_digest(digest, field=f"{field}.{factor.value}")
    return MappingProxyType(parsed)
