"""The production topology on loopback, without Docker (``zeropay-server stack``,
``scripts/stack``), and the pieces of it the tests start.

- :mod:`.processes`: free ports, polling with a deadline, stopping by PID;
- :mod:`.postgres`: a private PostgreSQL server (initdb), its streaming replica, PgBouncer;
- :mod:`.redis_cluster`: cluster-enabled redis-server nodes and joining them;
- :mod:`.launcher`: ``up``, ``down`` and ``status`` of the whole: HAProxy in front of N API
  instances, a Redis Cluster of 3 masters and 3 replicas, a PostgreSQL primary with a streaming
  replica behind PgBouncer in transaction mode.
"""
