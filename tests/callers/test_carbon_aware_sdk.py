"""Carbon Aware SDK Web API compatibility: routes, DTO shapes, status codes.

The status-code cases are the ones the SDK's own integration tests check
(CarbonAwareControllerTests, LocationsControllerTests), with the same inputs; the values are
checked against a programmable fake carbon source behind the real service, so averages, best
points and rolling windows are computed from known numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from carbon_optimizer.api.routes.carbon_aware_sdk import (
    SdkCarbonIntensityDTO,
    SdkEmissionsData,
    SdkEmissionsForecastDTO,
    SdkLocation,
)
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.settings import ElectricityMapsSettings, Settings
from tests.fakes import FIXED_NOW, FakeCarbon, fixed_clock, hour_of
from tests.support.http import mocked_upstream


def profile(h: int) -> float:
    """Distinct value per hour of the day: 100 + 10 × hour (UTC)."""
    return 100.0 + 10.0 * (h % 24)


# eastus → US-MIDA-PJM, westus → US-CAL-CISO, northeurope → IE in the bundled region catalog.
PROFILES: dict[str, Callable[[int], float]] = {
    "US-MIDA-PJM": profile,
    "US-CAL-CISO": lambda h: profile(h) + 5.0,
    "IE": lambda h: 50.0,
}


@pytest.fixture
async def fake_carbon() -> FakeCarbon:
    return FakeCarbon(PROFILES)


@pytest.fixture
async def sdk(fake_carbon: FakeCarbon) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None), AppOverrides(carbon=fake_carbon, clock=fixed_clock()))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sdk") as client:
            yield client


def assert_problem(response: httpx.Response, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == 400
    assert isinstance(body["errors"], dict)
    if field is not None:
        assert field in body["errors"], body
    return body


# ----- /emissions/bylocation(s) -----


@pytest.mark.parametrize(
    ("start", "end", "location", "zone_offset_h", "count"),
    [
        # The SDK's own cases; 24 h beginning off the hour touch 25 hourly intervals.
        ("2022-1-1T04:05:06Z", "2022-1-2T04:05:06Z", "eastus", 0, 25),
        ("2021-12-25T00:00:00+06:00", "2021-12-26T00:00:00+06:00", "westus", 5, 24),
    ],
)
async def test_by_location_returns_the_points_of_the_range(
    sdk: httpx.AsyncClient, start: str, end: str, location: str, zone_offset_h: int, count: int
) -> None:
    response = await sdk.get(
        "/emissions/bylocation", params={"location": location, "time": start, "toTime": end}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    points = [SdkEmissionsData.model_validate(p) for p in response.json()]
    assert len(points) == count
    for point in points:
        when = datetime.fromisoformat(point.time)
        assert point.location == location
        assert point.duration == "01:00:00"
        assert point.rating == profile(hour_of(when)) + zone_offset_h
    assert response.headers["x-carbon-data-sources"] == "fake:test"


async def test_by_location_without_a_time_is_the_interval_containing_now(sdk: httpx.AsyncClient) -> None:
    response = await sdk.get("/emissions/bylocation", params={"location": "eastus"})
    assert response.status_code == 200
    [point] = response.json()
    assert point["time"] == FIXED_NOW.isoformat()
    assert point["rating"] == profile(hour_of(FIXED_NOW))


@pytest.mark.parametrize(
    "path",
    [
        "/emissions/bylocation",
        "/emissions/bylocations",
        "/emissions/bylocations/best",
        "/emissions/forecasts/current",
        "/emissions/average-carbon-intensity",
    ],
)
@pytest.mark.parametrize("params", [{"location": ""}, {"non-location-param": ""}])
async def test_missing_or_empty_location_is_400(
    sdk: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    body = assert_problem(await sdk.get(path, params=params), "location")
    assert body["title"] == "ArgumentException"


async def test_unknown_location_is_400_naming_it(sdk: httpx.AsyncClient) -> None:
    body = assert_problem(await sdk.get("/emissions/bylocation", params={"location": "atlantis"}), "location")
    assert "atlantis" in body["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"location": "eastus", "toTime": "2022-01-01T00:00:00Z"}, "time"),
        ({"location": "eastus", "time": "2022-01-02T00:00:00Z", "toTime": "2022-01-01T00:00:00Z"}, "time"),
        ({"location": "eastus", "time": "yesterday"}, "time"),
        ({"location": "eastus", "time": "2022-01-01T00:00:00Z", "toTime": "2022-03-01T00:00:00Z"}, "toTime"),
    ],
)
async def test_bad_time_ranges_are_400(sdk: httpx.AsyncClient, params: dict[str, str], field: str) -> None:
    assert_problem(await sdk.get("/emissions/bylocations", params=params), field)


async def test_by_locations_takes_several_and_best_keeps_the_lowest(sdk: httpx.AsyncClient) -> None:
    params: httpx.QueryParams = httpx.QueryParams(
        [
            ("location", "eastus"),
            ("location", "northeurope"),
            ("time", "2022-01-01T00:00:00Z"),
            ("toTime", "2022-01-01T03:00:00Z"),
        ]
    )
    every = (await sdk.get("/emissions/bylocations", params=params)).json()
    assert {p["location"] for p in every} == {"eastus", "northeurope"}
    assert len(every) == 6
    best = await sdk.get("/emissions/bylocations/best", params=params)
    assert best.status_code == 200
    # northeurope (IE) is flat at 50: every one of its points ties for best.
    assert [(p["location"], p["rating"]) for p in best.json()] == [("northeurope", 50.0)] * 3


async def test_cloud_regions_and_zones_are_locations_too(sdk: httpx.AsyncClient) -> None:
    params = httpx.QueryParams(
        [("location", "aws:us-east-1"), ("location", "US-MIDA-PJM"), ("time", "2022-01-01T05:00:00Z")]
    )
    points = (await sdk.get("/emissions/bylocations", params=params)).json()
    assert [p["rating"] for p in points] == [profile(hour_of(datetime(2022, 1, 1, 5, tzinfo=UTC)))] * 2


# ----- forecasts -----


async def test_current_forecast_has_the_sdk_shape_and_its_optimum(sdk: httpx.AsyncClient) -> None:
    response = await sdk.get("/emissions/forecasts/current", params={"location": "westus"})
    assert response.status_code == 200
    [raw] = response.json()
    forecast = SdkEmissionsForecastDTO.model_validate(raw)
    assert forecast.requestedAt == FIXED_NOW.isoformat()
    assert forecast.windowSize == 0
    assert len(forecast.forecastData) == 24
    values = [p.value for p in forecast.forecastData]
    assert [p.value for p in forecast.optimalDataPoints] == [min(values)]
    assert forecast.optimalDataPoints[0].timestamp == "2026-06-04T00:00:00+00:00"  # hour 0 is cheapest


async def test_window_size_is_a_rolling_average_within_the_bounds(sdk: httpx.AsyncClient) -> None:
    params = {
        "location": "eastus",
        "dataStartAt": "2026-06-03T12:00:00Z",
        "dataEndAt": "2026-06-03T18:00:00Z",
        "windowSize": "90",
    }
    [forecast] = (await sdk.get("/emissions/forecasts/current", params=params)).json()
    assert forecast["windowSize"] == 90
    assert forecast["dataStartAt"] == "2026-06-03T12:00:00+00:00"
    starts = [p["timestamp"] for p in forecast["forecastData"]]
    assert starts == [f"2026-06-03T{h}:00:00+00:00" for h in (12, 13, 14, 15, 16)]
    first = forecast["forecastData"][0]
    assert first["duration"] == 90
    assert first["value"] == pytest.approx((profile(12) * 60 + profile(13) * 30) / 90, abs=1e-3)
    assert forecast["optimalDataPoints"] == [first]  # the profile rises through the day


@pytest.mark.parametrize(
    "params",
    [
        {"dataStartAt": "1999-01-01T00:00:00Z", "dataEndAt": "1999-01-02T00:00:00Z"},  # the SDK's own case
        {"dataStartAt": "2026-06-03T15:00:00Z", "dataEndAt": "2026-06-03T12:00:00Z"},
        {"dataEndAt": "2026-06-09T00:00:00Z"},
        {"windowSize": "-5"},
        {"windowSize": "ten"},
    ],
)
async def test_current_forecast_bounds_outside_the_forecast_are_400(
    sdk: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert_problem(await sdk.get("/emissions/forecasts/current", params={"location": "westus", **params}))


@pytest.mark.parametrize(
    ("location", "requested_at"),
    [(None, None), ("eastus", None), (None, "2021-09-01T08:30:00Z"), ("eastus", "2021-9-1T08:30:00Z")],
)
async def test_batch_forecast_missing_or_malformed_fields_are_400(
    sdk: httpx.AsyncClient, location: str | None, requested_at: str | None
) -> None:
    assert_problem(
        await sdk.post(
            "/emissions/forecasts/batch", json=[{"location": location, "requestedAt": requested_at}]
        )
    )


@pytest.mark.parametrize(
    ("requested", "start", "end", "location", "count"),
    [
        ("2021-09-01T08:30:00Z", "2021-09-01T09:00:00Z", "2021-09-01T12:00:00Z", "eastus", 1),
        ("2021-09-01T08:30:00Z", "2021-09-01T08:30:00Z", "2021-09-02T08:30:00Z", "westus", 3),
    ],
)
async def test_batch_forecast_answers_each_item(
    sdk: httpx.AsyncClient, requested: str, start: str, end: str, location: str, count: int
) -> None:
    body = [{"requestedAt": requested, "dataStartAt": start, "dataEndAt": end, "location": location}] * count
    response = await sdk.post("/emissions/forecasts/batch", json=body)
    assert response.status_code == 200, response.text
    forecasts = [SdkEmissionsForecastDTO.model_validate(f) for f in response.json()]
    assert len(forecasts) == count
    for forecast in forecasts:
        assert datetime.fromisoformat(forecast.requestedAt) == datetime.fromisoformat(requested)
        assert forecast.location == location
        assert forecast.optimalDataPoints
        assert forecast.forecastData


async def test_batch_body_must_be_an_array(sdk: httpx.AsyncClient) -> None:
    assert_problem(await sdk.post("/emissions/forecasts/batch", json={"location": "eastus"}))
    not_json = await sdk.post(
        "/emissions/forecasts/batch", content=b"not json", headers={"content-type": "application/json"}
    )
    assert_problem(not_json)


# ----- average carbon intensity -----


def weighted_mean(start: datetime, end: datetime, fn: Callable[[int], float]) -> float:
    total, cursor = 0.0, start
    while cursor < end:
        nxt = min(end, cursor.replace(minute=0, second=0) + timedelta(hours=1))
        total += fn(hour_of(cursor)) * (nxt - cursor).total_seconds()
        cursor = nxt
    return total / (end - start).total_seconds()


@pytest.mark.parametrize(
    ("start", "end", "location"),
    [
        ("2022-1-1T04:05:06Z", "2022-1-2T04:05:06Z", "eastus"),
        ("2021-12-25T00:00:00+06:00", "2021-12-26T00:00:00+06:00", "westus"),
    ],
)
async def test_average_carbon_intensity_is_time_weighted(
    sdk: httpx.AsyncClient, start: str, end: str, location: str
) -> None:
    response = await sdk.get(
        "/emissions/average-carbon-intensity",
        params={"location": location, "startTime": start, "endTime": end},
    )
    assert response.status_code == 200
    dto = SdkCarbonIntensityDTO.model_validate(response.json())
    begin, finish = datetime.fromisoformat(dto.startTime), datetime.fromisoformat(dto.endTime)
    padded = start.replace("2022-1-1T", "2022-01-01T").replace("2022-1-2T", "2022-01-02T")
    assert begin == datetime.fromisoformat(padded.replace("Z", "+00:00"))
    fn = PROFILES["US-MIDA-PJM" if location == "eastus" else "US-CAL-CISO"]
    assert dto.carbonIntensity == pytest.approx(weighted_mean(begin, finish, fn), abs=1e-3)
    assert dto.location == location


@pytest.mark.parametrize(
    ("location", "start", "end"),
    [
        (None, None, None),
        ("eastus", None, None),
        ("eastus", "2022-03-01T15:30:00Z", None),
        ("eastus", None, "2022-03-01T18:00:00Z"),
        ("westus", "2022-3-1T15:30:00Z", "2022-3-1T18:00:00Z"),  # unpadded in a JSON body
    ],
)
async def test_average_batch_missing_or_malformed_fields_are_400(
    sdk: httpx.AsyncClient, location: str | None, start: str | None, end: str | None
) -> None:
    body = [{"location": location, "startTime": start, "endTime": end}]
    assert_problem(await sdk.post("/emissions/average-carbon-intensity/batch", json=body))


@pytest.mark.parametrize("count", [1, 3])
async def test_average_batch_answers_each_item(sdk: httpx.AsyncClient, count: int) -> None:
    item = {
        "location": "westus",
        "startTime": "2021-12-25T00:00:00+06:00",
        "endTime": "2021-12-26T00:00:00+06:00",
    }
    response = await sdk.post("/emissions/average-carbon-intensity/batch", json=[item] * count)
    assert response.status_code == 200
    values = [SdkCarbonIntensityDTO.model_validate(v) for v in response.json()]
    assert len(values) == count
    for value in values:
        assert value.carbonIntensity != 0
        assert value.location == "westus"
        assert datetime.fromisoformat(value.startTime) == datetime(2021, 12, 24, 18, tzinfo=UTC)
        assert datetime.fromisoformat(value.endTime) == datetime(2021, 12, 25, 18, tzinfo=UTC)


# ----- locations, data chain, auth, schema -----


async def test_locations_lists_azure_names_and_ours(sdk: httpx.AsyncClient) -> None:
    response = await sdk.get("/locations")
    assert response.status_code == 200
    data = response.json()
    for key in ("eastus", "northeurope", "aws:us-east-1", "DE"):
        assert SdkLocation.model_validate(data[key]).name == key
    assert data["eastus"]["latitude"] is not None


async def test_routes_read_through_the_services_carbon_chain(
    sdk: httpx.AsyncClient, fake_carbon: FakeCarbon
) -> None:
    await sdk.get("/emissions/bylocation", params={"location": "northeurope"})
    assert [call[0] for call in fake_carbon.calls] == ["IE"]


async def test_an_outage_is_answered_from_the_fallback_with_provenance() -> None:
    # The live source is configured but unreachable (at the network boundary): the carbon chain
    # answers from the bundled data, and the SDK route says so in its provenance header.
    async with mocked_upstream() as (router, http):
        router.route(host="api.electricitymaps.com").mock(side_effect=httpx.ConnectError("refused"))
        settings = Settings(
            _env_file=None,
            electricitymaps=ElectricityMapsSettings(api_key="k-test", request_deadline_s=1.0, max_retries=0),
        )
        app = create_app(settings, AppOverrides(clock=fixed_clock(), http=http))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://sdk") as c,
        ):
            response = await c.get("/emissions/forecasts/current", params={"location": "eastus"})
    assert response.status_code == 200
    assert response.headers["x-carbon-data-sources"].startswith("fallback:")


async def test_api_keys_apply_to_the_sdk_routes_and_they_stay_out_of_openapi() -> None:
    settings = Settings(_env_file=None, api_keys=["sdk-test-key-0123456789abcdef"])
    app = create_app(settings, AppOverrides(clock=fixed_clock()))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://sdk") as c,
    ):
        assert (await c.get("/locations")).status_code == 401
        ok = await c.get("/locations", headers={"x-api-key": "sdk-test-key-0123456789abcdef"})
        assert ok.status_code == 200
        schema = (await c.get("/openapi.json")).json()
    assert not any(path.startswith(("/emissions", "/locations")) for path in schema["paths"])
