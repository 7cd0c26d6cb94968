"""The Green Software Foundation Carbon Aware SDK's Web API, served from this service's data chain.

Existing SDK callers (its generated clients, its GitHub Action, the carbon-aware KEDA operator)
can point their base URL here and gain the fallback data, caching and provenance of this
service. Routes, query/body names, DTO shapes and status codes follow the SDK's Web API
(`src/CarbonAware.WebApi`); the behaviour its integration tests check is ported: 400 for a
missing or empty `location`, for an unknown location, for forecast boundaries outside the
forecast, for missing batch fields and for malformed batch dates; 204 when a query matches no
data. docs/carbon-aware-sdk.md has the mapping and every difference.

Why it looks like this:
- Data goes through `OptimizerService.zone_series`, i.e. the same carbon chain (live source,
  two-tier cache, bundled fallback) and the same range limits as the rest of the API; this
  module knows nothing about concrete providers.
- Location names resolve, in order, as an Azure region (`eastus`, the SDK's default location
  source), as `provider:region` (`aws:us-east-1`) and as an Electricity Maps zone (`DE`).
- Errors are the SDK's `ValidationProblemDetails` (`errors` is a map from parameter name to
  messages), not this API's problem shape, because SDK clients deserialise that. For the same
  reason these routes stay out of /openapi.json: SDK clients are generated from the SDK's own
  specification, and the shared OpenAPI document promises `ProblemOut` for every error.
- Provenance, which the SDK's DTOs have no field for, travels in the `X-Carbon-Data-Sources`
  header (the source labels of the points returned, e.g. `fallback:replay-2023`).
- Query dates are parsed leniently like ASP.NET's model binding (`2022-1-1T04:05:06Z`, and a `+`
  offset that arrived as a space); JSON body dates strictly, like System.Text.Json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from carbon_optimizer.api.state import AppState, get_state, request_id
from carbon_optimizer.errors import InvalidInput

router = APIRouter(tags=["carbon-aware-sdk"], include_in_schema=False)

FORECAST_HORIZON = timedelta(hours=24)
_JSON = "application/json; charset=utf-8"
_PROBLEM = "application/problem+json; charset=utf-8"
_SOURCES_HEADER = "x-carbon-data-sources"
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_LENIENT = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
)
_STRICT = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?$")


# ----- the SDK's DTOs (documentation and test validation; routes serialise dicts) -----


class SdkEmissionsData(BaseModel):
    """`GSF.CarbonAware.Models.EmissionsData` as the SDK serialises it (duration is a TimeSpan)."""

    location: str
    time: str
    rating: float
    duration: str  # "hh:mm:ss"


class SdkEmissionsDataDTO(BaseModel):
    """`EmissionsDataDTO`: one forecast point (duration in whole minutes)."""

    location: str
    timestamp: str
    duration: int
    value: float


class SdkEmissionsForecastDTO(BaseModel):
    """`EmissionsForecastDTO`."""

    generatedAt: str  # noqa: N815 - the SDK's wire names
    requestedAt: str  # noqa: N815
    location: str
    dataStartAt: str  # noqa: N815
    dataEndAt: str  # noqa: N815
    windowSize: int  # noqa: N815
    optimalDataPoints: list[SdkEmissionsDataDTO]  # noqa: N815
    forecastData: list[SdkEmissionsDataDTO]  # noqa: N815


class SdkCarbonIntensityDTO(BaseModel):
    """`CarbonIntensityDTO`."""

    location: str
    startTime: str  # noqa: N815
    endTime: str  # noqa: N815
    carbonIntensity: float  # noqa: N815


class SdkLocation(BaseModel):
    """`GSF.CarbonAware.Models.Location`."""

    latitude: float | None
    longitude: float | None
    name: str


# ----- errors -----


class SdkError(Exception):
    """A 400 in the SDK's ValidationProblemDetails shape."""

    def __init__(self, title: str, detail: str | None, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail or title)
        self.title = title
        self.detail = detail
        self.errors = errors or {}


def _invalid(errors: dict[str, list[str]]) -> SdkError:
    """What the SDK's parameter validation throws: ArgumentException("Invalid parameters") + Data."""
    return SdkError("ArgumentException", "Invalid parameters", errors)


