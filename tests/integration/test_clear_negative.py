"""Issue 11 item 2, the operators' lever: clear a zone's negative state for every worker (real Redis)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from carbon_optimizer.api.security import client_id_for
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.cli import main
from carbon_optimizer.settings import Settings
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubUpstream, live_settings

ADMIN_KEY = "admin-key-0123456789abcdef"
USER_KEY = "user-key-0123456789abcdefgh"


def window(days_back: float = 0.0) -> tuple[datetime, datetime]:
    start = datetime.now(UTC) - timedelta(days=days_back)
    return start, start + timedelta(hours=6)


async def neg_keys(url: str) -> list[str]:
    client: aioredis.Redis[bytes] = aioredis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in await client.keys("*:neg"))
    finally:
        await client.aclose()  # type: ignore[attr-defined,unused-ignore]


def blip_settings(stub: StubUpstream, redis: RedisServer) -> Settings:
    # Long negatives (a minute) so only the lever can end them within the test.
    return live_settings(
        stub.base_url, redis.url, local_ttl_s=0.05, negative_base_s=60, negative_ttl_s=600, forecast_ttl_s=60
    )


async def test_clearing_a_zone_ends_its_negatives_for_every_worker_and_leaves_other_zones(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = blip_settings(stub_upstream, redis_server)
    start, end = window()
    past_start, past_end = window(days_back=5)
    async with (
        carbon_stack(settings, FlatOffline()) as first,
        carbon_stack(settings, FlatOffline()) as second,
    ):
        stub_upstream.mode = "auth"
        for zone in ("DE", "FR"):
            answer = await first.provider.series(zone, start, end)
            assert answer.series.sources_between(start, end) == ("fallback:replay-2023",)
        # A past window: the 401 leaves a marker under a past-range chunk key too.
        await first.provider.series("DE", past_start, past_end)
        before = await neg_keys(redis_server.url)
        assert any(":forecast:DE:neg" in k for k in before)
        assert any(":past-range:DE:" in k for k in before)
        stub_upstream.mode = "ok"
        stuck = await second.provider.series("DE", start, end)  # the other worker obeys the marker
        assert stuck.series.sources_between(start, end) == ("fallback:replay-2023",)

        cleared = await first.provider.clear_negative("DE")

        assert cleared["electricitymaps"] == sum(1 for k in before if ":DE:" in k or k.endswith(":DE:neg"))
        after = await neg_keys(redis_server.url)
        assert not [k for k in after if ":DE" in k]
        assert [k for k in after if ":FR" in k] == [k for k in before if ":FR" in k]  # FR untouched
        await asyncio.sleep(0.06)  # the other worker's local tier (local_ttl_s)
        live = await second.provider.series("DE", start, end)
        assert live.series.sources_between(start, end) == ("electricitymaps:forecast",)
        still = await second.provider.series("FR", start, end)
        assert still.series.sources_between(start, end) == ("fallback:replay-2023",)


async def test_admin_route_needs_an_admin_key_and_clears_the_shared_store(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    base = blip_settings(stub_upstream, redis_server)
    settings = base.model_copy(
        update={
            "api_keys": [SecretStr(ADMIN_KEY), SecretStr(USER_KEY)],
            "admin_client_ids": [client_id_for(ADMIN_KEY)],
        }
    )
    await seed_marker(settings, stub_upstream, "DE")
    app = create_app(settings, AppOverrides())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert any(k.endswith(":DE:neg") for k in await neg_keys(redis_server.url))
            url = "/v1/admin/zones/DE/clear-negative"
            assert (await client.post(url)).status_code == 401
            refused = await client.post(url, headers={"x-api-key": USER_KEY})
            assert refused.status_code == 403
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert any(k.endswith(":DE:neg") for k in await neg_keys(redis_server.url))
            bad = await client.post("/v1/admin/zones/D%20E/clear-negative", headers={"x-api-key": ADMIN_KEY})
            assert bad.status_code == 422
            done = await client.post(url, headers={"x-api-key": ADMIN_KEY})
            assert done.status_code == 200, done.text
            assert done.json()["zone"] == "DE"
            assert done.json()["cleared"]["electricitymaps"] >= 1
            assert not [k for k in await neg_keys(redis_server.url) if ":DE" in k]


async def seed_marker(settings: Settings, stub: StubUpstream, zone: str) -> None:
    stub.mode = "auth"
    start, end = window()
    async with carbon_stack(settings, FlatOffline()) as stack:
        await stack.provider.series(zone, start, end)
    stub.mode = "ok"


def test_cli_clear_negative_deletes_the_zones_markers(
    redis_server: RedisServer,
    stub_upstream: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    settings = blip_settings(stub_upstream, redis_server)
    asyncio.run(seed_marker(settings, stub_upstream, "DE"))
    assert any(k.endswith(":DE:neg") for k in asyncio.run(neg_keys(redis_server.url)))
    monkeypatch.chdir(str(tmp_path))  # no .env of the developer's
    monkeypatch.setenv("CARBON_OPTIMIZER_REDIS__URL", redis_server.url)
    monkeypatch.setenv("CARBON_OPTIMIZER_ELECTRICITYMAPS__API_KEY", "stub-token")
    monkeypatch.setenv("CARBON_OPTIMIZER_ELECTRICITYMAPS__BASE_URL", stub_upstream.base_url)
    out, err = io.StringIO(), io.StringIO()

    code = main(["cache", "clear-negative", "DE"], out, err)

    assert code == 0, err.getvalue()
    assert "DE electricitymaps: 1 negative marker(s) deleted" in out.getvalue()
    assert not [k for k in asyncio.run(neg_keys(redis_server.url)) if ":DE" in k]
    assert main(["cache", "clear-negative", "not a zone"], out, err) == 2


def test_cli_clear_negative_without_redis_says_there_is_nothing_shared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.delenv("CARBON_OPTIMIZER_REDIS__URL", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["cache", "clear-negative", "DE"], out, err) == 0
    assert "no shared store configured" in err.getvalue()
