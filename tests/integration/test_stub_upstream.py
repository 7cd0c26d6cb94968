"""The real carbon stack against a local stub upstream: coalescing, outages, breaker, secrets, health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.stack import CarbonStack
from carbon_optimizer.settings import Settings
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubUpstream, live_settings

pytestmark = pytest.mark.integration

ZONES = ["DE", "FR", "ES", "GB", "NO"]


@asynccontextmanager
async def running_stack(settings: Settings, offline: FlatOffline | None = None) -> AsyncIterator[CarbonStack]:
    async with carbon_stack(settings, offline or FlatOffline()) as stack:
        yield stack


def window(hours: int = 24) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now, now + timedelta(hours=hours)


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_fifty_concurrent_cold_requests_make_one_forecast_call_per_zone(
    stub_upstream: StubUpstream, redis_factory: Callable[[], RedisServer], backend: str
) -> None:
    stub_upstream.delay_s = 0.2
    redis_url = redis_factory().url if backend == "redis" else None
    async with running_stack(live_settings(stub_upstream.base_url, redis_url)) as stack:
        start, end = window()
        provider = stack.provider
        assert isinstance(provider, CarbonChain)
        results = await asyncio.gather(
            *(provider.series(ZONES[i % len(ZONES)], start, end) for i in range(50))
        )
        assert {stack.store.name if stack.store else None} == {backend}
    assert {zone: stub_upstream.count("forecast", zone) for zone in ZONES} == dict.fromkeys(ZONES, 1)
    assert all(r.warnings == () for r in results)
    assert {"+".join(r.series.sources_between(start, end)) for r in results} == {"electricitymaps:forecast"}
    assert stub_upstream.tokens == {"stub-token"}


async def test_upstream_down_costs_one_deadline_then_nothing(stub_upstream: StubUpstream) -> None:
    stub_upstream.mode = "hang"
    deadline_s = 0.3
    settings = live_settings(stub_upstream.base_url, None, breaker_failure_threshold=2)
    settings.electricitymaps.request_deadline_s = deadline_s
    async with running_stack(settings) as stack:
        start, end = window()
        closed: list[float] = []
        open_: list[float] = []
        for i, zone in enumerate(["DE", "FR", "ES", "GB", "NO", "PL", "IT", "AT"]):
            started = time.perf_counter()
            series = (await stack.provider.series(zone, start, end)).series
            elapsed = time.perf_counter() - started
            assert series.sources_between(start, end) == ("fallback:replay-2023",)
            (closed if i < 2 else open_).append(elapsed)
        health = stack.health()
    assert max(closed) <= deadline_s + 0.1
    assert max(open_) <= 0.02
    assert health["circuit"] == {"electricitymaps": "open"}
    assert health["status"] == "degraded"


async def test_stale_forecast_served_when_upstream_fails_after_expiry(stub_upstream: StubUpstream) -> None:
    settings = live_settings(stub_upstream.base_url, None, forecast_ttl_s=1)
    async with running_stack(settings) as stack:
        provider = stack.provider
        assert isinstance(provider, CarbonChain)
        start, end = window(6)
        first = await provider.series("DE", start, end)
        assert first.series.sources_between(start, end) == ("electricitymaps:forecast",)
        stub_upstream.mode = "error"
        await asyncio.sleep(1.1)
        later = await provider.series("DE", start, end)
    assert later.series.sources_between(start, end) == ("electricitymaps:forecast(stale)",)
    assert later.series.values.tolist() == first.series.values.tolist()
    assert len(later.warnings) == 1
    assert later.warnings[0].startswith("electricitymaps unavailable for DE; used cached data from ")


async def test_background_refresh_prefetches_configured_zones(stub_upstream: StubUpstream) -> None:
    settings = live_settings(stub_upstream.base_url, None, background_refresh=True)
    settings.electricitymaps.prefetch_zones = ["DE", "FR"]
    async with running_stack(settings) as stack:
        for _ in range(100):
            if stub_upstream.count("forecast") >= 2 and stub_upstream.count("history") >= 2:
                break
            await asyncio.sleep(0.02)
        cache = stack.health()["cache"]
        assert isinstance(cache, dict)
        assert cache["background_refresh"] is True
        before = sum(stub_upstream.calls.values())
        start, end = window()
        await stack.provider.series("DE", start, end)
        assert sum(stub_upstream.calls.values()) == before  # served from the prefetched entry
    assert {stub_upstream.count("forecast", z) for z in ("DE", "FR")} == {1}


async def test_no_key_means_offline_only_and_no_calls(stub_upstream: StubUpstream) -> None:
    settings = Settings(electricitymaps={"base_url": stub_upstream.base_url})
    offline = FlatOffline()
    async with running_stack(settings, offline) as stack:
        start, end = window()
        series = (await stack.provider.series("DE", start, end)).series
        assert stack.provider.offline is offline
        assert stack.provider.sources == ()
        assert stack.store is None
        assert await stack.ready()
        health = stack.health()
    assert series.sources_between(start, end) == ("fallback:replay-2023",)
    assert sum(stub_upstream.calls.values()) == 0
    assert health["mode"] == "offline"
    assert health["status"] == "ok"


async def test_health_shape_and_no_secrets_anywhere(
    stub_upstream: StubUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "live-token-9d8c7b6a"
    password = "redis-pass-1a2b3c"
    settings = live_settings(stub_upstream.base_url, f"redis://:{password}@127.0.0.1:1/0")
    settings.electricitymaps.api_key = SecretStr(token)
    texts: list[str] = []
    async with running_stack(settings) as stack:
        start, end = window()
        provider = stack.provider
        assert isinstance(provider, CarbonChain)
        result = await provider.series("DE", start, end)
        stub_upstream.mode = "error"
        other = await provider.series("FR", start, end)
        assert not await stack.ready()  # Redis unreachable
        health: dict[str, Any] = stack.health()
        texts += [repr(stack), str(health), *result.warnings, *other.warnings, caplog.text]
    assert stub_upstream.tokens == {token}
    assert all(token not in t and password not in t for t in texts)
    assert health["mode"] == "live"
    assert health["status"] == "degraded"  # Redis down
    assert health["cache"]["backend"] == "redis"
    assert health["cache"]["status"] == "degraded"
    em = health["sources"]["electricitymaps"]
    assert set(em) >= {"configured", "circuit", "last_success", "last_failure", "last_error"}
    assert em["last_success"] is not None
    assert em["last_error"].startswith("ProviderUnavailable")
    assert "DE" in health["data_age_s"]
    assert other.warnings == ("electricitymaps unavailable for FR; used fallback data",)
