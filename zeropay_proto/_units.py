"""Time units shared by every module that stores an instant."""

from __future__ import annotations

import math


def epoch_ms(now: float) -> int:
    """Whole milliseconds since the epoch, the unit of every stored instant.

    Stored instants are integers so that the Redis Lua scripts, which see the same integers,
    compute exactly what the core computes.
    """
    return math.floor(now * 1000)
