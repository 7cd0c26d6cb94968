"""A request for many zones reads that many keys at once: the pool queues them, never fails them.

redis-py's plain pool raises `MaxConnectionsError` at its bound (100) at once, so a 200-zone
request turned 100 of its reads into misses (upstream calls) and marked the store down for every
request of the worker. The store's pool is a blocking one bounded by `redis.max_connections`.
"""

from __future__ import annotations

import asyncio

import pytest

from carbon_optimizer.providers.store import RedisStore
from carbon_optimizer.settings import RedisSettings
from tests.support.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("bound", [8, 64])
async def test_more_concurrent_reads_than_connections_all_answer(
    redis_server: RedisServer, bound: int
) -> None:
    store = RedisStore.from_settings(
        RedisSettings(url=redis_server.url, max_connections=bound, socket_timeout_s=5.0)
    )
    try:
        await asyncio.gather(*(store.set(f"zone:{i}", str(i).encode(), 60) for i in range(300)))
        got = await asyncio.gather(*(store.get(f"zone:{i}") for i in range(300)))
        assert got == [str(i).encode() for i in range(300)]
        assert store.healthy
        assert store.last_error is None
    finally:
        await store.aclose()
