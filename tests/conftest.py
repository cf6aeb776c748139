"""Test-wide settings.

Hypothesis runs derandomized (the same examples on every run, so CI is deterministic) and
without deadlines (a deadline is a timing threshold, and this machine is shared and noisy).
``HYPOTHESIS_PROFILE=deep`` runs many more examples, with fresh randomness, by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "deep",
    derandomize=False,
    deadline=None,
    max_examples=5_000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
