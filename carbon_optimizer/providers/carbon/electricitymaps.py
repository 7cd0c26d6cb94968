"""Electricity Maps adapter: the only module that knows the API's wire format and status codes.

It turns `carbon-intensity/{forecast,history,latest,past-range}` responses into `CarbonSeries`
on an hourly lattice (NaN where a row is missing or null; the layered provider fills those) and
turns every failure into the domain error tree, so nothing above sees httpx:

| upstream answer                                   | raised                                        |
|---------------------------------------------------|-----------------------------------------------|
| 401 `Invalid auth-token`, 403 (WAF text)          | `ProviderAuthError`                           |
| 401 `Request unauthorized for zoneKey=…` (plan)   | `ProviderNotEntitled`                         |
| 404 `No recent data for zone …`, 400, empty list  | `NoDataForZone`                               |
| 429 (after retries, honouring `Retry-After`)      | `ProviderRateLimited`                         |
| 5xx, timeout, connection error, circuit open      | `ProviderUnavailable`                         |
| 2xx with a body we cannot read                    | `MalformedUpstreamResponse`                   |

Why the shape: the wire facts (docs/data-sources.md §1) show v3 and v4 differ in
envelopes (`history` vs `data`) and optional row fields, so parsing accepts both and requires only
`datetime`. One logical fetch (retries included) stays inside `request_deadline_s`, and a per-upstream
circuit breaker makes an established outage cost nothing. The token travels only in the
`auth-token` header; it never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import numpy as np

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
)
from carbon_optimizer.providers.carbon.base import (
    HOUR,
    Fetched,
    SeriesKind,
    SeriesRequest,
    Signal,
    validate_zone,
)
from carbon_optimizer.providers.upstream import CircuitBreaker, RetryPolicy, Sleep, SourceStatus, Upstream
from carbon_optimizer.settings import CacheSettings, ElectricityMapsSettings

log = logging.getLogger(__name__)

UPSTREAM = "electricitymaps"
# `/past-range` accepts at most 10 days at hourly granularity (notes §3.4).
PAST_RANGE_MAX = timedelta(days=10)
_GRANULARITY = {"hourly": HOUR, "15_minutes": timedelta(minutes=15), "5_minutes": timedelta(minutes=5)}
ParsedT = TypeVar("ParsedT")


class ElectricityMapsProvider:
    """Async Electricity Maps client (v3 paths, v4-tolerant parsing); satisfies `SeriesSource`."""

    name = UPSTREAM
    signals = frozenset({Signal.AVERAGE})

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: ElectricityMapsSettings,
        *,
        breaker: CircuitBreaker | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if settings.api_key is None:
            raise ValueError("ElectricityMapsProvider needs an API key (settings.electricitymaps.api_key)")
        self._http = http
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._token = settings.api_key
        defaults = CacheSettings()
        self.breaker = breaker or CircuitBreaker(
            UPSTREAM,
            failure_threshold=defaults.breaker_failure_threshold,
            reset_s=defaults.breaker_reset_s,
            clock=monotonic,
        )
        self._wall_clock = wall_clock
        self.upstream = Upstream(
            UPSTREAM,
            http,
            deadline_s=settings.request_deadline_s,
            read_timeout_s=settings.read_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            retry=RetryPolicy(max_retries=settings.max_retries, backoff_base_s=settings.backoff_base_s),
            breaker=self.breaker,
            refine=_refine,
            secrets=(self._token.get_secret_value(),),
            wall_clock=wall_clock,
            monotonic=monotonic,
            sleep=sleep,
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"ElectricityMapsProvider(base_url={self._base_url!r}, breaker={self.breaker.state.value})"

    @property
    def status(self) -> SourceStatus:
        """Last outcomes of this upstream (for /health)."""
        return self.upstream.status

    def covers(self, zone: str) -> bool:
        """Electricity Maps answers (or definitively refuses) any zone key."""
        return True

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

    async def forecast(self, zone: str, horizon_hours: int | None = None) -> Fetched:
        """`GET /carbon-intensity/forecast` (horizon 6/24/48/72 h, default from settings)."""
        horizon = horizon_hours or self._settings.forecast_horizon_hours

        def parse(payload: Any) -> Fetched:
            rows = _rows(payload, ("forecast", "data"), "forecast")
            return self._fetched(zone, SeriesKind.FORECAST, rows, _parse_time(_field(payload, "updatedAt")))

        params = {"zone": validate_zone(zone), "horizonHours": horizon}
        return await self._get("forecast", "/carbon-intensity/forecast", params, parse)

    async def history(self, zone: str) -> Fetched:
        """`GET /carbon-intensity/history` (last 24 h; v3 `history` or v4 `data` envelope)."""

        def parse(payload: Any) -> Fetched:
            rows = _rows(payload, ("history", "data"), "history")
            return self._fetched(zone, SeriesKind.HISTORY, rows, _newest_updated(rows))

        return await self._get("history", "/carbon-intensity/history", {"zone": validate_zone(zone)}, parse)

    async def latest(self, zone: str) -> Fetched:
        """`GET /carbon-intensity/latest`: one point (the layered provider may extend it flat)."""

        def parse(payload: Any) -> Fetched:
            if not isinstance(payload, Mapping):
                raise MalformedUpstreamResponse(
                    "electricitymaps latest: body is not an object", source=UPSTREAM
                )
            step = _GRANULARITY.get(str(payload.get("temporalGranularity", "hourly")), HOUR)
            updated = _parse_time(payload.get("updatedAt"))
            return self._fetched(zone, SeriesKind.LATEST, [payload], updated, step=step)

        return await self._get("latest", "/carbon-intensity/latest", {"zone": validate_zone(zone)}, parse)

    async def past_range(self, zone: str, start: datetime, end: datetime) -> Fetched:
        """`GET /carbon-intensity/past-range`, split into ≤ 10-day chunks fetched concurrently."""
        validate_zone(zone)
        if end <= start:
            raise ValueError("past_range needs start < end")
        chunks: list[tuple[datetime, datetime]] = []
        cursor = start
        while cursor < end:
            chunk_end = min(end, cursor + PAST_RANGE_MAX)
            chunks.append((cursor, chunk_end))
            cursor = chunk_end

        def parse(payload: Any) -> list[Mapping[str, Any]]:
            return _rows(payload, ("data", "history"), "past-range", allow_empty=True)

        parts = await asyncio.gather(
            *(
                self._get(
                    "past-range",
                    "/carbon-intensity/past-range",
                    {"zone": zone, "start": _wire_time(a), "end": _wire_time(b)},
                    parse,
                )
                for a, b in chunks
            )
        )
        rows = [row for part in parts for row in part]
        if not rows:
            raise NoDataForZone(f"no past data for zone {zone!r} in the requested range", source=UPSTREAM)
        return self._fetched(zone, SeriesKind.PAST_RANGE, rows, _newest_updated(rows))

    async def zones(self) -> dict[str, frozenset[str]]:
        """`GET /zones` with the token: zone key → endpoints the token may use (`*` = all)."""

        def parse(payload: Any) -> dict[str, frozenset[str]]:
            items: list[tuple[str, Any]]
            if isinstance(payload, Mapping):
                items = [(str(k), v) for k, v in payload.items()]
            elif isinstance(payload, list):  # v4 may list zone objects carrying `zoneKey`
                items = [(str(v["zoneKey"]), v) for v in payload if isinstance(v, Mapping) and "zoneKey" in v]
            else:
                raise MalformedUpstreamResponse("electricitymaps zones: unexpected body", source=UPSTREAM)
            access: dict[str, frozenset[str]] = {}
            for key, info in items:
                granted = info.get("access", []) if isinstance(info, Mapping) else []
                access[key] = frozenset(str(a).strip("/") for a in granted if isinstance(a, str))
            return access

        return await self._get("zones", "/zones", {}, parse)

    async def can_access(self, zone: str, endpoint: str) -> bool:
        """Whether the token's plan covers `endpoint` (e.g. `carbon-intensity/forecast`) for `zone`."""
        granted = (await self.zones()).get(zone, frozenset())
        return "*" in granted or endpoint.strip("/") in granted

    # ----- transport -----

    async def _get(
        self, endpoint: str, path: str, params: dict[str, Any], parse: Callable[[Any], ParsedT]
    ) -> ParsedT:
        """One logical GET through the shared upstream seam (deadline, retries, breaker, table)."""
        if path.startswith("/carbon-intensity"):
            params = {**params, "emissionFactorType": self._settings.emission_factor_type}
        return await self.upstream.get_json(
            endpoint,
            self._base_url + path,
            params=params,
            headers={"auth-token": self._token.get_secret_value(), "accept": "application/json"},
            parse=parse,
            zone=params.get("zone"),
        )

    def _fetched(
        self,
        zone: str,
        kind: SeriesKind,
        rows: list[Mapping[str, Any]],
        issued_at: datetime | None,
        *,
        step: timedelta | None = None,
    ) -> Fetched:
        series = rows_to_series(
            zone, rows, kind.label_for(UPSTREAM), self._settings.emission_factor_type, step=step
        )
        return Fetched(series=series, fetched_at=self._wall_clock(), issued_at=issued_at)


