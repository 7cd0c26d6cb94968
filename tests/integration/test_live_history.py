"""The forecaster's live history on a real redis-server against the local Electricity Maps stub.

Stacks are composed as the app composes them (`build_carbon_stack`, a `RedisStore` each, so each
is another worker); the stub counts upstream calls. Shown: the 9-week history is fetched once
(also when two workers fit the same zone at once), a later refit extends it with the 24 h
`history` call only, and another worker reuses both the fit and the stored history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis

from carbon_optimizer.providers.carbon.base import SeriesKind, SeriesRequest
from carbon_optimizer.providers.carbon.live_history import KEEP_HOURS, STORED_HOURS, decode
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import CarbonStack
from carbon_optimizer.settings import Settings
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import StubUpstream, hour_floor, live_settings, stub_intensity

pytestmark = pytest.mark.integration

OFFLINE = OfflineCarbonProvider()
REQUEST = SeriesRequest(SeriesKind.FORECAST, "DE")
HISTORY_KEY = "co:v1:carbon:v1:forecast-history-electricitymaps:DE"
FIT_KEY = "co:v1:carbon:v1:forecast-profile-ar:forecast:DE"


def worker(settings: Settings, clock: Callable[[], datetime]) -> AbstractAsyncContextManager[CarbonStack]:
    """One worker's carbon stack (its own Redis client and HTTP pool), closed at the end."""
    return carbon_stack(settings, OFFLINE, clock=clock)


async def fit(stack: CarbonStack) -> str:
    assert stack.forecast is not None
    await stack.forecast.fetch(REQUEST)
    band = stack.forecast.band("DE")
    assert band is not None
    return band.history


async def redis_get(server: RedisServer, key: str) -> bytes | None:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(server.url)
    try:
        return await client.get(key)
    finally:
        await client.aclose()  # type: ignore[attr-defined,unused-ignore]


async def redis_delete(server: RedisServer, key: str) -> None:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(server.url)
    try:
        await client.delete(key)
    finally:
        await client.aclose()  # type: ignore[attr-defined,unused-ignore]


async def test_history_is_fetched_once_extended_incrementally_and_shared_by_workers(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url)
    now = datetime.now(UTC)
    earlier = now - timedelta(hours=3)
    async with worker(settings, lambda: earlier) as first, worker(settings, lambda: earlier) as second:
        # Two workers fit the same zone at once on an empty Redis: one backfill between them.
        kinds = await asyncio.gather(fit(first), fit(second))
    assert list(kinds) == ["live", "live"]
    assert stub_upstream.count("past-range", "DE") == 7  # 9 weeks + 6 h in ≤ 10-day chunks
    assert stub_upstream.count("history", "DE") == 0
    data = await redis_get(redis_server, HISTORY_KEY)
    assert data is not None
    stored = decode(data)
    assert stored is not None
    assert stored.end == hour_floor(earlier)
    assert len(stored.values) == STORED_HOURS
    assert np.isfinite(stored.values).all()
    assert b"stub-token" not in data

    # An hour-later worker finds the fit expired: it extends the stored history by 3 h with one
    # 24 h `history` call, no past-range; yet another worker then reuses everything.
    await redis_delete(redis_server, FIT_KEY)
    async with worker(settings, lambda: now) as third:
        assert await fit(third) == "live"
    assert stub_upstream.count("past-range", "DE") == 7
    assert stub_upstream.count("history", "DE") == 1
    data = await redis_get(redis_server, HISTORY_KEY)
    assert data is not None
    extended = decode(data)
    assert extended is not None
    assert extended.end == hour_floor(now)
    last = hour_floor(now) - timedelta(hours=1)
    assert extended.values[-1] == stub_intensity("DE", last)
    async with worker(settings, lambda: now) as fourth:
        assert await fit(fourth) == "live"
    assert (stub_upstream.count("past-range", "DE"), stub_upstream.count("history", "DE")) == (7, 1)


async def test_an_upstream_outage_during_the_backfill_fits_on_the_replay(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    stub_upstream.mode = "error"
    settings = live_settings(stub_upstream.base_url, redis_server.url)
    now = datetime.now(UTC)
    async with worker(settings, lambda: now) as stack:
        assert await fit(stack) == "replay"
        # The answer path still works: the chain paints our (replay-fitted) forecast, no error.
        assert stack.forecast is not None
        start = hour_floor(now) + timedelta(days=4)
        result = await stack.provider.series("DE", start, start + timedelta(hours=6))
    assert [r.label for r in result.series.runs] == ["forecast:profile-ar"]
    assert stub_upstream.count("past-range", "DE") <= 7  # the breaker may stop the rest


async def test_two_workers_updating_one_history_at_once_fetch_it_once(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    # Below the forecast entry's own single flight: the history update's lock alone.
    settings = live_settings(stub_upstream.base_url, redis_server.url)
    now = datetime.now(UTC)
    end = hour_floor(now)
    async with worker(settings, lambda: now) as first, worker(settings, lambda: now) as second:
        histories = []
        for stack in (first, second):
            assert stack.forecast is not None
            history = stack.forecast.cache.source._history  # type: ignore[attr-defined]
            histories.append(history)
        start = end - timedelta(hours=KEEP_HOURS)
        a, b = await asyncio.gather(*(h("DE", start, end) for h in histories))
    assert stub_upstream.count("past-range", "DE") == 7
    assert [r.label for r in a.runs] == ["electricitymaps:history"]
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))
