"""The service's lookups through the request-shape memos answer exactly as cold lookups do.

`OptimizerService` asks the chains' batch lanes (`series_many`, `offers_many`) and memoises
location resolution; a warm service's plans, warnings (in zone order) and errors must be a cold
one's, with the real stack (our forecaster in front of the bundled data: every replay zone leased
through `ForecastSource` → `CachedSeriesSource` → `TieredCache`) as with the bundled data alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from carbon_optimizer.app import runtime
from carbon_optimizer.errors import UnknownRegion, UnknownZone
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.service import LocationQuery, OptimizerService
from carbon_optimizer.settings import Settings
from tests.support.queries import places, query

NOW = datetime(2026, 11, 24, 9, 17, 23, tzinfo=UTC)


def service() -> OptimizerService:
    chain = CarbonChain((), OfflineCarbonProvider(), live_deadline_s=1.0, clock=lambda: NOW)
    return OptimizerService(
        catalog=load_region_catalog(), carbon=chain, prices=BundledPriceProvider(), clock=lambda: NOW
    )


LOCATIONS = places(
    ("aws", "eu-central-1", None),
    (None, None, "FR"),
    ("gcp", "europe-west4", None),
    (None, None, "FR"),  # a duplicate: warned about, in order
    ("azure", "eastus", None),
)


async def test_a_warm_service_answers_and_warns_as_a_cold_one() -> None:
    warm = service()
    base = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    for seconds in (0, 1, 2):  # the same shape, every memo filled
        await warm.optimize(query(base + timedelta(seconds=seconds), LOCATIONS))
    got = await warm.optimize(query(base + timedelta(seconds=3), LOCATIONS, 95))
    want = await service().optimize(query(base + timedelta(seconds=3), LOCATIONS, 95))
    assert got == want
    assert got.warnings == want.warnings
    assert "duplicate location zone/FR ignored" in got.warnings


@pytest.mark.parametrize(
    ("bad", "error", "field"),
    [((None, None, "XX-NOWHERE"), UnknownZone, "zone"), (("aws", "mars-1", None), UnknownRegion, "region")],
)
async def test_an_unknown_location_is_refused_every_time_naming_its_field(
    bad: tuple[str | None, str | None, str | None], error: type[Exception], field: str
) -> None:
    warm = service()
    start = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    await warm.optimize(query(start, LOCATIONS))
    listed = [*LOCATIONS, LocationQuery(*bad, None, ("body", "locations", len(LOCATIONS)))]
    for _ in range(2):  # a failed resolution is never kept
        with pytest.raises(error) as raised:
            await warm.optimize(query(start, listed))
        assert raised.value.loc == ("body", "locations", len(LOCATIONS), field)  # type: ignore[attr-defined]
    moved = [replace(q, loc=("body", "locations", 9)) if q.zone == "XX-NOWHERE" else q for q in listed]
    if bad[2] is not None:
        with pytest.raises(error) as raised:
            await warm.optimize(query(start, moved))
        assert raised.value.loc == ("body", "locations", 9, field)  # type: ignore[attr-defined]


async def test_the_real_stack_answers_warm_as_cold() -> None:
    """Through leases: our forecaster's cached fits in front of the bundled data."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    zones = [(None, None, "DE"), (None, None, "FR"), ("aws", "us-east-1", None), (None, None, "DE")]
    listed = places(*zones, (None, None, "PL"))
    async with runtime(Settings(_env_file=None)) as state:
        cold = await state.service.optimize(query(start, listed))
        await state.service.optimize(query(start + timedelta(seconds=1), listed, 95))
        warm = [await state.service.optimize(query(start, listed)) for _ in range(2)]
    for plan in warm:
        assert plan.options == cold.options
        assert plan.warnings == cold.warnings
        assert plan.data_quality == cold.data_quality
        assert plan.baseline == cold.baseline
    assert any(o.carbon_source.startswith("forecast:") for o in cold.options)
