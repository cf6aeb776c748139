"""ZeroPay's HTTP service: Quart-Trio on Hypercorn, driving :mod:`zeropay_proto`."""
