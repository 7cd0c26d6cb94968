"""Request times are floored to the second once, at the edge, for baseline and candidates alike.

Before: the baseline start was truncated to the second inside the service while candidates kept
the microseconds, so a one-window request reported negative savings against itself, and on flat
data the fractional offsets made equal windows differ in the last bits (the later start won,
against the earlier-start tie rule).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from carbon_optimizer.app import AppOverrides
from tests.api.conftest import ClientFactory
from tests.fakes import FakeCarbon, fixed_clock


def alternating(hour: int) -> float:
    return 100.0 if hour % 2 == 0 else 500.0


async def optimize(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/optimize", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.mark.parametrize("fraction", [".000001", ".5", ".700", ".999999"])
async def test_one_window_request_saves_nothing_against_itself(
    client_factory: ClientFactory, fraction: str
) -> None:
    overrides = AppOverrides(carbon=FakeCarbon({"DE": alternating}), clock=fixed_clock())
    body = {
        "workload": {"duration_minutes": 60, "vcpus": 4, "memory_gib": 16},
        "locations": [{"zone": "DE"}],
        "window": {
            "earliest_start": f"2026-06-03T12:00:00{fraction}Z",
            "deadline": f"2026-06-03T13:00:00{fraction}Z",
        },
        "objective": {"mode": "carbon"},
    }
    async with client_factory(overrides=overrides) as client:
        data = await optimize(client, body)
    assert data["candidates_evaluated"] == 1
    assert data["best"]["start"] == data["baseline"]["start"] == "2026-06-03T12:00:00Z"
    assert data["window"]["earliest_start"] == "2026-06-03T12:00:00Z"
    assert data["best"]["emissions_g"] == data["baseline"]["emissions_g"]
    assert data["savings"]["emissions_g"] == 0


@pytest.mark.parametrize("fraction", [".1", ".333333", ".7"])
async def test_equal_windows_tie_to_the_earlier_start(client_factory: ClientFactory, fraction: str) -> None:
    overrides = AppOverrides(carbon=FakeCarbon({"DE": lambda hour: 287.3}), clock=fixed_clock())
    body = {
        "workload": {"duration_minutes": 90, "vcpus": 4, "memory_gib": 16},
        "locations": [{"zone": "DE"}],
        "window": {
            "earliest_start": f"2026-06-03T12:00:07{fraction}Z",
            "deadline": f"2026-06-04T12:00:07{fraction}Z",
        },
        "time_step_minutes": 15,
        "objective": {"mode": "carbon"},
        "max_results": 5,
    }
    async with client_factory(overrides=overrides) as client:
        data = await optimize(client, body)
    starts = [option["start"] for option in data["options"]]
    assert starts == [
        "2026-06-03T12:00:07Z",
        "2026-06-03T12:15:07Z",
        "2026-06-03T12:30:07Z",
        "2026-06-03T12:45:07Z",
        "2026-06-03T13:00:07Z",
    ]
    assert len({option["score"] for option in data["options"]}) == 1
    assert data["savings"]["emissions_g"] == 0


async def test_explicit_baseline_start_is_floored_like_the_candidates(client_factory: ClientFactory) -> None:
    overrides = AppOverrides(carbon=FakeCarbon({"DE": alternating}), clock=fixed_clock())
    body = {
        "workload": {"duration_minutes": 60, "vcpus": 4, "memory_gib": 16},
        "locations": [{"zone": "DE"}],
        "window": {"earliest_start": "2026-06-03T12:00:00Z", "deadline": "2026-06-03T13:00:00Z"},
        "baseline": {"location": {"zone": "DE"}, "start": "2026-06-03T12:00:00.900Z"},
        "objective": {"mode": "carbon"},
    }
    async with client_factory(overrides=overrides) as client:
        data = await optimize(client, body)
    assert data["baseline"]["start"] == "2026-06-03T12:00:00Z"
    assert data["savings"]["emissions_g"] == 0


async def test_series_endpoint_accepts_the_same_seven_days_as_optimize(client: httpx.AsyncClient) -> None:
    # The cap applies to the requested range, not to the range floored to the hour.
    window = {"start": "2026-06-03T10:07:00Z", "end": "2026-06-10T10:07:00Z"}
    optimize_body = {
        "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
        "locations": [{"zone": "DE"}],
        "window": {"earliest_start": window["start"], "deadline": window["end"]},
        "objective": {"mode": "carbon"},
    }
    assert (await client.post("/v1/optimize", json=optimize_body)).status_code == 200
    response = await client.get("/v1/zones/DE/carbon-intensity", params=window)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["start"] == "2026-06-03T10:00:00Z"  # listed from the hour containing start
    assert data["points"][-1]["datetime"] == "2026-06-10T10:00:00Z"
    too_long = {"start": "2026-06-03T10:07:00Z", "end": "2026-06-10T10:07:01Z"}
    refused = await client.get("/v1/zones/DE/carbon-intensity", params=too_long)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["query", "end"]
