"""The whole app with an Electricity Maps key: upstream mocked at the network boundary (respx)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from carbon_optimizer.app import AppOverrides
from carbon_optimizer.settings import ElectricityMapsSettings, Settings
from tests.api.conftest import ClientFactory
from tests.fakes import FIXED_NOW, fixed_clock
from tests.support.http import mocked_upstream

BASE = "https://api.electricitymaps.com/v3"
TOKEN = "em-test-token-do-not-log"


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def forecast(zone: str, low_hours: set[int], low: float, high: float) -> dict[str, Any]:
    rows = []
    for h in range(73):
        when = FIXED_NOW + timedelta(hours=h)
        rows.append({"carbonIntensity": low if when.hour in low_hours else high, "datetime": _iso(when)})
    return {"zone": zone, "forecast": rows, "updatedAt": _iso(FIXED_NOW)}


def history(zone: str, value: float) -> dict[str, Any]:
    rows = [
        {
            "zone": zone,
            "carbonIntensity": value,
            "datetime": _iso(FIXED_NOW - timedelta(hours=24 - i)),
            "updatedAt": _iso(FIXED_NOW),
            "createdAt": _iso(FIXED_NOW),
            "emissionFactorType": "lifecycle",
            "isEstimated": False,
            "estimationMethod": None,
        }
        for i in range(24)
    ]
    return {"zone": zone, "history": rows}


def settings() -> Settings:
    return Settings(
        _env_file=None,
        electricitymaps=ElectricityMapsSettings(api_key=TOKEN, request_deadline_s=1.0, max_retries=0),
    )


REQUEST = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
    "locations": [{"zone": "DE"}, {"zone": "FR"}],
    "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
    "objective": {"mode": "carbon"},
}


def _upstream(router: respx.Router) -> None:
    def fc(request: httpx.Request) -> httpx.Response:
        assert request.headers["auth-token"] == TOKEN
        zone = request.url.params["zone"]
        body = forecast("DE", {13, 14}, 40.0, 300.0) if zone == "DE" else forecast(zone, set(), 0, 120.0)
        return httpx.Response(200, json=body)

    router.get(f"{BASE}/carbon-intensity/forecast").mock(side_effect=fc)
    router.get(f"{BASE}/carbon-intensity/history").mock(
        side_effect=lambda r: httpx.Response(200, json=history(r.url.params["zone"], 250.0))
    )
    router.get(f"{BASE}/carbon-intensity/latest").mock(return_value=httpx.Response(404))


async def test_live_forecast_drives_the_ranking(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with mocked_upstream() as (router, http):
        _upstream(router)
        async with client_factory(settings(), AppOverrides(clock=fixed_clock(), http=http)) as client:
            response = await client.post("/v1/optimize", json=REQUEST)
            health = (await client.get("/health")).json()
        forecast_calls = [c for c in router.calls if c.request.url.path.endswith("/forecast")]
    assert response.status_code == 200, response.text
    data = response.json()
    best = data["best"]
    assert best["location"]["zone"] == "DE"
    assert best["start"] == "2026-06-03T13:00:00Z"
    assert best["avg_carbon_intensity_g_per_kwh"] == pytest.approx(40.0)
    assert best["carbon_source"] == "electricitymaps:forecast"
    assert data["options"][1]["location"]["zone"] == "FR"
    assert data["warnings"] == []
    assert health["components"]["carbon"]["mode"] == "live"
    assert sorted(c.request.url.params["zone"] for c in forecast_calls) == ["DE", "FR"]
    assert TOKEN not in caplog.text
    assert TOKEN not in response.text


async def test_upstream_outage_is_a_labelled_200(client_factory: ClientFactory) -> None:
    async with mocked_upstream() as (router, http):
        router.route(host="api.electricitymaps.com").mock(
            return_value=httpx.Response(500, json={"status": "error", "message": "Unknown error occured"})
        )
        async with client_factory(settings(), AppOverrides(clock=fixed_clock(), http=http)) as client:
            response = await client.post("/v1/optimize", json=REQUEST)
            series = await client.get("/v1/zones/ZA/carbon-intensity")
    assert response.status_code == 200, response.text
    data = response.json()
    assert {o["carbon_source"] for o in data["options"]} == {"fallback:replay-2023"}
    assert any("electricitymaps unavailable for DE" in w for w in data["warnings"])
    assert series.status_code == 200
    assert series.json()["sources"] == ["fallback:replay-2023"]


async def test_window_beyond_the_forecast_horizon_mixes_sources(client_factory: ClientFactory) -> None:
    request = {
        **REQUEST,
        "locations": [{"zone": "DE"}],
        "workload": {"duration_minutes": 240, "vcpus": 4, "memory_gib": 16},
        "window": {"earliest_start": "2026-06-06T08:00:00Z", "deadline": "2026-06-06T14:00:00Z"},
        "max_results": 10,
    }
    async with mocked_upstream() as (router, http):
        _upstream(router)
        async with client_factory(settings(), AppOverrides(clock=fixed_clock(), http=http)) as client:
            data = (await client.post("/v1/optimize", json=request)).json()
    # The forecast ends at now + 72 h = 2026-06-06T10:00Z (inclusive row): later hours are replayed 2023.
    sources = {o["start"][11:16]: o["carbon_source"] for o in data["options"]}
    assert sources["08:00"] == "electricitymaps:forecast+fallback:replay-2023"
    assert sources["10:00"] in {"electricitymaps:forecast+fallback:replay-2023", "fallback:replay-2023"}
    assert FIXED_NOW.tzinfo is UTC
