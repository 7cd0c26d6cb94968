"""POST /v1/optimize end to end through the ASGI app, with fake carbon data where exact numbers matter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from carbon_optimizer.api.schemas import OptimizeResponse
from carbon_optimizer.app import AppOverrides
from carbon_optimizer.domain.instances import ARM, BURSTABLE, instance_traits
from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.settings import ElectricityMapsSettings, Settings
from tests.api.conftest import ClientFactory
from tests.fakes import FIXED_NOW, FakeCarbon, fixed_clock, hour_of
from tests.support.http import mocked_upstream

LOW_HOURS = {hour_of(datetime(2026, 6, 3, 14, tzinfo=UTC)), hour_of(datetime(2026, 6, 3, 15, tzinfo=UTC))}


def de_profile(h: int) -> float:
    return 100.0 if h in LOW_HOURS else 400.0


def fake() -> FakeCarbon:
    return FakeCarbon({"DE": de_profile, "FR": lambda h: 200.0})


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8, "power_watts": 1000},
        "locations": [{"zone": "DE"}, {"zone": "FR"}],
        "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
        "objective": {"mode": "carbon"},
    }
    base.update(overrides)
    return base


async def test_known_series_gives_known_best_window_and_tie_break(client_factory: ClientFactory) -> None:
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        response = await client.post("/v1/optimize", json=body())
    assert response.status_code == 200, response.text
    data = response.json()
    OptimizeResponse.model_validate(data)
    best = data["best"]
    assert best["location"] == {"zone": "DE"}
    assert best["start"] == "2026-06-03T14:00:00Z"
    assert best["end"] == "2026-06-03T16:00:00Z"
    assert best["avg_carbon_intensity_g_per_kwh"] == pytest.approx(100.0)
    # Ties at 200 g/kWh (FR all day) break by earlier start.
    assert [(o["location"]["zone"], o["start"][11:16]) for o in data["options"]] == [
        ("DE", "14:00"),
        ("FR", "10:00"),
        ("FR", "11:00"),
        ("FR", "12:00"),
        ("FR", "13:00"),
    ]
    assert [o["rank"] for o in data["options"]] == [1, 2, 3, 4, 5]
    # energy = 1000 W x PUE x 2 h; emissions = energy x mean intensity
    pue = best["pue"]
    assert best["energy_kwh"] == pytest.approx(1000 * pue * 2 / 1000, rel=1e-6)
    for option in data["options"]:
        assert option["emissions_g"] == pytest.approx(
            option["energy_kwh"] * option["avg_carbon_intensity_g_per_kwh"], rel=1e-4
        )
    # Baseline: first listed location at earliest_start (DE at 400 g/kWh).
    assert data["baseline"]["location"] == {"zone": "DE"}
    assert data["baseline"]["start"] == "2026-06-03T10:00:00Z"
    assert data["baseline"]["avg_carbon_intensity_g_per_kwh"] == pytest.approx(400.0)
    assert data["savings"]["emissions_pct"] == pytest.approx(75.0)
    assert data["savings"]["emissions_g"] == pytest.approx(
        data["baseline"]["emissions_g"] - best["emissions_g"], abs=1e-2
    )
    # 2 zones x (24 h window - 2 h) / 1 h + 1 = 23 starts each
    assert data["candidates_evaluated"] == 2 * 23
    assert data["energy_model"]["name"].startswith("override")
    assert best["carbon_source"] == "fake:test"


async def test_location_order_breaks_equal_scores(client_factory: ClientFactory) -> None:
    flat = FakeCarbon({"DE": lambda h: 250.0, "FR": lambda h: 250.0})
    async with client_factory(overrides=AppOverrides(carbon=flat, clock=fixed_clock())) as client:
        first = (await client.post("/v1/optimize", json=body(max_results=2))).json()
        swapped = (
            await client.post(
                "/v1/optimize", json=body(max_results=2, locations=[{"zone": "FR"}, {"zone": "DE"}])
            )
        ).json()
    assert [o["location"]["zone"] for o in first["options"]] == ["DE", "FR"]
    assert [o["location"]["zone"] for o in swapped["options"]] == ["FR", "DE"]


async def test_cost_and_balanced_modes_use_prices(client_factory: ClientFactory) -> None:
    locations = [{"zone": "DE", "price_usd_per_hour": 0.30}, {"zone": "FR", "price_usd_per_hour": 0.40}]
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        cost = (
            await client.post("/v1/optimize", json=body(locations=locations, objective={"mode": "cost"}))
        ).json()
        balanced = (
            await client.post(
                "/v1/optimize",
                json=body(locations=locations, objective={"mode": "balanced", "carbon_weight": 0.5}),
            )
        ).json()
    assert cost["best"]["location"]["zone"] == "DE"
    assert cost["best"]["start"] == "2026-06-03T10:00:00Z"  # price is flat in time: earliest wins
    assert cost["best"]["cost_usd"] == pytest.approx(0.60)
    assert cost["best"]["price_source"] == "request"
    # balanced: DE@14 has min emissions (100) and min cost: score = 0.5*1 + 0.5*1 = 1
    assert balanced["best"]["location"]["zone"] == "DE"
    assert balanced["best"]["start"] == "2026-06-03T14:00:00Z"
    assert balanced["best"]["score"] == pytest.approx(1.0)
    # FR: emissions ratio 200/100, cost ratio 0.8/0.6
    fr = next(o for o in balanced["options"] if o["location"]["zone"] == "FR")
    assert fr["score"] == pytest.approx(0.5 * 2.0 + 0.5 * (0.8 / 0.6), rel=1e-5)


async def test_budget_and_monetized_modes(client_factory: ClientFactory) -> None:
    locations = [{"zone": "FR", "price_usd_per_hour": 0.30}, {"zone": "DE", "price_usd_per_hour": 0.50}]
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        tight = (
            await client.post(
                "/v1/optimize",
                json=body(
                    locations=locations,
                    objective={"mode": "carbon_within_budget", "max_cost_increase_pct": 10},
                ),
            )
        ).json()
        loose = (
            await client.post(
                "/v1/optimize",
                json=body(
                    locations=locations,
                    objective={"mode": "carbon_within_budget", "max_cost_increase_pct": 100},
                ),
            )
        ).json()
        monetized = (
            await client.post(
                "/v1/optimize",
                json=body(
                    locations=locations,
                    objective={"mode": "monetized", "carbon_price_usd_per_tonne": 1_000_000},
                ),
            )
        ).json()
    # DE costs 67 % more: outside a 10 % budget, inside a 100 % one.
    assert {o["location"]["zone"] for o in tight["options"]} == {"FR"}
    assert loose["best"]["location"]["zone"] == "DE"
    assert loose["best"]["start"] == "2026-06-03T14:00:00Z"
    # At an absurd carbon price, carbon dominates: DE's clean hours win.
    best = monetized["best"]
    assert best["location"]["zone"] == "DE"
    assert best["score"] == pytest.approx(best["cost_usd"] + best["emissions_g"] / 1e6 * 1_000_000, rel=1e-5)


async def test_cloud_regions_pick_cheapest_fitting_instance_from_bundled_catalog(client: Any) -> None:
    request = {
        "workload": {"duration_minutes": 180, "vcpus": 8, "memory_gib": 32},
        "locations": [
            {"provider": "aws", "region": "us-east-1"},
            {"provider": "gcp", "region": "europe-west1"},
        ],
        "objective": {"mode": "cost"},
        "max_results": 50,
    }
    response = await client.post("/v1/optimize", json=request)
    assert response.status_code == 200, response.text
    data = response.json()
    catalog = BundledPriceProvider()
    for provider, region in (("aws", "us-east-1"), ("gcp", "europe-west1")):
        fitting = [
            o
            for o in catalog.list_offers(provider, region, None, PriceType.ON_DEMAND)
            if (o.vcpus or 0) >= 8
            and (o.memory_gib or 0) >= 32
            # the default policy: x86_64 images, no burstable types
            and not instance_traits(provider, o.instance_type) & {ARM, BURSTABLE}
        ]
        cheapest = min(o.price_usd_per_hour for o in fitting)
        option = next(o for o in data["options"] if o["location"]["region"] == region)
        assert option["price_usd_per_hour"] == pytest.approx(cheapest)
        assert option["cost_usd"] == pytest.approx(cheapest * 3, rel=1e-6)
        assert option["price_source"].startswith("bundled:")
        assert option["carbon_source"] in {"fallback:replay-2023", "fallback:annual-2025"}
    assert data["best"]["location"]["zone"] in {"US-MIDA-PJM", "BE"}
    assert not instance_traits("aws", data["options"][0]["instance_type"]) & {ARM, BURSTABLE}
    assert data["window"]["earliest_start"] == "2026-06-03T10:00:00Z"


async def test_gpu_request_reports_infeasible_regions(client: Any) -> None:
    request = {
        "workload": {
            "duration_minutes": 60,
            "vcpus": 8,
            "memory_gib": 32,
            "gpu": {"count": 1, "model": "H100"},
        },
        "locations": [
            {"provider": "aws", "region": "us-east-1"},
            {"provider": "aws", "region": "eu-west-3"},
        ],
        "objective": {"mode": "carbon"},
    }
    response = await client.post("/v1/optimize", json=request)
    assert response.status_code == 200, response.text
    data = response.json()
    assert all(o["location"]["region"] == "us-east-1" for o in data["options"]), data
    assert data["best"]["instance_type"].startswith("p5")
    assert [i["location"]["region"] for i in data["infeasible"]] == ["eu-west-3"]
    assert "GPU" in data["infeasible"][0]["reason"]


async def test_nothing_feasible_is_a_422_with_reasons(client: Any) -> None:
    request = {
        "workload": {"duration_minutes": 60, "vcpus": 4096, "memory_gib": 1},
        "locations": [{"provider": "aws", "region": "us-east-1"}],
    }
    response = await client.post("/v1/optimize", json=request)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["infeasible"][0]["location"] == "aws/us-east-1"


async def test_upstream_failure_degrades_to_bundled_data(client_factory: ClientFactory) -> None:
    # The real chain with a failing upstream (mocked at the network boundary): the chain itself
    # ends in the bundled data, the service has no fallback of its own.
    async with mocked_upstream() as (router, http):
        router.route(host="api.electricitymaps.com").mock(return_value=httpx.Response(503))
        settings = Settings(
            _env_file=None,
            electricitymaps=ElectricityMapsSettings(api_key="k-test", request_deadline_s=1.0, max_retries=0),
        )
        async with client_factory(settings, AppOverrides(clock=fixed_clock(), http=http)) as client:
            response = await client.post("/v1/optimize", json=body())
        assert router.calls.call_count >= 2
    assert response.status_code == 200
    data = response.json()
    assert data["best"]["carbon_source"] == "fallback:replay-2023"
    assert any("electricitymaps unavailable" in w and "fallback" in w for w in data["warnings"])


async def test_providers_shortcut_expands_to_catalogued_regions(client: Any) -> None:
    response = await client.post(
        "/v1/optimize",
        json={
            "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
            "providers": ["gcp"],
            "objective": {"mode": "carbon"},
            "max_results": 100,
        },
    )
    assert response.status_code == 200, response.text
    data = response.json()
    regions = (await client.get("/v1/regions", params={"provider": "gcp"})).json()
    evaluated = {o["location"]["region"] for o in data["options"]} | {
        i["location"]["region"] for i in data["infeasible"]
    }
    assert evaluated <= {r["region"] for r in regions["regions"]}
    starts_per_location = 24  # default window: 24 h, step 60, 1 h job → 24 starts
    assert data["candidates_evaluated"] == starts_per_location * (regions["count"] - len(data["infeasible"]))


async def test_explicit_baseline_outside_the_candidates(client_factory: ClientFactory) -> None:
    request = body(baseline={"location": {"zone": "FR"}, "start": "2026-06-03T20:00:00Z"})
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        data = (await client.post("/v1/optimize", json=request)).json()
    assert data["baseline"]["location"] == {"zone": "FR"}
    assert data["baseline"]["start"] == "2026-06-03T20:00:00Z"
    assert data["savings"]["emissions_pct"] == pytest.approx(50.0)


async def test_past_earliest_start_is_treated_as_now(client_factory: ClientFactory) -> None:
    later = FIXED_NOW.replace(hour=12, minute=30)
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock(later))) as client:
        data = (await client.post("/v1/optimize", json=body())).json()
    assert data["window"]["earliest_start"] == "2026-06-03T12:30:00Z"
    assert data["options"][0]["start"] >= "2026-06-03T12:30:00Z"


async def test_unversioned_alias_serves_the_same_answer(client_factory: ClientFactory) -> None:
    async with client_factory(overrides=AppOverrides(carbon=fake(), clock=fixed_clock())) as client:
        a = (await client.post("/v1/optimize", json=body())).json()
        b = (await client.post("/optimize", json=body())).json()
    for key in ("best", "options", "baseline", "savings", "candidates_evaluated"):
        assert a[key] == b[key]
