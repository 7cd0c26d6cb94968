"""The hot path's in-memory lanes give exactly the answers of the slow path, and only when allowed.

Issue 12 added three memos on the fresh-answer path (offline-only carbon answers in the chain, the
providers' synchronous in-memory lookups, aligned grids in the service) and one shortcut (the
baseline reads the engine's window means). Each must be invisible in the answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.domain.models import Objective, ObjectiveMode, PriceType, Workload
from carbon_optimizer.providers.base import InMemoryCarbonLookup, InMemoryPriceLookup
from carbon_optimizer.providers.carbon.base import Signal
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.prices.chain import CachedPriceProvider, CachePolicy
from carbon_optimizer.service import LocationQuery, OptimizeQuery, OptimizerService

NOW = datetime(2026, 11, 24, 9, 17, 23, tzinfo=UTC)


def _chain() -> CarbonChain:
    return CarbonChain((), OfflineCarbonProvider(), live_deadline_s=1.0, clock=lambda: NOW)


async def test_offline_chain_memo_returns_the_answer_series_gives_read_only() -> None:
    chain = _chain()
    assert isinstance(chain, InMemoryCarbonLookup)
    start, end = NOW, NOW + timedelta(hours=24)
    assert chain.series_cached("DE", start, end) is None  # nothing in memory yet
    first = await chain.series("DE", start, end)
    hit = chain.series_cached("DE", start + timedelta(seconds=40), end + timedelta(seconds=40))
    assert hit is first  # same hours: the very same answer
    assert not np.asarray(first.series.values).flags.writeable
    fresh = await _chain().series("DE", start, end)
    np.testing.assert_array_equal(first.series.values, fresh.series.values)
    assert first.series.runs == fresh.series.runs
    assert first.warnings == fresh.warnings
    # Other hours, another zone or another signal are other answers.
    assert chain.series_cached("DE", start + timedelta(hours=1), end + timedelta(hours=1)) is None
    assert chain.series_cached("FR", start, end) is None
    assert chain.series_cached("DE", start, end, Signal.MARGINAL) is None
    assert chain.series_cached("DE", end, start) is None


async def test_price_in_memory_lane_hits_only_what_offers_would_answer_locally() -> None:
    clock_now = datetime(2026, 11, 24, tzinfo=UTC)
    chain = CachedPriceProvider(
        bundled=BundledPriceProvider(),
        store=None,
        policy=CachePolicy(local_ttl_s=30.0),
        clock=lambda: clock_now,
    )
    assert isinstance(chain, InMemoryPriceLookup)
    assert chain.offers_cached("aws", "us-east-1", PriceType.ON_DEMAND) is None
    table = await chain.offers("aws", "us-east-1", PriceType.ON_DEMAND)
    assert table is not None
    hit = chain.offers_cached("aws", "us-east-1", PriceType.ON_DEMAND)
    assert hit is not None
    assert hit[0] is table
    assert chain.offers_cached("aws", "us-east-1", PriceType.SPOT) is None
    assert chain.offers_cached("aws", "no-such-region", PriceType.ON_DEMAND) is None


def _service() -> OptimizerService:
    return OptimizerService(
        catalog=load_region_catalog(),
        carbon=_chain(),
        prices=BundledPriceProvider(),
        clock=lambda: NOW,
    )


def _query(start: datetime, minutes: int, baseline_start: datetime | None = None) -> OptimizeQuery:
    zones = ["DE", "FR", "NO", "GB", "PL"]
    return OptimizeQuery(
        workload=Workload(duration=timedelta(minutes=minutes), vcpus=8, memory_gib=32.0),
        locations=[
            LocationQuery(None, None, z, 0.3 + 0.01 * i, ("body", "locations", i))
            for i, z in enumerate(zones)
        ]
        + [LocationQuery("aws", "us-east-1", None, None, ("body", "locations", 5))],
        providers=None,
        earliest_start=start,
        deadline=start + timedelta(hours=24),
        objective=Objective(mode=ObjectiveMode.BALANCED, carbon_weight=0.5),
        time_step=timedelta(minutes=15),
        max_results=5,
        baseline_start=baseline_start,
    )


@pytest.mark.parametrize("offset_s", [0, 7, 3599])
@pytest.mark.parametrize("minutes", [60, 95, 180])
async def test_memoised_service_answers_like_a_fresh_one(offset_s: int, minutes: int) -> None:
    """A warm service (memos filled by other requests in the same hours) answers bit-identically."""
    warm = _service()
    base = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    for other in (base, base + timedelta(seconds=1), base + timedelta(minutes=30)):
        await warm.optimize(_query(other, 120))
    start = base + timedelta(seconds=offset_s)
    for baseline_start in (None, start + timedelta(minutes=20)):
        got = await warm.optimize(_query(start, minutes, baseline_start))
        want = await _service().optimize(_query(start, minutes, baseline_start))
        assert got == want
        assert got.baseline is not None
        assert got.savings is not None
