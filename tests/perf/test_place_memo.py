"""`OptimizerService._place`'s memo: offers, prices and power kept per (locations, tables, shape).

The memo holds everything but the energy, so it must follow a new offer table at once, give the
energy of each request's own duration, and never keep a location whose price table is missing
(its reason and warning read other tables).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from carbon_optimizer.domain.models import (
    InstanceOffer,
    OfferTable,
    PriceType,
    Workload,
)
from carbon_optimizer.errors import NothingFeasible
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.service import OptimizeQuery, OptimizerService
from tests.support.queries import places, query

NOW = datetime(2026, 11, 24, 9, 17, 23, tzinfo=UTC)


def _table(region: str, price: float) -> OfferTable:
    offer = InstanceOffer(
        provider="aws",
        region=region,
        instance_type="m5.2xlarge",
        vcpus=8,
        memory_gib=32.0,
        gpu_count=0,
        gpu_model=None,
        price_usd_per_hour=price,
        price_type=PriceType.ON_DEMAND,
        as_of=None,
        source="bundled:undated",
    )
    return OfferTable.from_offers("aws", region, PriceType.ON_DEMAND, [offer])


class Prices:
    """A hand-written price provider: the tables it holds now (None = no price data)."""

    name = "test-prices"

    def __init__(self) -> None:
        self.tables: dict[str, OfferTable | None] = {
            "us-east-1": _table("us-east-1", 0.384),
            "eu-west-1": _table("eu-west-1", 0.428),
        }

    async def offers(self, provider: str, region: str, price_type: PriceType) -> OfferTable | None:
        return self.tables.get(region) if price_type is PriceType.ON_DEMAND else None


def _service(prices: Prices) -> OptimizerService:
    chain = CarbonChain((), OfflineCarbonProvider(), live_deadline_s=1.0, clock=lambda: NOW)
    return OptimizerService(catalog=load_region_catalog(), carbon=chain, prices=prices, clock=lambda: NOW)


def _query(minutes: int, regions: tuple[str, ...] = ("us-east-1", "eu-west-1")) -> OptimizeQuery:
    return query(
        datetime(2026, 11, 25, 10, 0, tzinfo=UTC), places(*(("aws", r, None) for r in regions)), minutes
    )


async def test_energy_follows_each_requests_duration_on_a_memo_hit() -> None:
    prices = Prices()
    warm = _service(prices)
    await warm.optimize(_query(60))  # fills the memo with the 60-minute shape
    for minutes in (60, 95, 180):
        got = await warm.optimize(_query(minutes))
        want = await _service(prices).optimize(_query(minutes))
        assert got == want
        assert got.best.energy_kwh == want.best.energy_kwh
    one = await warm.optimize(_query(60))
    three = await warm.optimize(_query(180))
    assert three.best.energy_kwh == pytest.approx(3 * one.best.energy_kwh, rel=1e-12)


async def test_a_new_price_table_is_used_at_once() -> None:
    prices = Prices()
    service = _service(prices)
    before = await service.optimize(_query(120))
    prices.tables["us-east-1"] = _table("us-east-1", 9.99)
    after = await service.optimize(_query(120))
    by_region = {o.location.region: o for o in after.options}
    assert by_region["us-east-1"].price_usd_per_hour == 9.99
    assert {o.location.region: o.price_usd_per_hour for o in before.options}["us-east-1"] == 0.384
    assert after == await _service(prices).optimize(_query(120))


async def test_a_location_without_prices_warns_on_every_request() -> None:
    prices = Prices()
    prices.tables["eu-west-1"] = None
    service = _service(prices)
    first = await service.optimize(_query(120))
    second = await service.optimize(_query(120))
    warning = "no price data for aws/eu-west-1; instance type and cost unknown"
    assert warning in first.warnings
    assert second.warnings == first.warnings
    # The priced location stays memoised beside it (150-region requests have a few unpriced ones).
    (entry,) = service._placements.values()
    kept = dict(zip((loc.region for loc in entry.locations), entry.outcomes, strict=True))
    assert kept["eu-west-1"] is None
    assert kept["us-east-1"] is not None
    assert kept["us-east-1"].row is not None
    # The table comes back: the next request prices the location (nothing stale was kept).
    prices.tables["eu-west-1"] = _table("eu-west-1", 0.428)
    third = await service.optimize(_query(120))
    assert warning not in third.warnings
    assert {o.location.region: o.price_usd_per_hour for o in third.options}["eu-west-1"] == 0.428


async def test_another_workload_shape_is_another_entry() -> None:
    prices = Prices()
    service = _service(prices)
    await service.optimize(_query(120))  # the 8-vCPU shape is memoised
    bigger = replace(
        _query(120), workload=Workload(duration=timedelta(minutes=120), vcpus=64, memory_gib=512.0)
    )
    with pytest.raises(NothingFeasible) as warm:  # m5.2xlarge cannot host 64 vCPUs anywhere
        await service.optimize(bigger)
    with pytest.raises(NothingFeasible) as fresh:
        await _service(prices).optimize(bigger)
    assert warm.value.infeasible == fresh.value.infeasible
    assert [key for key, _ in warm.value.infeasible] == ["aws/us-east-1", "aws/eu-west-1"]
    assert (await service.optimize(_query(120))).best.instance_type == "m5.2xlarge"  # first entry intact
