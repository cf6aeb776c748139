"""``python -m zeropay_server`` and the ``zeropay-server`` console script."""

from __future__ import annotations

import sys


def main() -> int:
    """Start the server (not built yet: the HTTP service is the next piece of work)."""
    print(
        "zeropay-server: the HTTP service is not built yet; the core (zeropay_proto) is.\n"
        "Run scripts/test to check it.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
