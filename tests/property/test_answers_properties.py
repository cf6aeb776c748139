"""Properties of the client digest protocol over generated answers and users.

- what does not count (case, spacing, variation selectors, NFKC equivalents) gives the same
  digest;
- what counts (the user, the factor, the answer, the order of picks) gives another.
"""

from __future__ import annotations

import unicodedata

from hypothesis import assume, given
from hypothesis import strategies as st

from zeropay_proto import Factor
from zeropay_proto.answers import COLOURS, EMOJI, MAX_PICKS, canonical_answer, factor_digest

users = st.uuids(version=4).map(str)
pins = st.from_regex(r"[0-9]{4,12}", fullmatch=True)
colour_picks = st.lists(st.sampled_from(COLOURS), min_size=1, max_size=MAX_PICKS)
emoji_picks = st.lists(st.sampled_from(sorted(EMOJI)), min_size=1, max_size=MAX_PICKS)


def _letters_and_digits(word: str) -> bool:
    """Whether the word stays letters, marks and digits once normalised (U+0140, an L with a
    middle dot, becomes "l" and a punctuation mark)."""
    normal = unicodedata.normalize("NFKC", word).lower()
    return all(unicodedata.category(c)[0] in "LMN" for c in normal)


def _same(a: str, b: str) -> bool:
    return unicodedata.normalize("NFKC", a).lower() == unicodedata.normalize("NFKC", b).lower()


words = st.lists(
    st.text(st.characters(categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8).filter(
        _letters_and_digits
    ),
    min_size=1,
    max_size=MAX_PICKS,
)


@given(users, users, pins)
def test_one_pin_of_two_users_makes_two_digests(a: str, b: str, pin: str) -> None:
    assume(a != b)
    assert factor_digest(a, Factor.PIN, pin) != factor_digest(b, Factor.PIN, pin)


@given(users, pins, pins)
def test_two_pins_make_two_digests(user: str, p: str, q: str) -> None:
    assume(p != q)
    assert factor_digest(user, Factor.PIN, p) != factor_digest(user, Factor.PIN, q)


@given(users, st.binary(min_size=1, max_size=64))
def test_one_template_for_two_factors_makes_two_digests(user: str, template: bytes) -> None:
    digests = {factor_digest(user, f, template.hex()) for f in (Factor.FACE, Factor.NFC)}
    assert len(digests) == 2


@given(users, colour_picks, st.sampled_from([",", " ", " , ", ",,"]))
def test_colour_case_and_separators_do_not_count(user: str, picks: list[str], sep: str) -> None:
    typed = sep.join(p.upper() for p in picks)
    assert factor_digest(user, Factor.COLOUR, typed) == factor_digest(
        user, Factor.COLOUR, ",".join(picks)
    )


@given(users, colour_picks)
def test_the_order_of_picks_counts(user: str, picks: list[str]) -> None:
    assume(picks != picks[::-1])
    assert factor_digest(user, Factor.COLOUR, ",".join(picks)) != factor_digest(
        user, Factor.COLOUR, ",".join(picks[::-1])
    )


@given(users, emoji_picks, st.lists(st.booleans(), min_size=MAX_PICKS, max_size=MAX_PICKS))
def test_variation_selectors_do_not_count(user: str, picks: list[str], vs: list[bool]) -> None:
    plain = "".join(EMOJI[p] for p in picks)
    dressed = "".join(EMOJI[p] + ("\ufe0f" if v else "") for p, v in zip(picks, vs, strict=False))
    assert factor_digest(user, Factor.EMOJI, plain) == factor_digest(user, Factor.EMOJI, dressed)
    assert canonical_answer(Factor.EMOJI, plain) == ",".join(picks).encode()


@given(users, words, st.integers(1, 3))
def test_words_spacing_case_and_normal_form_do_not_count(
    user: str, chosen: list[str], spaces: int
) -> None:
    # Case counts where a letter's upper case lowers to another one (U+0131, dotless i).
    assume(all(_same(w.upper(), w) for w in chosen))
    canonical = canonical_answer(Factor.WORDS, " ".join(chosen))
    typed = (" " * spaces).join(unicodedata.normalize("NFD", w.upper()) for w in chosen)
    assume(all(w for w in typed.split(" ")))
    assert canonical_answer(Factor.WORDS, f" {typed} ") == canonical
    assert factor_digest(user, Factor.WORDS, typed) == factor_digest(
        user, Factor.WORDS, " ".join(chosen)
    )
