"""Issue 13 item 1: every option names the kind of carbon data it rests on, and the answer warns."""

from __future__ import annotations

from typing import Any

import httpx

from carbon_optimizer.api.schemas import OptimizeResponse
from carbon_optimizer.app import AppOverrides
from tests.api.conftest import ClientFactory
from tests.fakes import FakeCarbon, fixed_clock

WINDOW = {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"}
WORKLOAD = {"duration_minutes": 120, "vcpus": 2, "memory_gib": 4, "power_watts": 500}


async def _optimize(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    payload = {"workload": WORKLOAD, "window": WINDOW, "objective": {"mode": "carbon"}, **body}
    response = await client.post("/v1/optimize", json=payload)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    OptimizeResponse.model_validate(data)
    return data


async def test_bundled_replay_and_flat_are_labelled_summarised_and_warned(client: httpx.AsyncClient) -> None:
    # The embedded default: DE replays 2023 hourly, gcp/europe-west1 (BE) has only a flat annual mean.
    data = await _optimize(client, locations=[{"zone": "DE"}, {"provider": "gcp", "region": "europe-west1"}])
    kinds = {o["location"].get("region", o["location"]["zone"]): o["carbon_data"] for o in data["options"]}
    assert kinds == {"DE": "replay", "europe-west1": "flat"}
    assert data["data_quality"] == {"flat": 1, "replay": 1, "forecast": 0, "history": 0}
    warnings = " | ".join(data["warnings"])
    assert "start time cannot be optimised for gcp/europe-west1: its data has no time variation" in warnings
    assert "locations on different kinds of carbon data are ranked against each other" in warnings
    if data["best"]["location"]["zone"] == "DE":
        # offline, DE's curve is our forecaster fitted on the bundled 2023 history (issue 14)
        assert "best start for DE comes from our forecast fitted on the bundled 2023 data" in warnings


async def test_flat_only_location_is_never_silent(client: httpx.AsyncClient) -> None:
    data = await _optimize(client, locations=[{"provider": "gcp", "region": "europe-west1"}])
    assert data["best"]["carbon_data"] == "flat"
    assert data["best"]["start"] == WINDOW["earliest_start"]
    assert data["savings"]["emissions_g"] == 0
    assert any("no time variation" in w for w in data["warnings"])
    assert not any("different kinds" in w for w in data["warnings"])


async def test_replay_deciding_the_start_is_warned(client: httpx.AsyncClient) -> None:
    data = await _optimize(client, locations=[{"zone": "DE"}])
    assert data["best"]["carbon_data"] == "replay"  # our forecast, fitted on the bundled 2023 history
    assert data["best"]["carbon_source"].startswith("forecast:profile-ar")
    assert any(
        w.startswith("best start for DE comes from our forecast fitted on the bundled 2023 data")
        for w in data["warnings"]
    )


async def test_a_single_allowed_start_has_no_start_warning(client: httpx.AsyncClient) -> None:
    window = {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-03T12:00:00Z"}
    payload = {
        "workload": WORKLOAD,
        "window": window,
        "objective": {"mode": "carbon"},
        "locations": [{"zone": "DE"}],
    }
    data = (await client.post("/v1/optimize", json=payload)).json()
    assert data["candidates_evaluated"] == 1
    assert not any("comes from the 2023 curve" in w for w in data["warnings"])


async def test_live_forecast_is_forecast_without_data_warnings(client_factory: ClientFactory) -> None:
    carbon = FakeCarbon({"DE": lambda h: 100.0 + h % 5}, label="electricitymaps:forecast")
    async with client_factory(overrides=AppOverrides(carbon=carbon, clock=fixed_clock())) as client:
        data = await _optimize(client, locations=[{"zone": "DE"}])
    assert data["best"]["carbon_data"] == "forecast"
    assert data["data_quality"]["forecast"] == 1
    assert data["warnings"] == []
    # The baseline carries its kind too.
    assert data["baseline"]["carbon_data"] == "forecast"
