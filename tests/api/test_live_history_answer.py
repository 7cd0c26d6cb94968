"""The answer says what our forecast was fitted on: measured live history, or the replay (app level).

The whole app with an Electricity Maps key; the upstream is respx at the network boundary, its
bodies in the documented v3 shapes (past-range `data` rows, 24 h `history` rows, a 72 h forecast).
The window lies beyond the provider's 72 h, so it rests on our forecaster alone.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from carbon_optimizer.app import AppOverrides
from carbon_optimizer.providers.carbon.forecast import OFFLINE_MAPE_PCT, backtested_mape_pct
from carbon_optimizer.settings import ElectricityMapsSettings, Settings
from tests.api.conftest import ClientFactory
from tests.fakes import FIXED_NOW, fixed_clock
from tests.support.http import mocked_upstream

BASE = "https://api.electricitymaps.com/v3"
HOUR = timedelta(hours=1)
TOKEN = "em-live-history-token-do-not-log"
REQUEST = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 16},
    "locations": [{"zone": "DE"}],
    "window": {"earliest_start": "2026-06-07T08:00:00Z", "deadline": "2026-06-07T20:00:00Z"},
    "objective": {"mode": "carbon"},
}


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _row(when: datetime) -> dict[str, Any]:
    value = 320.0 + 90.0 * math.sin(2 * math.pi * (when.hour - 6) / 24)
    return {"zone": "DE", "carbonIntensity": value, "datetime": _iso(when), "emissionFactorType": "lifecycle"}


def _rows(start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [_row(start + timedelta(hours=i)) for i in range(int((end - start) / timedelta(hours=1)))]


def _upstream(router: respx.Router, *, past_status: int = 200) -> None:
    def past(request: httpx.Request) -> httpx.Response:
        if past_status != 200:
            return httpx.Response(past_status, json={"status": "error", "message": "Unknown error occured"})
        start = datetime.fromisoformat(request.url.params["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(request.url.params["end"].replace("Z", "+00:00"))
        return httpx.Response(200, json={"zone": "DE", "data": _rows(start, end)})

    router.get(f"{BASE}/carbon-intensity/past-range").mock(side_effect=past)
    router.get(f"{BASE}/carbon-intensity/history").mock(
        return_value=httpx.Response(
            200, json={"zone": "DE", "history": _rows(FIXED_NOW - 24 * HOUR, FIXED_NOW)}
        )
    )
    router.get(f"{BASE}/carbon-intensity/forecast").mock(
        return_value=httpx.Response(
            200,
            json={
                "zone": "DE",
                "forecast": _rows(FIXED_NOW, FIXED_NOW + 73 * HOUR),
                "updatedAt": _iso(FIXED_NOW),
            },
        )
    )


HOUR = timedelta(hours=1)


def _settings() -> Settings:
    em = ElectricityMapsSettings(api_key=TOKEN, request_deadline_s=2.0, max_retries=0)
    return Settings(_env_file=None, electricitymaps=em)


@pytest.mark.parametrize(("past_status", "history"), [(200, "live"), (500, "replay")])
async def test_uncertainty_names_the_history_and_its_backtested_error(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, past_status: int, history: str
) -> None:
    async with mocked_upstream() as (router, http):
        _upstream(router, past_status=past_status)
        async with client_factory(_settings(), AppOverrides(clock=fixed_clock(), http=http)) as client:
            # The first request may find the fit still running (it runs off the answer's deadline).
            await client.post("/v1/optimize", json=REQUEST)
            response = await client.post("/v1/optimize", json=REQUEST)
    assert response.status_code == 200, response.text
    data = response.json()
    best = data["best"]
    assert best["carbon_source"] == "forecast:profile-ar"
    quality = best["uncertainty"]["forecast"]
    assert quality["history"] == history
    last_hour_ahead = quality["hours_ahead"][1]
    assert quality["backtested_mape_pct"] == backtested_mape_pct(last_hour_ahead, history)
    replay_warning = [w for w in data["warnings"] if "fitted on the bundled 2023" in w]
    if history == "live":
        assert quality["backtested_mape_pct"] < OFFLINE_MAPE_PCT  # the measured-history table
        # A fit on measured history supports a forecast, and no warning calls it a replay.
        assert best["carbon_data"] == "forecast"
        assert data["data_quality"]["forecast"] >= 1
        assert not replay_warning
    else:
        assert quality["backtested_mape_pct"] == OFFLINE_MAPE_PCT
        assert best["carbon_data"] == "replay"
        assert replay_warning
    assert TOKEN not in caplog.text
    assert TOKEN not in response.text
