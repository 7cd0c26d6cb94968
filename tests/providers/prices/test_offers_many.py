"""`CachedPriceProvider.offers_many`: a request's tables in one pass, memoised per request shape.

A shape's tables are kept until the local tier changes (a put, a drop, a live write), its first
local entry ends, or its first fresh table turns stale; a shape with a miss, or with a stale table
served only because its live source is cooling down, is not kept. Its answers are the per-pair
lane's (`offers_cached`), and the cache-event metric moves as that lane moves it.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.errors import ProviderUnavailable
from carbon_optimizer.metrics import CACHE_EVENTS
from carbon_optimizer.providers.prices.chain import CachedPriceProvider, CachePolicy

from .conftest import Clock, FakeBundled, FakeLive, MemoryKV, live_table, offer

PLACES = [("azure", "eastus"), ("gcp", "us-central1")]
OD = PriceType.ON_DEMAND
BASE_POLICY: dict[str, Any] = {"live_wait_s": 1.0, "failure_cooldown_s": 60.0, "local_ttl_s": 60.0}


def bundled() -> FakeBundled:
    return FakeBundled(
        [
            offer("azure", "eastus", "Standard_D8s_v5", 0.384, vcpus=8, memory=32.0, as_of=date(2026, 6, 18)),
            offer("gcp", "us-central1", "n2-standard-8", 0.38, vcpus=8, memory=32.0, as_of=date(2026, 7, 30)),
        ]
    )


def azure(price: float = 0.40, error: Exception | None = None) -> FakeLive:
    return FakeLive(
        "azure",
        lambda region, pt: live_table("azure", region, {"Standard_D8s_v5": price}, pt, vcpus=8, memory=32.0),
        error=error,
    )


def provider(clock: Clock, live: FakeLive | None = None, **policy: Any) -> CachedPriceProvider:
    return CachedPriceProvider(
        bundled=bundled(),
        store=MemoryKV(),
        live={"azure": live} if live is not None else {},
        policy=CachePolicy(**(BASE_POLICY | policy)),
        clock=clock,
    )


async def fill(p: CachedPriceProvider) -> None:
    for _ in range(2):  # a live answer is not kept locally: the second read takes it from the store
        for prov, region in PLACES:
            await p.offers(prov, region, OD)


def hits() -> float:
    return float(CACHE_EVENTS.labels("prices", "local", "hit")._value.get())


async def test_a_warm_shape_answers_the_per_pair_lanes_tables_and_is_kept(clock: Clock) -> None:
    p = provider(clock, azure())
    assert p.offers_many(PLACES, OD) == [None, None]
    await fill(p)
    per_pair = [p.offers_cached(prov, region, OD) for prov, region in PLACES]
    first = p.offers_many(PLACES, OD)
    again = p.offers_many(PLACES, OD)
    assert first == per_pair == again
    assert first[0] is not None
    assert first[0][0] is not None
    assert first[0][0].sources[0].startswith("cache:")
    assert len(p._shapes) == 1
    before = hits()
    p.offers_many(PLACES, OD)
    assert hits() - before == 1  # azure's fresh table, counted as the per-pair lane counts it


async def test_a_new_table_ends_the_shape(clock: Clock) -> None:
    live = azure(0.40)
    p = provider(clock, live)
    await fill(p)
    old = p.offers_many(PLACES, OD)
    table = live_table("azure", "eastus", {"Standard_D8s_v5": 0.55}, OD, vcpus=8, memory=32.0)
    await p.write(table, clock())  # the refresh job stored a new table: the local copy is dropped
    assert p.offers_many(PLACES, OD)[0] is None
    new = await p.offers("azure", "eastus", OD)
    assert new is not None
    assert new.price_usd_per_hour.tolist() == [0.55]
    now = p.offers_many(PLACES, OD)
    assert now[0] == (new,)
    assert now[1] == old[1]


async def test_the_end_of_a_local_entry_ends_the_shape(clock: Clock) -> None:
    p = provider(clock, azure(), local_ttl_s=0.05)
    await fill(p)
    assert None not in p.offers_many(PLACES, OD)
    await asyncio.sleep(0.06)
    assert p.offers_many(PLACES, OD) == [None, None]


async def test_a_table_turning_stale_ends_the_shape_while_live_can_be_asked(clock: Clock) -> None:
    p = provider(clock, azure(), local_ttl_s=10 * 24 * 3600)
    await fill(p)
    assert None not in p.offers_many(PLACES, OD)
    clock.advance(hours=25)  # past the 24 h on-demand freshness
    assert p.offers_many(PLACES, OD)[0] is None  # stale with a live source to ask: `offers`
    assert p.offers_many(PLACES, OD)[1] is not None  # bundled gcp: nothing live to ask


async def test_a_stale_table_under_a_cool_down_is_served_but_not_kept(clock: Clock) -> None:
    live = azure()
    p = provider(clock, live, local_ttl_s=10 * 24 * 3600, failure_cooldown_s=0.05)
    await fill(p)
    clock.advance(hours=25)
    live.error = ProviderUnavailable("azure down")
    stale = await p.offers("azure", "eastus", OD)  # fails live: cool-down starts, cached rows served
    assert stale is not None
    assert stale.sources[0].startswith("cache:")
    served = p.offers_many(PLACES, OD)
    assert served[0] == (stale,)
    assert not p._shapes  # a hit only while the cool-down lasts: the per-pair lane each time
    await asyncio.sleep(0.06)  # cool-down over: live may be asked again
    assert p.offers_many(PLACES, OD)[0] is None
