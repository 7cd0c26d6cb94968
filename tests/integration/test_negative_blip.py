"""Issue 11 item 2 against real Redis: a short 401 blip must not mean minutes of fallback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubUpstream, live_settings


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now, now + timedelta(hours=6)


async def test_a_401_blip_keeps_live_data_beside_a_short_marker_in_real_redis(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(
        stub_upstream.base_url,
        redis_server.url,
        forecast_ttl_s=1,
        local_ttl_s=0.05,
        negative_base_s=0.5,
        negative_ttl_s=600,
    )
    start, end = window()
    async with (
        carbon_stack(settings, FlatOffline()) as first,
        carbon_stack(settings, FlatOffline()) as second,
    ):
        assert (await first.provider.series("DE", start, end)).series.sources_between(start, end) == (
            "electricitymaps:forecast",
        )
        await asyncio.sleep(1.1)  # the forecast expires
        stub_upstream.mode = "auth"
        blip = await first.provider.series("DE", start, end)
        # Stale live data, not fallback, during the blip; the other "worker" obeys the marker.
        assert blip.series.sources_between(start, end) == ("electricitymaps:forecast(stale)",)
        during = await second.provider.series("DE", start, end)
        assert during.series.sources_between(start, end) == ("electricitymaps:forecast(stale)",)
        client: aioredis.Redis[bytes] = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = sorted(k.decode() for k in await client.keys("*"))
            good = [k for k in keys if k.endswith(":forecast:DE")]
            assert len(good) == 1
            assert good[0] + ":neg" in keys
            assert 0 < await client.pttl(good[0] + ":neg") <= 500  # seconds, not ten minutes
            stub_upstream.mode = "ok"
            await asyncio.sleep(0.6)  # the marker expires
            after = await second.provider.series("DE", start, end)
            assert after.series.sources_between(start, end) == ("electricitymaps:forecast",)
            assert good[0] + ":neg" not in {k.decode() for k in await client.keys("*")}
        finally:
            await client.aclose()  # type: ignore[attr-defined,unused-ignore]
