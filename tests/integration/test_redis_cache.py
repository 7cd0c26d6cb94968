"""The carbon cache on a real redis-server: hits, expiry, cross-process single-flight, Redis failures.

No request may fail while Redis is killed, restarted or stalled (SIGSTOP): the local tier and the
upstream keep answering, /health says degraded, and recovery needs no intervention.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from carbon_optimizer.providers.carbon.stack import CarbonStack
from carbon_optimizer.providers.store import RedisStore
from carbon_optimizer.settings import Settings
from tests.integration.conftest import run_stack_workers
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubUpstream, live_settings

pytestmark = pytest.mark.integration


@asynccontextmanager
async def running_stack(settings: Settings) -> AsyncIterator[CarbonStack]:
    async with carbon_stack(settings, FlatOffline()) as stack:
        yield stack


async def keys_in(server: RedisServer) -> list[bytes]:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(server.url)
    try:
        return sorted(await client.keys("*"))
    finally:
        await client.aclose()  # type: ignore[attr-defined,unused-ignore]


def cache_health(stack: CarbonStack) -> dict[str, object]:
    cache = stack.health()["cache"]
    assert isinstance(cache, dict)
    return cache


def window(hours: int = 12) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now, now + timedelta(hours=hours)


async def test_hit_miss_and_expiry_shared_through_redis(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url, forecast_ttl_s=1, stale_max_age_s=60)
    start, end = window()
    async with running_stack(settings) as first, running_stack(settings) as second:
        await first.provider.series("DE", start, end)  # miss: upstream
        await first.provider.series("DE", start, end)  # local tier
        await second.provider.series("DE", start, end)  # other "worker": Redis hit
        assert stub_upstream.count("forecast", "DE") == 1
        keys = await keys_in(redis_server)
        assert keys == [b"co:v1:carbon:v1:lifecycle-h72:forecast:DE"]
        client: aioredis.Redis[bytes] = aioredis.Redis.from_url(redis_server.url)
        ttl_ms = await client.pttl(keys[0])
        await client.aclose()  # type: ignore[attr-defined,unused-ignore]
        assert 55_000 < ttl_ms <= 61_000  # fresh 1 s + 60 s stale window
        await asyncio.sleep(1.1)
        series = (await second.provider.series("DE", start, end)).series  # expired: upstream again
        assert stub_upstream.count("forecast", "DE") == 2
        assert series.sources_between(start, end) == ("electricitymaps:forecast",)
        assert await first.ready()
        assert cache_health(first)["backend"] == "redis"
        assert cache_health(first)["status"] == "ok"


def test_single_flight_across_two_processes(redis_server: RedisServer, stub_upstream: StubUpstream) -> None:
    stub_upstream.delay_s = 0.3
    zones = ["DE", "FR", "ES", "GB"]
    config = {
        "base_url": stub_upstream.base_url,
        "redis_url": redis_server.url,
        "zones": zones,
        "requests": 20,
        "start_at": time.time() + 5.0,  # both fire together once imported (slow under load)
        # The waiter polls Redis for the other process's answer; under a loaded suite a 0.25 s
        # socket timeout read as "Redis down" and that worker served fallback data (a different
        # scenario, covered by the fault tests): here Redis is slow, not gone.
        "redis_socket_timeout_s": 2.0,
    }
    reports = run_stack_workers([config, config])
    assert all(report["errors"] == [] for report in reports)
    assert {label for report in reports for label in report["labels"]} == {"electricitymaps:forecast"}
    assert {zone: stub_upstream.count("forecast", zone) for zone in zones} == dict.fromkeys(zones, 1)


async def test_redis_killed_mid_run_and_restarted(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url, local_ttl_s=0.05)
    zones = ["DE", "FR", "ES"]
    start, end = window()
    async with running_stack(settings) as stack:
        store = stack.store
        assert isinstance(store, RedisStore)

        async def round_of_requests() -> None:
            results = await asyncio.gather(*(stack.provider.series(z, start, end) for z in zones * 5))
            assert all(r.series.sources_between(start, end) == ("electricitymaps:forecast",) for r in results)

        await round_of_requests()
        redis_server.kill()
        for _ in range(10):  # every request still answered: local tier, then upstream
            await round_of_requests()
            await asyncio.sleep(0.02)
        assert not store.healthy
        assert stack.health()["status"] == "degraded"
        assert not await stack.ready()

        redis_server.start()  # same port, empty
        await asyncio.sleep(0.25)  # > retry_after_failure_s
        for _ in range(3):
            await round_of_requests()
            await asyncio.sleep(0.06)
        assert store.healthy
        assert await stack.ready()
        assert stack.health()["status"] == "ok"
        # Local copies still fresh are served but never written back into the emptied store:
        # a flushed or restarted Redis stays empty of old decisions until the next real fetch.
        assert await keys_in(redis_server) == []


async def test_stalled_redis_does_not_fail_or_stall_requests(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url, local_ttl_s=0.05)
    settings.redis.socket_timeout_s = 0.1
    settings.redis.connect_timeout_s = 0.1
    start, end = window()
    async with running_stack(settings) as stack:
        await stack.provider.series("DE", start, end)
        redis_server.stall()
        try:
            latencies = []
            for zone in ["DE", "FR", "DE", "ES", "FR", "DE"]:
                await asyncio.sleep(0.06)
                began = time.perf_counter()
                series = (await stack.provider.series(zone, start, end)).series
                latencies.append(time.perf_counter() - began)
                assert series.sources_between(start, end) == ("electricitymaps:forecast",)
            assert cache_health(stack)["status"] == "degraded"
            # at most one bounded Redis timeout per retry window, never a hang
            assert max(latencies) < 0.5
            assert sorted(latencies)[len(latencies) // 2] < 0.25
        finally:
            redis_server.resume()
        await asyncio.sleep(0.25)
        await stack.provider.series("GB", start, end)
        await asyncio.sleep(0.06)
        await stack.provider.series("GB", start, end)
        assert cache_health(stack)["status"] == "ok"
