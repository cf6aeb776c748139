"""Storage adapters behind the ports of :mod:`adapters.ports`.

- :mod:`adapters.memory`: everything in process memory; the embedded default and the fake
  for fast server tests (one instance only).
- :mod:`adapters.redis_store`: sessions, limits, tokens and the audit stream on Redis,
  standalone or Cluster (redis-py's asyncio clients).
- :mod:`adapters.postgres`: enrollments and the audit log on PostgreSQL (asyncpg; works through
  PgBouncer in transaction mode; optional read replica).
- :mod:`adapters.audit`: the background flusher from the stream to the log.

The Redis and PostgreSQL adapters are asyncio code; :mod:`adapters.bridge` makes them callable
from Trio through trio-asyncio, one bridge crossing per port call.
"""
