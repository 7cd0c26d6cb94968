"""Issue 11 item 6: one client cannot burn the upstream quota (real HTTP stub, real Redis).

The issue's numbers: one cold request over 100 zones made 200 upstream calls (600 while the
upstream answered 500), and every distinct past window one more. Each test measures the call
count with the bound off (the old behaviour, same run) and on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr

from carbon_optimizer.api.security import client_id_for
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.providers.budget import ClientMinuteBudget, RequestBudget, request_budget
from carbon_optimizer.providers.carbon.chain import past_chunks
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.store import MemoryStore, RedisStore
from carbon_optimizer.settings import RedisSettings, Settings
from tests.support.redis import RedisServer
from tests.support.stacks import carbon_stack
from tests.support.stub_upstream import FlatOffline, StubUpstream, live_settings

KEY = "budget-test-key-0123456789abcdef"
ZONES = sorted({z.zone for z in load_region_catalog().zones()})[:200]  # the most a request may list


def settings_for(
    stub: StubUpstream, redis: RedisServer, *, enabled: bool, retries: int = 2, live_history: bool = True
) -> Settings:
    base = live_settings(stub.base_url, redis.url)
    # Our forecaster's live history adds its backfill (7 past-range calls per hourly zone) to a
    # cold request; the counts of the old behaviour are measured without it.
    chain = base.carbon_chain.model_copy(update={"forecast_live_history": live_history})
    em = base.electricitymaps.model_copy(update={"max_retries": retries, "backoff_base_s": 0.0})
    budget = base.upstream_budget.model_copy(update={"enabled": enabled})
    # The breaker would cut the erring waves short at a timing-dependent point; keep it closed so
    # the counts are exact (the issue measured 600 with it).
    cache = base.cache.model_copy(update={"breaker_failure_threshold": 100_000})
    return base.model_copy(
        update={
            "cache": cache,
            "carbon_chain": chain,
            "electricitymaps": em,
            "upstream_budget": budget,
            "api_keys": [SecretStr(KEY)],
            "rate_limit_enabled": False,
            "result_cache_ttl_s": 0.0,
        }
    )


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, AppOverrides())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client


def cold_body() -> dict[str, object]:
    return {
        "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
        "locations": [{"zone": z, "price_usd_per_hour": 1.0} for z in ZONES],
    }


def upstream_calls(stub: StubUpstream) -> int:
    return sum(stub.calls.values())


@pytest.mark.parametrize("mode", ["ok", "error"])
async def test_one_cold_request_costs_at_most_the_request_budget(
    redis_factory: object, stub_upstream: StubUpstream, mode: str
) -> None:
    assert len(ZONES) == 200
    counts: dict[bool, int] = {}
    for enabled in (False, True):
        redis = redis_factory()  # type: ignore[operator]
        stub_upstream.calls.clear()
        stub_upstream.mode = mode
        # The bound must hold with the forecaster's history backfills too; the unbounded baseline
        # is the old behaviour (no live history then).
        settings = settings_for(stub_upstream, redis, enabled=enabled, live_history=enabled)
        async with app_client(settings) as client:
            answer = await client.post("/v1/optimize", json=cold_body(), headers={"x-api-key": KEY})
        assert answer.status_code == 200, answer.text
        counts[enabled] = upstream_calls(stub_upstream)
        redis.kill()
        if enabled:
            assert any("budget" in w for w in answer.json()["warnings"]), answer.json()["warnings"]
    # Unbounded: one forecast per zone (the 200), each retried on its own while the
    # upstream errs (the 600). On a quiet box exactly 200 and 400–600 (breaker timing);
    # on a busy one the 5 s deadline ends some calls before they leave, so only bounds are asserted.
    ceiling = len(ZONES) * (1 if mode == "ok" else 3)
    assert 2 * settings.upstream_budget.max_calls_per_request < counts[False] <= ceiling
    assert counts[True] <= settings.upstream_budget.max_calls_per_request


async def test_retries_share_one_budget_per_request_not_one_per_zone(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    stub_upstream.mode = "error"
    # Exact counts of the chain's own first tries: without the forecaster's history backfills.
    settings = settings_for(stub_upstream, redis_server, enabled=True, live_history=False)
    settings.upstream_budget.max_calls_per_request = 1000  # only the retry bound in play
    body = cold_body()
    body["locations"] = body["locations"][:10]  # type: ignore[index]
    async with app_client(settings) as client:
        answer = await client.post("/v1/optimize", json=body, headers={"x-api-key": KEY})
    assert answer.status_code == 200
    first_tries = 10  # one forecast per zone
    assert upstream_calls(stub_upstream) == first_tries + settings.upstream_budget.max_retries_per_request


async def test_distinct_past_windows_cost_at_most_the_aligned_chunks(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url)
    now = datetime.now(UTC)
    rng = random.Random(11)
    starts = [now - timedelta(days=2, hours=rng.uniform(0, 12 * 24)) for _ in range(40)]
    windows = [(s, s + timedelta(hours=rng.uniform(1, 30))) for s in starts]
    history_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
    chunks = {c for s, e in windows for c in past_chunks(s, min(e, history_start), history_start)}
    async with carbon_stack(settings, FlatOffline()) as stack:
        for start, end in windows:
            result = await stack.provider.series("DE", start, end)
            assert "electricitymaps:history" in result.series.sources_between(start, min(end, history_start))
    past_calls = stub_upstream.count("past-range", "DE")
    assert 0 < past_calls <= len(chunks) <= 3  # 40 windows over 12 days: two or three weeks
    assert len({(round(s.timestamp()), round(e.timestamp())) for s, e in windows}) == 40


async def test_client_minute_budget_is_shared_through_redis_and_local_without_it(
    redis_server: RedisServer,
) -> None:
    stores = [RedisStore.from_settings(RedisSettings(url=redis_server.url)) for _ in range(2)]
    try:
        workers = [ClientMinuteBudget(5, store, key_prefix="t") for store in stores]
        taken = [await workers[i % 2].take("abc") for i in range(8)]
        assert taken == [True] * 5 + [False] * 3  # one budget across both "workers"
        assert await workers[0].take("other")  # per client
        assert workers[0].shared
    finally:
        for store in stores:
            await store.aclose()
    local = ClientMinuteBudget(2, None)
    assert not local.shared
    assert [await local.take("abc") for _ in range(3)] == [True, True, False]
    memory = ClientMinuteBudget(2, MemoryStore())
    assert [await memory.take("abc") for _ in range(3)] == [True, True, False]


async def test_redis_down_counts_locally_instead_of_failing(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(RedisSettings(url=redis_server.url))
    try:
        budget = ClientMinuteBudget(3, store)
        assert await budget.take("abc")
        redis_server.kill()
        assert [await budget.take("abc") for _ in range(4)] == [True, True, True, False]
    finally:
        await store.aclose()


async def test_upstream_calls_per_client_are_in_metrics_by_client_id_never_the_key(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = settings_for(stub_upstream, redis_server, enabled=True)
    client_id = client_id_for(KEY)
    labels = {"client": client_id, "upstream": "electricitymaps"}
    before = REGISTRY.get_sample_value("carbon_optimizer_upstream_calls_by_client_total", labels) or 0.0
    body = cold_body()
    body["locations"] = body["locations"][:3]  # type: ignore[index]
    async with app_client(settings) as client:
        assert (await client.post("/v1/optimize", json=body, headers={"x-api-key": KEY})).status_code == 200
    after = REGISTRY.get_sample_value("carbon_optimizer_upstream_calls_by_client_total", labels) or 0.0
    assert after - before == upstream_calls(stub_upstream) == 3
    exposition = generate_latest(REGISTRY).decode()
    assert client_id in exposition
    assert KEY not in exposition


async def test_a_budget_refusal_does_not_cool_the_key_down_for_other_clients(
    redis_server: RedisServer, stub_upstream: StubUpstream
) -> None:
    settings = live_settings(stub_upstream.base_url, redis_server.url)
    start = datetime.now(UTC)
    end = start + timedelta(hours=3)
    async with carbon_stack(settings, FlatOffline()) as stack:
        spent = RequestBudget(client="greedy", max_calls=0, max_retries=0)
        with request_budget(spent):
            refused = await stack.provider.series("DE", start, end)
        assert refused.series.sources_between(start, end) == ("fallback:replay-2023",)
        assert any("budget" in w for w in refused.warnings)
        assert upstream_calls(stub_upstream) == 0
        assert stack.live is not None
        assert stack.live.breaker.state.value == "closed"
        with request_budget(RequestBudget(client="polite", max_calls=10, max_retries=0)):
            served = await asyncio.wait_for(stack.provider.series("DE", start, end), 10)
        assert served.series.sources_between(start, end) == ("electricitymaps:forecast",)
