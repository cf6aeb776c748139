"""The ZeroPay merchant SDK.

from zeropay_client import ZeroPay, verify_receipt

zp = ZeroPay("https://zeropay.example", api_key="zpk_...")
session = zp.initiate_verification(user, amount=4250, currency="EUR", return_url=...)
# send the payer to zp.pay_page_url(session["session_id"]); when they come back:
status = zp.get_session_status(session["session_id"])
"""

from .client import OPERATIONS, AsyncZeroPay, Call, ZeroPay
from .digests import InvalidAnswer, canonical_answer, factor_digest, factor_digests
from .errors import (
    AuthenticationError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    VerificationFailed,
    ZeroPayError,
)
from .receipts import InvalidReceipt, verify_receipt
from .webhooks import InvalidWebhook, verify_webhook

__all__ = [
    "OPERATIONS",
    "AsyncZeroPay",
    "AuthenticationError",
    "Call",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidAnswer",
    "InvalidReceipt",
    "InvalidRequest",
    "InvalidWebhook",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
    "VerificationFailed",
    "ZeroPay",
    "ZeroPayError",
    "canonical_answer",
    "factor_digest",
    "factor_digests",
    "verify_receipt",
    "verify_webhook",
]