def _problem(request: Request, exc: SdkError) -> Response:
    body: dict[str, Any] = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": exc.title,
        "status": 400,
    }
    if exc.detail:
        body["detail"] = exc.detail
    body["errors"] = exc.errors
    body["traceId"] = request_id(request)
    return Response(orjson.dumps(body), status_code=400, media_type=_PROBLEM)


def _from_invalid_input(exc: InvalidInput, field: str) -> SdkError:
    return SdkError("ArgumentException", exc.message, {field: [exc.message]})


# ----- parsing -----


def _query_time(raw: str | None, name: str) -> datetime | None:
    """A query-string date as ASP.NET binds it: lenient digits, offset optional (UTC assumed)."""
    if raw is None or raw == "":
        return None
    match = _LENIENT.match(raw.strip())
    if match is None:
        raise SdkError(
            "One or more validation errors occurred.", None, {name: [f"The value '{raw}' is not valid."]}
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    text = f"{year}-{int(month):02d}-{int(day):02d}T{int(hour or 0):02d}:{minute or '00'}:{second or '00'}"
    text += fraction or ""
    if offset and offset != "Z":
        text += offset if ":" in offset else f"{offset[:3]}:{offset[3:]}"
    return _bounded(text, raw, name)


def _body_time(raw: Any, name: str) -> datetime | None:
    """A JSON body date as System.Text.Json reads DateTimeOffset: ISO 8601, zero-padded."""
    if raw is None:
        return None
    if not isinstance(raw, str) or _STRICT.match(raw) is None:
        raise SdkError(
            "One or more validation errors occurred.",
            None,
            {name: [f"The JSON value could not be converted to System.DateTimeOffset. Path: {name}"]},
        )
    return _bounded(raw, raw, name)


def _bounded(text: str, raw: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SdkError(
            "One or more validation errors occurred.", None, {name: [f"The value '{raw}' is not valid."]}
        ) from None
    when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    if not _EARLIEST <= when < _LATEST:
        raise _invalid({name: [f"{name} must be between 1970 and 2100"]})
    return when


def _names(raw: list[str] | None) -> list[str]:
    return [name.strip() for name in raw or [] if name and name.strip()]


def _out_time(when: datetime) -> str:
    """DateTimeOffset in UTC as .NET writes it: 2022-01-01T04:00:00+00:00."""
    return when.astimezone(UTC).isoformat()


def _timespan(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}.{text}" if days else text


# ----- data -----


@dataclass(frozen=True, slots=True)
class _Point:
    time: datetime
    duration: timedelta
    value: float

    @property
    def end(self) -> datetime:
        return self.time + self.duration


def _zone_for(state: AppState, name: str) -> str:
    """SDK location name → Electricity Maps zone (Azure region, provider:region, or zone)."""
    catalog = state.catalog
    region = catalog.get("azure", name)
    if region is None and ":" in name:
        provider, _, code = name.partition(":")
        region = catalog.get(provider.strip(), code.strip())
    if region is not None:
        return region.zone
    zone = catalog.zone(name)
    if zone is not None:
        return zone.zone
    raise SdkError(
        "ArgumentException",
        f"Unknown Location: '{name}' not found",
        {"location": [f"Unknown Location: '{name}' not found"]},
    )


async def _points(
    state: AppState, zone: str, start: datetime, end: datetime, field: str, sources: set[str]
) -> list[_Point]:
    """The service's series for [start, end) as SDK-style points; sources collected for the header."""
    try:
        series = await state.service.zone_series(zone, start, end)
    except InvalidInput as exc:
        raise _from_invalid_input(exc, field) from None
    step = timedelta(minutes=int(series["step_minutes"]))
    points = []
    for item in series["points"]:
        sources.add(str(item["source"]))
        points.append(
            _Point(
                datetime.fromisoformat(item["datetime"].replace("Z", "+00:00")),
                step,
                float(item["carbon_intensity_g_per_kwh"]),
            )
        )
    return points


def _average(points: list[_Point], start: datetime, end: datetime) -> float:
    """Time-weighted mean over [start, end); 400 when the points do not cover the period."""
    covered = [p for p in points if p.end > start and p.time < end]
    if not covered or covered[0].time > start or covered[-1].end < end:
        raise SdkError(
            "ArgumentException",
            "Period out of range. Data points did not cover the requested average period: "
            f"{start} through {end}",
        )
    total = (end - start).total_seconds()
    return sum(p.value * (min(end, p.end) - max(start, p.time)).total_seconds() for p in covered) / total


def _rolling(points: list[_Point], window: timedelta, start: datetime, end: datetime) -> list[_Point]:
    """The SDK's rolling average: windows of `window` every point-duration from `start` up to `end`."""
    if window <= timedelta(0) or not points:
        return points
    tick = points[0].duration
    first = max(start, points[0].time)
    last_end = points[-1].end
    out: list[_Point] = []
    begin = first
    while begin < last_end:
        finish = begin + window
        if finish <= last_end:
            out.append(_Point(begin, window, _average(points, begin, finish)))
        begin += tick
        if begin + window > end:
            break
    return out


def _optimal(points: list[_Point]) -> list[_Point]:
    if not points:
        return []
    best = min(p.value for p in points)
    return [p for p in points if p.value == best]


def _data_json(name: str, point: _Point) -> dict[str, Any]:
    return {
        "location": name,
        "time": _out_time(point.time),
        "rating": round(point.value, 3),
        "duration": _timespan(point.duration),
    }


def _dto_json(name: str, point: _Point) -> dict[str, Any]:
    return {
        "location": name,
        "timestamp": _out_time(point.time),
        "duration": int(point.duration.total_seconds() // 60),
        "value": round(point.value, 3),
    }


def _respond(payload: Any, sources: set[str], status: int = 200) -> Response:
    headers = {_SOURCES_HEADER: ",".join(sorted(sources))} if sources else {}
    if status == 204:
        return Response(status_code=204, headers=headers)
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON, headers=headers)


# ----- handlers shared by GET and POST forms -----


async def _emissions(
    state: AppState, names: list[str], start: datetime | None, end: datetime | None, sources: set[str]
) -> list[tuple[str, _Point]]:
    if not names:
        raise _invalid({"location": ["location is not set"]})
    if end is not None and start is None:
        raise _invalid({"time": ["time must be defined if toTime is defined"]})
    if start is not None and end is not None and start >= end:
        raise _invalid({"time": ["time must be before toTime"]})
    begin = start or state.service.clock().astimezone(UTC)
    results: list[tuple[str, _Point]] = []
    for name in names:
        zone = _zone_for(state, name)
        if end is None:  # a point in time: the interval that contains it
            points = await _points(state, zone, begin, begin + timedelta(hours=1), "time", sources)
            results.extend((name, p) for p in points if p.time <= begin < p.end)
        else:
            points = await _points(state, zone, begin, end, "toTime", sources)
            results.extend((name, p) for p in points if p.end > begin and p.time < end)
    return results


async def _forecast(
    state: AppState,
    name: str,
    requested: datetime,
    start: datetime | None,
    end: datetime | None,
    window_minutes: int | None,
    sources: set[str],
) -> dict[str, Any]:
    if window_minutes is not None and window_minutes < 0:
        raise _invalid({"windowSize": ["windowSize must not be negative"]})
    zone = _zone_for(state, name)
    issued = requested.replace(minute=0, second=0, microsecond=0)
    horizon_end = requested + FORECAST_HORIZON
    if horizon_end != horizon_end.replace(minute=0, second=0, microsecond=0):
        horizon_end = horizon_end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    points = await _points(state, zone, issued, horizon_end, "dataEndAt", sources)
    if not points:
        raise SdkError("ArgumentException", f"no forecast data for '{name}'")
    lo, hi = points[0].time, points[-1].end
    data_start = start or lo
    data_end = end or hi
    errors: dict[str, list[str]] = {}
    span = f"'{_out_time(lo)}' through '{_out_time(hi)}'"
    if data_start >= data_end:
        errors.setdefault("dataStartAt", []).append("dataStartAt must be earlier than dataEndAt")
    if not lo <= data_start <= hi:
        errors.setdefault("dataStartAt", []).append(
            f"dataStartAt must be within time range of the forecasted data, {span}"
        )
    if not lo <= data_end <= hi:
        errors.setdefault("dataEndAt", []).append(
            f"dataEndAt must be within time range of the forecasted data, {span}"
        )
    if errors:
        raise SdkError("ArgumentException", "Invalid EmissionsForecast", errors)
    kept = [p for p in points if p.end > data_start and p.time <= data_end]
    window = timedelta(minutes=window_minutes or 0)
    rolled = _rolling(kept, window, data_start, data_end)
    return {
        "generatedAt": _out_time(issued),
        "requestedAt": _out_time(requested),
        "location": name,
        "dataStartAt": _out_time(start or (rolled[0].time if rolled else data_start)),
        "dataEndAt": _out_time(end or (rolled[-1].time if rolled else data_end)),
        "windowSize": window_minutes or 0,
        "optimalDataPoints": [_dto_json(name, p) for p in _optimal(rolled)],
        "forecastData": [_dto_json(name, p) for p in rolled],
    }


async def _average_dto(
    state: AppState, name: str | None, start: datetime | None, end: datetime | None, sources: set[str]
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    if not name:
        errors["location"] = ["location is not set"]
    if start is None:
        errors["startTime"] = ["startTime is not set"]
    if end is None:
        errors["endTime"] = ["endTime is not set"]
    if errors:
        raise _invalid(errors)
    assert name is not None
    assert start is not None
    assert end is not None
    if start >= end:
        raise _invalid({"startTime": ["startTime must be before endTime"]})
    points = await _points(state, _zone_for(state, name), start, end, "endTime", sources)
    return {
        "location": name,
        "startTime": _out_time(start),
        "endTime": _out_time(end),
        "carbonIntensity": round(_average(points, start, end), 3),
    }


async def _json_array(request: Request) -> list[dict[str, Any]]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise SdkError(
            "One or more validation errors occurred.", None, {"$": ["The body is not valid JSON."]}
        ) from None
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise SdkError(
            "One or more validation errors occurred.",
            None,
            {"$": ["The body must be a JSON array of objects."]},
        )
    return body


# ----- routes -----


@router.get("/emissions/bylocation")
async def by_location(
    request: Request,
    location: str | None = None,
    time: str | None = None,
    toTime: str | None = None,  # noqa: N803 - the SDK's query names
) -> Response:
    """Observed emissions of one location at `time` or over [time, toTime)."""
    return await _by_locations(request, [location] if location is not None else [], time, toTime, best=False)


@router.get("/emissions/bylocations")
async def by_locations(
    request: Request,
    location: Annotated[list[str] | None, Query()] = None,
    time: str | None = None,
    toTime: str | None = None,  # noqa: N803
) -> Response:
    """Observed emissions of several locations."""
    return await _by_locations(request, location, time, toTime, best=False)


@router.get("/emissions/bylocations/best")
async def best_by_locations(
    request: Request,
    location: Annotated[list[str] | None, Query()] = None,
    time: str | None = None,
    toTime: str | None = None,  # noqa: N803
) -> Response:
    """The lowest-rated data point(s) among several locations."""
    return await _by_locations(request, location, time, toTime, best=True)


async def _by_locations(
    request: Request, location: list[str] | None, time: str | None, to_time: str | None, *, best: bool
) -> Response:
    state = get_state(request)
    sources: set[str] = set()
    try:
        start, end = _query_time(time, "time"), _query_time(to_time, "toTime")
        found = await _emissions(state, _names(location), start, end, sources)
    except SdkError as exc:
        return _problem(request, exc)
    if best and found:
        lowest = min(p.value for _, p in found)
        found = [(n, p) for n, p in found if p.value == lowest]
    if not found:
        return _respond(None, sources, 204)
    return _respond([_data_json(n, p) for n, p in found], sources)


@router.get("/emissions/forecasts/current")
async def current_forecast(
    request: Request,
    location: Annotated[list[str] | None, Query()] = None,
    dataStartAt: str | None = None,  # noqa: N803
    dataEndAt: str | None = None,  # noqa: N803
    windowSize: str | None = None,  # noqa: N803
) -> Response:
    """The current forecast of each location with its optimal window (rolling average of windowSize)."""
    state = get_state(request)
    sources: set[str] = set()
    try:
        names = _names(location)
        if not names:
            raise _invalid({"location": ["location is not set"]})
        start, end = _query_time(dataStartAt, "dataStartAt"), _query_time(dataEndAt, "dataEndAt")
        window = _window_size(windowSize)
        now = state.service.clock().astimezone(UTC)
        forecasts = [await _forecast(state, name, now, start, end, window, sources) for name in names]
    except SdkError as exc:
        return _problem(request, exc)
    return _respond(forecasts, sources)


def _window_size(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise SdkError(
            "One or more validation errors occurred.",
            None,
            {"windowSize": [f"The value '{raw}' is not valid."]},
        )
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SdkError(
            "One or more validation errors occurred.",
            None,
            {"windowSize": [f"The value '{raw}' is not valid."]},
        ) from None
    if not 0 <= value <= 7 * 1440:
        raise _invalid({"windowSize": ["windowSize must be between 0 and 10080 minutes"]})
    return value


@router.post("/emissions/forecasts/batch")
async def batch_forecast(request: Request) -> Response:
    """Forecasts as of each item's `requestedAt` (see docs: our data is not an archive of forecasts)."""
    state = get_state(request)
    sources: set[str] = set()
    try:
        items = await _json_array(request)
        results = []
        for index, item in enumerate(items):
            requested = _body_time(item.get("requestedAt"), f"$[{index}].requestedAt")
            start = _body_time(item.get("dataStartAt"), f"$[{index}].dataStartAt")
            end = _body_time(item.get("dataEndAt"), f"$[{index}].dataEndAt")
            window = _window_size(item.get("windowSize"))
            name = item.get("location")
            errors: dict[str, list[str]] = {}
            if not isinstance(name, str) or not name.strip():
                errors["location"] = ["location is not set"]
            if requested is None:
                errors["requestedAt"] = ["requestedAt is not set"]
            if errors:
                raise _invalid(errors)
            assert isinstance(name, str)
            assert requested is not None
            results.append(await _forecast(state, name.strip(), requested, start, end, window, sources))
    except SdkError as exc:
        return _problem(request, exc)
    return _respond(results, sources)


@router.get("/emissions/average-carbon-intensity")
async def average_carbon_intensity(
    request: Request,
    location: str | None = None,
    startTime: str | None = None,  # noqa: N803
    endTime: str | None = None,  # noqa: N803
) -> Response:
    """Time-weighted average carbon intensity of one location over [startTime, endTime)."""
    state = get_state(request)
    sources: set[str] = set()
    try:
        start, end = _query_time(startTime, "startTime"), _query_time(endTime, "endTime")
        result = await _average_dto(state, (location or "").strip() or None, start, end, sources)
    except SdkError as exc:
        return _problem(request, exc)
    return _respond(result, sources)


@router.post("/emissions/average-carbon-intensity/batch")
async def average_carbon_intensity_batch(request: Request) -> Response:
    """Averages for a list of {location, startTime, endTime}."""
    state = get_state(request)
    sources: set[str] = set()
    try:
        items = await _json_array(request)
        results = []
        for index, item in enumerate(items):
            start = _body_time(item.get("startTime"), f"$[{index}].startTime")
            end = _body_time(item.get("endTime"), f"$[{index}].endTime")
            name = item.get("location")
            clean = name.strip() if isinstance(name, str) and name.strip() else None
            results.append(await _average_dto(state, clean, start, end, sources))
    except SdkError as exc:
        return _problem(request, exc)
    return _respond(results, sources)


@router.get("/locations")
async def locations(request: Request) -> Response:
    """Every location name these routes accept, with coordinates where known."""
    catalog = get_state(request).catalog
    names: dict[str, dict[str, Any]] = {}
    for region in catalog.regions("azure"):
        names[region.region] = {
            "latitude": region.latitude,
            "longitude": region.longitude,
            "name": region.region,
        }
    for provider in catalog.providers():
        for region in catalog.regions(provider):
            key = f"{provider}:{region.region}"
            names[key] = {"latitude": region.latitude, "longitude": region.longitude, "name": key}
    for zone in catalog.zones():
        names.setdefault(zone.zone, {"latitude": None, "longitude": None, "name": zone.zone})
    return _respond(names, set())
