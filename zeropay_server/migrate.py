"""``zeropay-server migrate``: apply pending PostgreSQL migrations and create partitions."""

from __future__ import annotations

import sys

import trio
import trio_asyncio

from adapters.bridge import aio
from adapters.errors import DependencyUnavailable
from adapters.postgres import PostgresStore

from .config import Settings


async def _migrate(url: str) -> list[str]:
    async with trio_asyncio.open_loop():
        store = await aio(PostgresStore.connect)(url, min_size=1, max_size=1)
        try:
            applied: list[str] = await aio(store.migrate)()
        finally:
            await aio(store.aclose)()
    return applied


def migrate(settings: Settings) -> int:
    if settings.database_url is None:
        print("zeropay-server migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        applied = trio.run(_migrate, settings.database_url)
    except DependencyUnavailable:
        print("zeropay-server migrate: PostgreSQL is unavailable", file=sys.stderr)
        return 1
    print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0
