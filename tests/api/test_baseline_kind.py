"""Issue 13 items 4 and 8: the baseline names its kind; providers use the median-now rule; a
baseline start outside the data's reach is refused naming `baseline.start`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from carbon_optimizer.api.schemas import OptimizeResponse
from carbon_optimizer.app import AppOverrides
from tests.api.conftest import ClientFactory
from tests.fakes import FakeCarbon, fixed_clock

WINDOW = {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"}
WORKLOAD = {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4, "power_watts": 500}


def _body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": WORKLOAD,
        "window": WINDOW,
        "objective": {"mode": "carbon"},
        "locations": [{"zone": "PL"}, {"zone": "FR"}],
    }
    base.update(overrides)
    return base


def _constant(value: float) -> Callable[[int], float]:
    return lambda hour: value


async def _ok(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/optimize", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    OptimizeResponse.model_validate(data)
    return data


async def test_default_baseline_is_first_listed_now(client: httpx.AsyncClient) -> None:
    data = await _ok(client, _body())
    assert data["baseline"]["kind"] == "first-listed-now"
    assert data["baseline"]["location"] == {"zone": "PL"}
    assert data["baseline"]["start"] == WINDOW["earliest_start"]


async def test_explicit_baseline_says_explicit(client: httpx.AsyncClient) -> None:
    body = _body(baseline={"location": {"zone": "FR"}, "start": "2026-06-03T12:00:00Z"})
    data = await _ok(client, body)
    assert data["baseline"]["kind"] == "explicit"
    assert data["baseline"]["location"] == {"zone": "FR"}


async def test_providers_baseline_is_the_median_candidate_now(client_factory: ClientFactory) -> None:
    async with client_factory(overrides=AppOverrides(clock=fixed_clock())) as probe:
        regions = (await probe.get("/v1/regions", params={"provider": "gcp"})).json()
    rows = regions["regions"] if isinstance(regions, dict) else regions
    zones = sorted({row["zone"] for row in rows})
    # Distinct flat intensity per zone, so each region's emissions now are known in advance.
    level = {zone: 100.0 + 7.0 * i for i, zone in enumerate(zones)}
    carbon = FakeCarbon({zone: _constant(value) for zone, value in level.items()})
    async with client_factory(overrides=AppOverrides(carbon=carbon, clock=fixed_clock())) as client:
        body = _body(providers=["gcp"])
        del body["locations"]
        data = await _ok(client, body)
    values = sorted(level[row["zone"]] for row in rows)
    assert data["baseline"]["kind"] == "median-now"
    assert data["baseline"]["start"] == WINDOW["earliest_start"]
    assert data["baseline"]["avg_carbon_intensity_g_per_kwh"] == values[(len(values) - 1) // 2]
    # Not the alphabetically first region any more.
    assert data["savings"]["emissions_pct"] < 100 * (1 - values[0] / values[-1])


async def test_baseline_start_in_2020_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    body = _body(baseline={"location": {"zone": "FR"}, "start": "2020-06-03T10:00:00Z"})
    response = await client.post("/v1/optimize", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", "baseline", "start"]
    assert "outside the data's reach" in problem["detail"]


async def test_baseline_start_a_few_days_back_is_accepted(client: httpx.AsyncClient) -> None:
    body = _body(baseline={"location": {"zone": "FR"}, "start": "2026-05-30T10:00:00Z"})
    data = await _ok(client, body)
    assert data["baseline"]["start"] == "2026-05-30T10:00:00Z"
