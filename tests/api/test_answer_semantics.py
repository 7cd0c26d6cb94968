"""Issue 13's answer semantics: diverse options, the default mode's fallback, precise missing data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from carbon_optimizer.api.schemas import OptimizeResponse
from carbon_optimizer.app import AppOverrides
from tests.api.conftest import ClientFactory
from tests.fakes import FakeCarbon, fixed_clock, hour_of

LOW = {hour_of(datetime(2026, 6, 3, 14, tzinfo=UTC)), hour_of(datetime(2026, 6, 3, 15, tzinfo=UTC))}


def fake() -> FakeCarbon:
    # DE: 100 at 14-16 h, else 400; FR flat 200; PL flat 600.
    return FakeCarbon(
        {"DE": lambda h: 100.0 if h in LOW else 400.0, "FR": lambda h: 200.0, "PL": lambda h: 600.0}
    )


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8, "power_watts": 1000},
        "locations": [{"zone": "PL"}, {"zone": "DE"}, {"zone": "FR"}],
        "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
        "objective": {"mode": "carbon"},
    }
    base.update(overrides)
    return base


async def _post(client_factory: ClientFactory, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock()), **kw) as client:
        response = await client.post("/v1/optimize", json=payload)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    OptimizeResponse.model_validate(data)
    return data


def _picks(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["location"]["zone"], o["start"][11:16]) for o in data["options"]]


async def test_default_shows_each_locations_best_start_ranked_across_locations(
    client_factory: ClientFactory,
) -> None:
    data = await _post(client_factory, body())
    assert _picks(data) == [("DE", "14:00"), ("FR", "10:00"), ("PL", "10:00")]


async def test_max_per_location_two_collapses_identical_starts(client_factory: ClientFactory) -> None:
    data = await _post(client_factory, body(max_per_location=2, max_results=10))
    # DE's two best distinct windows (100, then 250 at 13:00 — 15:00 repeats 250 and collapses);
    # FR and PL are flat, so their later starts repeat the first and collapse.
    assert _picks(data) == [("DE", "14:00"), ("FR", "10:00"), ("DE", "13:00"), ("PL", "10:00")]


async def test_null_max_per_location_ranks_every_pair_without_duplicates(
    client_factory: ClientFactory,
) -> None:
    data = await _post(client_factory, body(max_per_location=None, max_results=10))
    assert _picks(data) == [
        ("DE", "14:00"),
        ("FR", "10:00"),
        ("DE", "13:00"),
        ("DE", "10:00"),
        ("PL", "10:00"),
    ]
    keys = [(o["location"]["zone"], o["emissions_g"], o["cost_usd"]) for o in data["options"]]
    assert len(keys) == len(set(keys))


async def test_each_option_carries_its_margin_to_the_best(client_factory: ClientFactory) -> None:
    data = await _post(client_factory, body())
    best = data["best"]
    assert best["delta_to_best_g"] == 0
    assert best["delta_to_best_pct"] == 0
    for option in data["options"][1:]:
        expected = option["emissions_g"] - best["emissions_g"]
        assert option["delta_to_best_g"] == pytest.approx(expected, abs=1e-3)
        assert option["delta_to_best_pct"] == pytest.approx(100 * expected / best["emissions_g"], abs=0.01)
    # FR at 200 vs DE's 100 g/kWh: twice the emissions.
    assert data["options"][1]["delta_to_best_pct"] == pytest.approx(100.0)


async def test_default_mode_without_any_price_applies_carbon_and_says_so(
    client_factory: ClientFactory,
) -> None:
    payload = body()
    del payload["objective"]  # default: balanced
    data = await _post(client_factory, payload)
    assert data["objective"]["mode"] == "carbon"
    assert data["objective"]["requested_mode"] == "balanced"
    assert any("no candidate has a price" in w for w in data["warnings"])
    assert _picks(data)[0] == ("DE", "14:00")


async def test_applied_mode_equals_requested_mode_normally(client_factory: ClientFactory) -> None:
    data = await _post(client_factory, body())
    assert data["objective"] == {"mode": "carbon", "requested_mode": "carbon"}


async def test_some_prices_in_balanced_mode_keeps_the_422(client_factory: ClientFactory) -> None:
    payload = body(locations=[{"zone": "DE", "price_usd_per_hour": 1.0}, {"zone": "FR"}])
    del payload["objective"]
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        response = await client.post("/v1/optimize", json=payload)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "locations", 1, "price_usd_per_hour"]


async def test_pure_cost_mode_without_prices_is_still_a_422(client_factory: ClientFactory) -> None:
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        response = await client.post("/v1/optimize", json=body(objective={"mode": "cost"}))
    assert response.status_code == 422


async def test_aws_spot_says_only_on_demand_is_bundled(client_factory: ClientFactory) -> None:
    payload = body(
        workload={"duration_minutes": 60, "vcpus": 2, "memory_gib": 4, "price_type": "spot"},
        locations=[{"provider": "aws", "region": "us-east-1"}, {"provider": "gcp", "region": "europe-west1"}],
        objective={"mode": "cost"},
    )
    data = await _post(client_factory, payload)
    reasons = [item["reason"] for item in data["infeasible"]]
    assert reasons == [
        "no spot price in the bundled data for aws (aws/us-east-1; on-demand available: price_type on_demand)"
    ]
    assert data["best"]["location"]["provider"] == "gcp"
