"""Exact money: amounts are integers in a currency's minor units, currencies are ISO 4217.

A payment of 42.50 EUR is ``4250`` with ``"EUR"``; 500 JPY is ``500`` with ``"JPY"``; 1.250
KWD is ``1250`` with ``"KWD"``. No binary float ever carries an amount, and an amount never
means anything without its currency, whose exponent (:data:`CURRENCY_EXPONENTS`) says how
many of its minor units make one major unit. Comparisons against policy thresholds (the
challenge's size, when a passkey is needed) are made in major units, exactly
(:func:`major_units`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from ._errors import LocalProtocolError


def _codes(exponent: int, codes: str) -> dict[str, int]:
    return dict.fromkeys(codes.split(), exponent)


#: The active ISO 4217 currencies (list one, December 2026) and their minor-unit exponents.
#: Funds codes that payments use (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW) are in; precious
#: metals, SDRs and testing codes (XAU, XDR, XTS, XXX, ...) are not currencies one pays in.
CURRENCY_EXPONENTS: Mapping[str, int] = MappingProxyType(
    {
        **_codes(0, "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"),
        **_codes(
            2,
            "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN "
            "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN "
            "ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD "
            "KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR "
            "MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON "
            "RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT "
            "TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG",
        ),
        **_codes(3, "BHD IQD JOD KWD LYD OMR TND"),
        **_codes(4, "CLF UYW"),
    }
)
#: The largest amount, in minor units: 15 digits, exact in every JSON parser (a JavaScript
#: number holds integers exactly up to 2**53, about 9.007e15).
MAX_MINOR_UNITS = 999_999_999_999_999


def currency_exponent(currency: str) -> int:
    """The number of decimals of ``currency``'s minor unit (EUR 2, JPY 0, KWD 3)."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise LocalProtocolError(f"{currency!r} is not an ISO 4217 currency") from None


def major_units(minor: int, currency: str) -> Decimal:
    """``minor`` units of ``currency`` in major units, exactly: ``4250`` EUR is 42.50."""
    return Decimal(minor).scaleb(-currency_exponent(currency))


def check_amount(minor: int | None, currency: str | None) -> None:
    """Raise :class:`LocalProtocolError` unless ``minor`` is a whole number of minor units
    in range, with a known currency (an amount without a currency means nothing)."""
    if currency is not None:
        currency_exponent(currency)
    if minor is None:
        return
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise LocalProtocolError("an amount is an integer of minor units")
    if not 0 <= minor <= MAX_MINOR_UNITS:
        raise LocalProtocolError("an amount is between 0 and MAX_MINOR_UNITS minor units")
    if currency is None:
        raise LocalProtocolError("an amount needs its currency")