# ----- response interpretation (pure) -----


def _refine(status: int, text: str, where: str) -> ProviderError | None:
    """Electricity Maps' 401s: a plan limit (`Request unauthorized for zoneKey=…`) or a bad token."""
    if status != 401:
        return None
    if re.search(r"unauthori[sz]ed for zone|not available|not in (your )?plan", text, re.IGNORECASE):
        return ProviderNotEntitled(f"{where}: plan does not cover this request ({text})", source=UPSTREAM)
    return ProviderAuthError(f"{where}: token rejected ({text or 'HTTP 401'})", source=UPSTREAM)


def _field(payload: Any, name: str) -> Any:
    return payload.get(name) if isinstance(payload, Mapping) else None


def _rows(
    payload: Any, keys: tuple[str, ...], endpoint: str, *, allow_empty: bool = False
) -> list[Mapping[str, Any]]:
    """The row list under the first present envelope key (v3 and v4 names both accepted)."""
    if not isinstance(payload, Mapping):
        raise MalformedUpstreamResponse(f"electricitymaps {endpoint}: body is not an object", source=UPSTREAM)
    for key in keys:
        rows = payload.get(key)
        if rows is None:
            continue
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise MalformedUpstreamResponse(
                f"electricitymaps {endpoint}: `{key}` is not a list of objects", source=UPSTREAM
            )
        if not rows and not allow_empty:
            raise NoDataForZone(f"electricitymaps {endpoint}: empty `{key}`", source=UPSTREAM)
        return list(rows)
    raise MalformedUpstreamResponse(
        f"electricitymaps {endpoint}: none of {', '.join(keys)} in body", source=UPSTREAM
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _newest_updated(rows: list[Mapping[str, Any]]) -> datetime | None:
    stamps = [t for t in (_parse_time(r.get("updatedAt")) for r in rows) if t is not None]
    return max(stamps) if stamps else None


def _wire_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows_to_series(
    zone: str,
    rows: list[Mapping[str, Any]],
    label: str,
    emission_factor_type: str,
    *,
    step: timedelta | None = None,
) -> CarbonSeries:
    """Rows → a series on a regular lattice; missing/null intensities become NaN (filled later)."""
    points: dict[datetime, float] = {}
    for row in rows:
        when = _parse_time(row.get("datetime"))
        if when is None:
            raise MalformedUpstreamResponse(f"row without a valid datetime for zone {zone}", source=UPSTREAM)
        raw = row.get("carbonIntensity")
        if raw is None:
            value = math.nan
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        else:
            raise MalformedUpstreamResponse(f"non-numeric carbonIntensity for zone {zone}", source=UPSTREAM)
        points[when] = value
    if not points:
        raise NoDataForZone(f"no rows for zone {zone}", source=UPSTREAM)
    times = sorted(points)
    if step is None:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        step = min(gaps) if gaps else HOUR
    start = times[0]
    count = int((times[-1] - start) // step) + 1
    values = np.full(count, np.nan, dtype=np.float64)
    for when in times:
        values[int((when - start) // step)] = points[when]
    return CarbonSeries(
        zone=zone,
        start=start,
        step=step,
        values=values,
        runs=(SourceRun(0, count, label),),
        emission_factor_type=emission_factor_type,
    )
