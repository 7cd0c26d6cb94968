"""GB Carbon Intensity API adapter (NESO, no key): the only module that knows its paths and shapes.

Great Britain only (England, Scotland, Wales; not Northern Ireland), half-hour periods, forecasts up
to 48 h ahead, history back to 2018. The value is the *average* operational CO2 of generation
(imports and losses included) in g CO2/kWh — there is no marginal signal here.

Zones (ours → the API's): `GB` is the national series (`/intensity`, which carries a measured
`actual` beside the `forecast` for past half-hours); the 14 DNO regions and the England/Scotland/
Wales aggregates are `GB-<SHORTNAME>` zones served by `/regional/...` (forecast values only — the
regional routes publish no `actual`, even for the past). Each point is labelled with what it is:
`carbonintensity-uk:actual` where a measured value exists, else `carbonintensity-uk:forecast`.

Time: requests and answers are UTC (`YYYY-MM-DDThh:mmZ`), so clock changes never shift a period.
The API returns every period whose *end* lies in `[from, to]`, so asking from `T + 1 min` yields
periods starting at `T` exactly. Ranges are cut into ≤ 13-day chunks (14 is the documented
national cap) that never cross 1 January (the API truncates such ranges at 31 Dec ~23:30).

| upstream answer                                        | raised                                  |
|--------------------------------------------------------|-----------------------------------------|
| zone outside GB / not in the zone table                | `NoDataForZone` (no request sent)       |
| 400 (`No postcode match…`, bad parameter), 404         | `NoDataForZone`                         |
| 401, 403 (NESO may block a client)                     | `ProviderAuthError`                     |
| 429 (after retries, honouring `Retry-After`)           | `ProviderRateLimited`                   |
| 5xx, timeout, connection error, circuit open           | `ProviderUnavailable`                   |
| 200 with an empty body or `{}` (documented outage)     | `ProviderUnavailable` (not retried)     |
| 200 with `"data": []`, or every value null             | `NoDataForZone`                         |
| 200 we cannot read (not JSON, wrong shape)             | `MalformedUpstreamResponse`             |

The HTTP goes through the shared seam (`providers/upstream.py`: deadline, retries, breaker,
metrics) with this module's `interpret` as its status table; the parsing below
`# ----- parsing (pure)` is unit-tested on fixtures without HTTP.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, validate_zone
from carbon_optimizer.providers.carbon.common import Point, Signal, points_to_series
from carbon_optimizer.providers.upstream import (
    CircuitBreaker,
    RetryPolicy,
    Sleep,
    SourceStatus,
    Upstream,
    parse_retry_after,
)
from carbon_optimizer.settings import CacheSettings, GBIntensitySettings

UPSTREAM = "carbonintensity-uk"
ACTUAL = f"{UPSTREAM}:actual"
FORECAST = f"{UPSTREAM}:forecast"
PERIOD = timedelta(minutes=30)
MAX_FORECAST_HOURS = 48
RANGE_CHUNK = timedelta(days=13)
NATIONAL = "GB"
_MAX_ERROR_TEXT = 200
ParsedT = TypeVar("ParsedT")

# Our zone name → NESO region id (None = the national `/intensity` series). Ids and short names are
# the API's documented list; region 18 ("GB", undocumented, forecast only) is not used: `GB` takes
# the national series, which has measured values.
GB_ZONES: Mapping[str, int | None] = {
    NATIONAL: None,
    "GB-NORTH-SCOTLAND": 1,
    "GB-SOUTH-SCOTLAND": 2,
    "GB-NORTH-WEST-ENGLAND": 3,
    "GB-NORTH-EAST-ENGLAND": 4,
    "GB-YORKSHIRE": 5,
    "GB-NORTH-WALES": 6,
    "GB-SOUTH-WALES": 7,
    "GB-WEST-MIDLANDS": 8,
    "GB-EAST-MIDLANDS": 9,
    "GB-EAST-ENGLAND": 10,
    "GB-SOUTH-WEST-ENGLAND": 11,
    "GB-SOUTH-ENGLAND": 12,
    "GB-LONDON": 13,
    "GB-SOUTH-EAST-ENGLAND": 14,
    "GB-ENGLAND": 15,
    "GB-SCOTLAND": 16,
    "GB-WALES": 17,
}


class GBIntensityProvider:
    """Async client of api.carbonintensity.org.uk. Satisfies `SeriesSource` (`fetch`)."""

    name = UPSTREAM
    signals = frozenset({Signal.AVERAGE})

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: GBIntensitySettings,
        *,
        breaker: CircuitBreaker | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        defaults = CacheSettings()
        self.breaker = breaker or CircuitBreaker(
            UPSTREAM,
            failure_threshold=defaults.breaker_failure_threshold,
            reset_s=defaults.breaker_reset_s,
            clock=monotonic,
        )
        self._wall_clock = wall_clock
        self._upstream = Upstream(
            UPSTREAM,
            http,
            deadline_s=settings.request_deadline_s,
            read_timeout_s=settings.read_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            retry=RetryPolicy(max_retries=settings.max_retries, backoff_base_s=settings.backoff_base_s),
            breaker=self.breaker,
            interpret=interpret,
            wall_clock=wall_clock,
            monotonic=monotonic,
            sleep=sleep,
            rng=rng,
        )
        self.status: SourceStatus = self._upstream.status

    def __repr__(self) -> str:
        return f"GBIntensityProvider(base_url={self._base_url!r}, breaker={self.breaker.state.value})"

    # ----- coverage -----

    def covers(self, zone: str, signal: Signal = Signal.AVERAGE) -> bool:
        """Whether `zone` is one of ours in GB and `signal` is average (no request)."""
        return signal is Signal.AVERAGE and zone in GB_ZONES

    # ----- public endpoints -----

    async def fetch(self, request: SeriesRequest) -> Fetched:
        """Dispatch a `SeriesRequest` to its endpoint."""
        if request.kind is SeriesKind.FORECAST:
            return await self.forecast(request.zone)
        if request.kind is SeriesKind.HISTORY:
            return await self.history(request.zone)
        if request.kind is SeriesKind.LATEST:
            return await self.latest(request.zone)
        if request.start is None or request.end is None:
            raise ValueError("past-range requests need start and end")
        return await self.past_range(request.zone, request.start, request.end)

    async def forecast(self, zone: str, horizon_hours: int = MAX_FORECAST_HOURS) -> Fetched:
        """Half-hours from the current one up to `horizon_hours` ahead (capped at the API's 48 h).

        Asks `fw24h` when that suffices, else `fw48h`; a longer horizon is answered with 48 h (the
        series ends where the data ends; a chain fills the rest from its next source).
        """
        if horizon_hours <= 0:
            raise ValueError("horizon_hours must be positive")
        region = self._region(zone)
        hours = min(horizon_hours, MAX_FORECAST_HOURS)
        start = floor_period(self._wall_clock())
        end = start + timedelta(hours=hours)
        window = "fw24h" if hours <= 24 else "fw48h"
        path = _path(f"/intensity/{_wire_time(start + timedelta(minutes=1))}/{window}", region)
        periods = await self._call("forecast", path, lambda body: parse_periods(body, region))
        return self._fetched(zone, [p for p in periods if start <= p.start < end])

    async def history(self, zone: str) -> Fetched:
        """The 48 half-hours that ended by the start of the current one (`pt24h`)."""
        region = self._region(zone)
        now = floor_period(self._wall_clock())
        path = _path(f"/intensity/{_wire_time(now + timedelta(minutes=1))}/pt24h", region)
        periods = await self._call("history", path, lambda body: parse_periods(body, region))
        return self._fetched(zone, [p for p in periods if now - timedelta(hours=24) <= p.start < now])

    async def latest(self, zone: str) -> Fetched:
        """The current half-hour (`/intensity` or `/regional/regionid/{id}`)."""
        region = self._region(zone)
        path = "/intensity" if region is None else f"/regional/regionid/{region}"
        return self._fetched(zone, await self._call("latest", path, lambda body: parse_periods(body, region)))

    async def past_range(self, zone: str, start: datetime, end: datetime) -> Fetched:
        """Half-hours starting in [start, end), fetched in ≤ 13-day chunks that never cross a year."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("past_range needs timezone-aware start and end")
        if end <= start:
            raise ValueError("past_range needs start < end")
        region = self._region(zone)
        first = floor_period(start)
        parts = await asyncio.gather(
            *(
                self._call(
                    "past-range",
                    _path(f"/intensity/{_wire_time(a + timedelta(minutes=1))}/{_wire_time(b)}", region),
                    lambda body: parse_periods(body, region, allow_empty=True),
                )
                for a, b in range_chunks(first, end)
            )
        )
        periods = [p for part in parts for p in part if first <= p.start < end]
        if not periods:
            raise NoDataForZone(
                f"{UPSTREAM}: no data for zone {zone!r} in the requested range", source=UPSTREAM
            )
        return self._fetched(zone, periods)

    # ----- transport -----

    async def _call(self, endpoint: str, path: str, parse: Callable[[Any], ParsedT]) -> ParsedT:
        """One logical GET through the shared seam (deadline, retries, breaker, metrics, status).

        `interpret` (this module's status table) reads each answer; parsing runs inside the
        attempt, so a 2xx body we cannot read counts as a failure. No `Content-Type` header: the
        regional routes answer a GET carrying one with 400.
        """
        return await self._upstream.get_json(
            endpoint,
            self._base_url + path,
            headers={"accept": "application/json", "user-agent": self._settings.user_agent},
            parse=parse,
        )

    def _region(self, zone: str) -> int | None:
        if validate_zone(zone) not in GB_ZONES:
            raise NoDataForZone(f"{UPSTREAM} covers Great Britain only, not zone {zone!r}", source=UPSTREAM)
        return GB_ZONES[zone]

    def _fetched(self, zone: str, periods: list[Period]) -> Fetched:
        series = points_to_series(
            zone, periods_to_points(periods), step=PERIOD, emission_factor_type="direct", source=UPSTREAM
        )
        return Fetched(series=series, fetched_at=self._wall_clock())


# ----- status → error (pure) -----


def interpret(endpoint: str, response: httpx.Response) -> Any:
    """Map one HTTP response to its decoded JSON body or raise the domain error (table above)."""
    status = response.status_code
    what = f"{UPSTREAM} {endpoint}"
    if 200 <= status < 300:
        if not response.content.strip():
            raise ProviderUnavailable(f"{what}: empty body (upstream outage)", source=UPSTREAM)
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedUpstreamResponse(f"{what}: body is not JSON", source=UPSTREAM) from exc
    text = _error_text(response)
    if status in (400, 404):
        raise NoDataForZone(f"{what}: no data for this request ({text or f'HTTP {status}'})", source=UPSTREAM)
    if status in (401, 403):
        raise ProviderAuthError(f"{what}: access denied (HTTP {status})", source=UPSTREAM)
    if status == 429:
        raise ProviderRateLimited(
            f"{what}: rate limited",
            source=UPSTREAM,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        raise ProviderUnavailable(f"{what}: HTTP {status} {text}".rstrip(), source=UPSTREAM, retryable=True)
    raise ProviderUnavailable(f"{what}: unexpected HTTP {status}", source=UPSTREAM)


def _error_text(response: httpx.Response) -> str:
    """The `{"error": {"code", "message"}}` message, else plain text, shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_ERROR_TEXT]
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])[:_MAX_ERROR_TEXT]
    if isinstance(error, str):
        return error[:_MAX_ERROR_TEXT]
    return ""


# ----- parsing (pure) -----


@dataclass(frozen=True, slots=True)
class Period:
    """One half-hour as the API gives it (g CO2/kWh); `actual` is None where nothing was measured."""

    start: datetime
    end: datetime
    forecast: float | None
    actual: float | None
    index: str | None


def parse_periods(body: Any, region: int | None, *, allow_empty: bool = False) -> list[Period]:
    """Any intensity body (national or one of the three regional envelopes) → its periods.

    `region` None → national (`data` = list of periods). Otherwise the regional envelopes, told
    apart by shape: `data` an object (one region over a window), a list of region objects (one
    region now), or a list of periods each holding `regions` (all regions per period).
    """
    if isinstance(body, Mapping) and not body:
        raise ProviderUnavailable(f"{UPSTREAM}: empty object (upstream data source offline)", source=UPSTREAM)
    if not isinstance(body, Mapping) or "data" not in body:
        raise MalformedUpstreamResponse(f"{UPSTREAM}: no `data` in body", source=UPSTREAM)
    data = body["data"]
    if region is None:
        rows = _objects(data, "data")
    elif isinstance(data, Mapping):
        rows = _region_rows(data, region)
    else:
        items = _objects(data, "data")
        if items and "regions" in items[0]:
            rows = [_with_intensity(item, _pick_region(item.get("regions"), region)) for item in items]
        else:
            rows = [
                row
                for item in items
                if _region_id(item) in (region, None)
                for row in _region_rows(item, region)
            ]
    if not rows and not allow_empty:
        raise NoDataForZone(f"{UPSTREAM}: empty `data`", source=UPSTREAM)
    return [_period(row) for row in rows]


def periods_to_points(periods: list[Period]) -> list[Point]:
    """Measured value where there is one (labelled actual), else the forecast; both null → NaN."""
    points: list[Point] = []
    for period in periods:
        if period.actual is not None:
            points.append(Point(period.start, period.actual, ACTUAL))
        else:
            value = math.nan if period.forecast is None else period.forecast
            points.append(Point(period.start, value, FORECAST))
    return points


def floor_period(when: datetime) -> datetime:
    """Start of the UTC half-hour holding `when` (UTC has no clock changes to mind)."""
    when = when.astimezone(UTC)
    return when.replace(minute=30 if when.minute >= 30 else 0, second=0, microsecond=0)


def range_chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into ≤ 13-day pieces, also cut at every 1 January 00:00 UTC."""
    chunks: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        new_year = datetime(cursor.year + 1, 1, 1, tzinfo=UTC)
        chunk_end = min(end, cursor + RANGE_CHUNK, new_year)
        chunks.append((cursor, chunk_end))
        cursor = chunk_end
    return chunks


def _objects(value: Any, key: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise MalformedUpstreamResponse(f"{UPSTREAM}: `{key}` is not a list of objects", source=UPSTREAM)
    return list(value)


def _region_id(item: Mapping[str, Any]) -> int | None:
    value = item.get("regionid")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _region_rows(item: Mapping[str, Any], region: int) -> list[Mapping[str, Any]]:
    """A region object (`{regionid, shortname, data: [periods]}`) → its periods."""
    found = _region_id(item)
    if found is not None and found != region:
        raise MalformedUpstreamResponse(
            f"{UPSTREAM}: answered region {found}, asked {region}", source=UPSTREAM
        )
    return _objects(item.get("data"), "data.data")


def _pick_region(regions: Any, region: int) -> Mapping[str, Any]:
    for item in _objects(regions, "regions"):
        if _region_id(item) == region:
            return item
    raise MalformedUpstreamResponse(f"{UPSTREAM}: region {region} missing from a period", source=UPSTREAM)


def _with_intensity(period: Mapping[str, Any], region: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"from": period.get("from"), "to": period.get("to"), "intensity": region.get("intensity")}


def _period(row: Mapping[str, Any]) -> Period:
    start, end = _time(row.get("from")), _time(row.get("to"))
    if start is None or end is None or end <= start:
        raise MalformedUpstreamResponse(f"{UPSTREAM}: period without valid from/to", source=UPSTREAM)
    intensity = row.get("intensity")
    if not isinstance(intensity, Mapping):
        raise MalformedUpstreamResponse(f"{UPSTREAM}: period without an `intensity` object", source=UPSTREAM)
    index = intensity.get("index")
    return Period(
        start=start,
        end=end,
        forecast=_number(intensity.get("forecast")),
        actual=_number(intensity.get("actual")),
        index=index if isinstance(index, str) else None,
    )


def _number(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return float(raw)
    raise MalformedUpstreamResponse(f"{UPSTREAM}: non-numeric intensity", source=UPSTREAM)


def _time(value: Any) -> datetime | None:
    """`2018-01-20T12:00Z` (the API's form, no seconds) or any ISO-8601 instant → aware UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11+ reads "…T12:00Z" too
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _wire_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _path(intensity_path: str, region: int | None) -> str:
    """`/intensity/…` nationally; `/regional/intensity/…/regionid/{id}` for a region."""
    return intensity_path if region is None else f"/regional{intensity_path}/regionid/{region}"


__all__ = [
    "ACTUAL",
    "FORECAST",
    "GB_ZONES",
    "GBIntensityProvider",
    "Period",
    "floor_period",
    "interpret",
    "parse_periods",
    "periods_to_points",
    "range_chunks",
]
