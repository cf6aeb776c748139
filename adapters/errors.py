"""The one error adapters raise for an unreachable store."""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """Redis or PostgreSQL could not be reached or did not answer in time.

    The server answers 503 with ``Retry-After``: it fails closed, never open. The message names
    the dependency and never carries data (keys, values or queries).
    """

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency
