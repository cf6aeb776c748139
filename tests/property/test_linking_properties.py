"""Dynamic linking over generated payments: one payment, one challenge; any change, another."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zeropay_proto.money import MAX_MINOR_UNITS
from zeropay_proto.passkeys import LinkedData

amounts = st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_MINOR_UNITS))
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
        return (
            x.session_id == y.session_id
            and x.amount == y.amount
            and (x.currency or "") == (y.currency or "")
            and (x.payee or "") == (y.payee or "")
            and x.attempt == y.attempt
        )

    assert (a.challenge() == b.challenge()) == same(a, b)
