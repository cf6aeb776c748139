"""What a Redis error means: "the store cannot serve us now", or a bug.

A restarted, failed-over, full or paused Redis does not only drop connections. It answers, with
error replies that redis-py raises as ``ResponseError`` subclasses, never as
``ConnectionError`` (docs/stack.md, "Redis errors that are not connection errors"):

============== =========================================== ==================================
reply          when                                        what the service does
============== =========================================== ==================================
``OOM``        ``maxmemory`` reached (noeviction)          503: writes fail until memory frees
``READONLY``   the node was demoted (``REPLICAOF``,        503 until the client reaches the
               a failover)                                 new master
``LOADING``    the node is loading its dataset             503 until it has loaded
``CLUSTERDOWN``, ``MASTERDOWN``, ``TRYAGAIN``,             503: the cluster is re-forming
``MOVED``/``ASK`` left over once redis-py's own
redirection gave up
``BUSY``       a script is running too long                503
``NOGROUP``    the audit streams vanished (restart,        the adapter recreates the groups
               ``FLUSHALL``)
============== =========================================== ==================================

Every one of them is the same fact to a request: the dependency is unavailable, so it answers
a fast 503 with ``Retry-After`` and never a 500 (:func:`is_unavailable`).
"""

from __future__ import annotations

import redis.exceptions as rexc

#: Failures of transport: the store is unreachable or did not answer.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes BusyLoadingError (LOADING) and MaxConnectionsError
    rexc.TimeoutError,
    rexc.ClusterError,  # includes ClusterDownError (CLUSTERDOWN, MASTERDOWN)
    rexc.RedisClusterException,  # slot not covered while the cluster re-forms
    OSError,
)

#: Error replies that mean the server cannot serve this command now, whatever the command.
_UNAVAILABLE_REPLIES: tuple[type[BaseException], ...] = (
    rexc.OutOfMemoryError,
    rexc.ReadOnlyError,
    rexc.TryAgainError,
    rexc.AskError,  # includes MovedError
)
#: The same replies as first words of a message (redis-py maps some only by class, and a
#: reply from inside a script may reach us as a plain ResponseError).
_UNAVAILABLE_CODES = frozenset(
    {"OOM", "READONLY", "LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "MOVED", "ASK", "BUSY"}
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis cannot serve us now" (answer 503), not a bug."""
    if isinstance(exc, TRANSPORT_ERRORS + _UNAVAILABLE_REPLIES):
        return True
    if isinstance(exc, rexc.ResponseError):
        words = str(exc).split(maxsplit=1)
        return bool(words) and words[0] in _UNAVAILABLE_CODES
    return False


def is_missing_group(exc: BaseException) -> bool:
    """Whether ``exc`` is ``NOGROUP``: the stream or its consumer group is gone."""
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith("NOGROUP")
