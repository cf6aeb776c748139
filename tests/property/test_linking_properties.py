"""Dynamic linking over generated payments: one payment, one challenge; any change, another."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from zeropay_proto.passkeys import LinkedData

amounts = st.one_of(
    st.none(), st.decimals(min_value=0, max_value=10**12, places=4, allow_nan=False)
)
texts = st.one_of(st.none(), st.text(min_size=1, max_size=20))
payments = st.builds(
    LinkedData,
    session_id=st.text(min_size=1, max_size=43),
    amount=amounts,
    currency=texts,
    payee=texts,
    attempt=st.integers(1, 5),
)


@given(payments, payments)
def test_two_payments_link_alike_only_if_they_are_one(a: LinkedData, b: LinkedData) -> None:
    def same(x: LinkedData, y: LinkedData) -> bool:
        amounts_equal = (x.amount is None) == (y.amount is None) and (
            x.amount is None or y.amount is None or x.amount == y.amount
        )
        return (
            x.session_id == y.session_id
            and amounts_equal
            and (x.currency or "") == (y.currency or "")
            and (x.payee or "") == (y.payee or "")
            and x.attempt == y.attempt
        )

    assert (a.challenge() == b.challenge()) == same(a, b)


@given(payments, st.integers(1, 4))
def test_trailing_zeros_do_not_change_the_amount(payment: LinkedData, zeros: int) -> None:
    assume(payment.amount is not None)
    assert payment.amount is not None
    written = format(payment.amount, "f")
    padded = Decimal(written + ("" if "." in written else ".") + "0" * zeros)
    assert replace(payment, amount=padded).challenge() == payment.challenge()
