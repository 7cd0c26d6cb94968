"""The price chain: cache → live → bundled, TTLs, provenance, and failures that change nothing."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from carbon_optimizer.domain.models import OfferTable, PriceType
from carbon_optimizer.errors import ProviderAuthError, ProviderUnavailable
from carbon_optimizer.providers.prices.chain import (
    CachedPriceProvider,
    CachePolicy,
    cache_key,
    decode_table,
    encode_table,
)

from .conftest import NOW, Clock, FakeBundled, FakeLive, MemoryKV, live_table, offer

POLICY = CachePolicy(live_wait_s=1.0, failure_cooldown_s=60.0, local_ttl_s=0.0)


def _bundled() -> FakeBundled:
    return FakeBundled(
        [
            offer("azure", "eastus", "Standard_D8s_v5", 0.384, vcpus=8, memory=32.0, as_of=date(2026, 6, 18)),
            offer("azure", "eastus", "Standard_E8s_v5", 0.504, vcpus=8, memory=64.0, as_of=date(2026, 6, 18)),
            offer(
                "azure",
                "eastus",
                "Standard_D8s_v5",
                0.09,
                vcpus=8,
                memory=32.0,
                price_type=PriceType.SPOT,
                as_of=date(2026, 6, 18),
            ),
            offer(
                "gcp", "us-central1", "n2-standard-8", 0.388472, vcpus=8, memory=32.0, as_of=date(2026, 7, 30)
            ),
            offer(
                "gcp", "us-central1", "t2d-standard-8", 0.3380, vcpus=8, memory=32.0, as_of=date(2026, 7, 30)
            ),
            offer("lambda", "*", "1x NVIDIA A10", 1.29, vcpus=30, memory=226.0, gpus=1, model="A10"),
        ]
    )


def _azure_live(price: float = 0.40) -> FakeLive:
    return FakeLive(
        "azure",
        lambda region, pt: live_table("azure", region, {"Standard_D8s_v5": price}, pt, vcpus=8, memory=32.0),
    )


def _chain(
    kv: MemoryKV | None, clock: Clock, live: dict[str, FakeLive] | None = None, policy: CachePolicy = POLICY
) -> CachedPriceProvider:
    return CachedPriceProvider(bundled=_bundled(), store=kv, live=live or {}, policy=policy, clock=clock)


async def test_miss_goes_live_writes_the_store_then_serves_from_cache(kv: MemoryKV, clock: Clock) -> None:
    azure = _azure_live()
    chain = _chain(kv, clock, {"azure": azure})

    first = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert first is not None
    assert first.sources == ("live:azure",)
    key = cache_key("azure", "eastus", PriceType.ON_DEMAND)
    assert kv.sets == [key]
    assert kv.ttls[key] == POLICY.retention_s  # kept far past its freshness TTL, as stale fallback

    clock.advance(hours=23)
    second = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert second is not None
    assert second.sources == ("cache:2026-11-24",)
    assert second.offer(0).as_of == NOW.date()
    assert second.offer(0).price_usd_per_hour == 0.40
    assert len(azure.calls) == 1


async def test_on_demand_ttl_is_24h_and_spot_at_most_1h(kv: MemoryKV, clock: Clock) -> None:
    azure = _azure_live()
    chain = _chain(kv, clock, {"azure": azure}, CachePolicy(spot_ttl_s=7 * 24 * 3600, local_ttl_s=0))
    assert chain.policy.ttl_s(PriceType.SPOT) == 3600  # capped whatever is configured
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    await chain.offers("azure", "eastus", PriceType.SPOT)
    assert len(azure.calls) == 2

    clock.advance(minutes=61)
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    await chain.offers("azure", "eastus", PriceType.SPOT)
    assert azure.calls[2:] == [("eastus", PriceType.SPOT)]  # spot refreshed, on-demand still fresh

    clock.advance(hours=24)
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert azure.calls[-1] == ("eastus", PriceType.ON_DEMAND)


async def test_cached_price_survives_a_failed_refresh(kv: MemoryKV, clock: Clock) -> None:
    azure = _azure_live(0.41)
    chain = _chain(kv, clock, {"azure": azure})
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    stored = dict(kv.data)

    clock.advance(hours=30)  # stale now
    azure.error = ProviderUnavailable("azure retail_prices: HTTP 503", source="azure")
    answer = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)

    assert answer is not None
    assert answer.sources == ("cache:2026-11-24",)
    assert answer.offer(0).price_usd_per_hour == 0.41
    assert kv.data == stored
    assert len(kv.sets) == 1
    health = chain.health()["sources"]
    assert isinstance(health, dict)
    assert health["azure"]["last_error"] == "azure retail_prices: HTTP 503"
    assert health["azure"]["as_of"] == "2026-11-24"


async def test_empty_live_answer_is_not_cached_over_a_good_price(kv: MemoryKV, clock: Clock) -> None:
    azure = _azure_live(0.41)
    chain = _chain(kv, clock, {"azure": azure})
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    clock.advance(hours=25)
    azure.answer = lambda region, pt: live_table("azure", region, {}, pt)
    answer = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert answer is not None
    assert answer.offer(0).price_usd_per_hour == 0.41
    assert len(kv.sets) == 1


async def test_every_source_failing_answers_from_bundled_and_pauses_the_api(
    kv: MemoryKV, clock: Clock
) -> None:
    azure = FakeLive(
        "azure", error=ProviderAuthError("azure: credentials rejected (HTTP 401)", source="azure")
    )
    chain = _chain(kv, clock, {"azure": azure})

    table = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)

    assert table is not None
    assert set(table.sources) == {"bundled:2026-06-18"}
    assert not kv.sets
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert len(azure.calls) == 1  # in cooldown: no second call, no added latency
    sources = chain.health()["sources"]
    assert isinstance(sources, dict)
    assert sources["azure"]["in_cooldown"] is True


async def test_slow_live_answers_from_older_data_and_finishes_in_background(
    kv: MemoryKV, clock: Clock
) -> None:
    azure = _azure_live(0.42)
    azure.gate = asyncio.Event()
    chain = _chain(kv, clock, {"azure": azure}, CachePolicy(live_wait_s=0.05, local_ttl_s=0))

    quick = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert quick is not None
    assert set(quick.sources) == {"bundled:2026-06-18"}
    again = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)  # joins, does not wait again
    assert again is not None
    assert len(azure.calls) == 1

    azure.gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
        if kv.sets:
            break
    cached = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert cached is not None
    assert cached.sources == ("cache:2026-11-24",)
    await chain.aclose()
    assert azure.closed


async def test_live_off_reads_the_refreshed_cache_then_bundled(kv: MemoryKV, clock: Clock) -> None:
    table = live_table("azure", "eastus", {"Standard_D8s_v5": 0.39}, vcpus=8, memory=32.0)
    await kv.set(cache_key("azure", "eastus", PriceType.ON_DEMAND), encode_table(table, NOW), 3600)
    chain = _chain(kv, clock)  # no live sources at all: the embedded default

    cached = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert cached is not None
    assert cached.sources == ("cache:2026-11-24",)
    clock.advance(days=10)  # stale, but newer than the bundled table and no live source: still served
    stale = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert stale is not None
    assert stale.offer(0).price_usd_per_hour == 0.39
    bundled = await chain.offers("azure", "westeurope", PriceType.ON_DEMAND)
    assert bundled is None  # the fake bundled catalog has nothing there
    spot = await chain.offers("azure", "eastus", PriceType.SPOT)
    assert spot is not None
    assert spot.sources == ("bundled:2026-06-18",)


async def test_a_stale_cache_older_than_the_bundled_table_loses(kv: MemoryKV, clock: Clock) -> None:
    old = live_table("azure", "eastus", {"Standard_D8s_v5": 0.30}, fetched_at=NOW.replace(year=2025))
    await kv.set(
        cache_key("azure", "eastus", PriceType.ON_DEMAND), encode_table(old, old.fetched_at or NOW), 3600
    )
    answer = await _chain(kv, clock).offers("azure", "eastus", PriceType.ON_DEMAND)
    assert answer is not None
    assert set(answer.sources) == {"bundled:2026-06-18"}


async def test_cached_rows_without_sizes_get_them_from_the_bundled_table(kv: MemoryKV, clock: Clock) -> None:
    table = live_table(
        "azure", "eastus", {"Standard_E8s_v5": 0.5, "Standard_Z9_v9": 9.0}, vcpus=None, memory=None
    )
    await kv.set(cache_key("azure", "eastus", PriceType.ON_DEMAND), encode_table(table, NOW), 3600)
    answer = await _chain(kv, clock).offers("azure", "eastus", PriceType.ON_DEMAND)
    assert answer is not None
    e8 = answer.offer(answer.find("Standard_E8s_v5") or 0)
    assert (e8.vcpus, e8.memory_gib, e8.price_usd_per_hour, e8.source) == (8, 64.0, 0.5, "cache:2026-11-24")
    assert answer.offer(answer.find("Standard_Z9_v9") or 0).vcpus is None


async def test_gcp_live_table_is_completed_with_bundled_types(kv: MemoryKV, clock: Clock) -> None:
    gcp = FakeLive("gcp", lambda region, pt: live_table("gcp", region, {"n2-standard-8": 0.38}, pt))
    answer = await _chain(kv, clock, {"gcp": gcp}).offers("gcp", "us-central1", PriceType.ON_DEMAND)
    assert answer is not None
    assert dict(zip(answer.instance_types, answer.sources, strict=True)) == {
        "n2-standard-8": "live:gcp",
        "t2d-standard-8": "bundled:2026-07-30",  # a family the live composition does not cover
    }


async def test_lambda_is_cached_once_for_every_region(kv: MemoryKV, clock: Clock) -> None:
    lam = FakeLive(
        "lambda",
        lambda region, pt: live_table("lambda", region, {"gpu_1x_a10": 1.29}, pt, gpus=1, model="A10"),
        price_types=(PriceType.ON_DEMAND,),
    )
    chain = _chain(kv, clock, {"lambda": lam})
    east = await chain.offers("lambda", "us-east-1", PriceType.ON_DEMAND)
    west = await chain.offers("lambda", "us-west-1", PriceType.ON_DEMAND)
    assert east is not None
    assert west is not None
    assert (east.region, west.region) == ("us-east-1", "us-west-1")
    assert lam.calls == [("*", PriceType.ON_DEMAND)]
    assert kv.sets == ["prices:lambda:*:on_demand"]
    # A type the live API names differently is still found through `lookup` (bundled label).
    found = await chain.lookup("lambda", "us-east-1", "1x NVIDIA A10")
    assert found is not None
    assert found.source == "bundled:2026-07-20"
    assert await chain.lookup("lambda", "us-east-1", "no-such-type") is None


async def test_local_tier_spares_the_store(kv: MemoryKV, clock: Clock) -> None:
    chain = _chain(kv, clock, {"azure": _azure_live()}, CachePolicy(local_ttl_s=60))
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    reads = kv.gets
    for _ in range(5):
        await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert kv.gets == reads


async def test_invalid_region_never_reaches_cache_or_api(kv: MemoryKV, clock: Clock) -> None:
    azure = _azure_live()
    chain = _chain(kv, clock, {"azure": azure})
    assert await chain.offers("azure", "East US; DROP", PriceType.ON_DEMAND) is None
    assert not azure.calls
    assert kv.gets == 0


async def test_no_store_still_works(clock: Clock) -> None:
    chain = _chain(None, clock, {"azure": _azure_live()})
    answer = await chain.offers("azure", "eastus", PriceType.ON_DEMAND)
    assert answer is not None
    assert answer.sources == ("live:azure",)
    assert chain.health()["store"] is None


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b'{"v": 99}', b'{"v": 1, "fetched_at": "2026-01-01T00:00:00"}']
)
def test_corrupt_entries_are_misses(raw: bytes) -> None:
    assert decode_table(raw) is None


def test_codec_round_trip() -> None:
    table: OfferTable = live_table("aws", "us-east-1", {"t3.large": 0.0832}, gpus=0, model=None)
    entry = decode_table(encode_table(table, NOW))
    assert entry is not None
    assert entry.fetched_at == NOW
    back = entry.table("us-east-1").offer(0)
    assert (back.instance_type, back.price_usd_per_hour, back.vcpus, back.memory_gib) == (
        "t3.large",
        0.0832,
        2,
        8.0,
    )
