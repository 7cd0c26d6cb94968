"""WattTime v3 adapter: the only module that knows WattTime's login flow, wire format and status codes.

WattTime sells the *marginal* operating emissions rate (`co2_moer`, 5-minute points, forecast up to
72 h) — the signal that load shifting actually moves — and, on plans that include it, the *average*
rate (`co2_aoer`, hourly, historical only: there is no average forecast). Both arrive in lbs CO2/MWh
and leave here in g CO2/kWh (× 0.45359237, keyed on `meta.units`, never on the endpoint).

Auth: `GET /login` with HTTP Basic → a bearer token valid 30 min. The token is cached in memory
until `token_ttl_s - token_refresh_margin_s`, concurrent callers share one login (WattTime limits
`/login` to 100 calls per 5 min), and a data call answered 401 logs in again once and retries once.

| upstream answer                                          | raised                                  |
|----------------------------------------------------------|-----------------------------------------|
| `/login` 401 or 403 (JSON or HTML)                       | `ProviderAuthError`                     |
| data 401 (after one re-login and retry)                  | `ProviderAuthError`                     |
| data 403 `Invalid scope…` (plan lacks region/signal)     | `ProviderNotEntitled` (no re-login)     |
| data 403 other JSON (after one re-login and retry)       | `ProviderNotEntitled`                   |
| data 403 HTML/text (edge denial; after one re-login)     | `ProviderAuthError`                     |
| 400, 404 (`No coverage available…`), 422, empty `data`   | `NoDataForZone`                         |
| zone without a WattTime region; average forecast asked   | `NoDataForZone` (no request sent)       |
| 429 (after retries, honouring `Retry-After`)             | `ProviderRateLimited`                   |
| 5xx, timeout, connection error, circuit open             | `ProviderUnavailable`                   |
| 2xx we cannot read (not JSON, wrong shape, units unknown)| `MalformedUpstreamResponse`             |
| 2xx whose every value is null                            | `NoDataForZone`                         |

The 403 rows handle both readings of the contract: WattTime documents 403 as "not in your plan",
while the Green Software Foundation's client re-logs in on 401 *and* 403. So a 403 that names the
scope is a plan answer at once; any other 403 earns one re-login (cheap, and never a loop) and, if
it persists, is read as the plan (JSON) or as an edge denial (HTML). A chain treats
`ProviderNotEntitled` and `NoDataForZone` alike: this source lacks this zone/signal, ask the next.

Secrets: the password travels only in the `/login` Basic header, the token only in the
`Authorization` header of data calls; neither appears in a message, a log line or a repr (messages
are also scrubbed in case an upstream echoes them back).

The HTTP goes through the shared seam (`providers/upstream.py`: deadline, retries, breaker,
metrics) with this module's `interpret` as its status table; `_call` adds the bearer token and
the one re-login after a refused token; everything below `# ----- parsing (pure)` turns bodies into domain
points and is unit-tested on fixtures without any HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderRateLimited,
    ProviderUnavailable,
)
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, validate_zone
from carbon_optimizer.providers.carbon.common import Point, Signal, points_to_series
from carbon_optimizer.providers.upstream import (
    CircuitBreaker,
    Deadline,
    RetryPolicy,
    Sleep,
    SourceStatus,
    Upstream,
    parse_retry_after,
)
from carbon_optimizer.settings import CacheSettings, WattTimeSettings

log = logging.getLogger(__name__)

UPSTREAM = "watttime"
# 1 lb = 453.59237 g (exact, by definition) and 1 MWh = 1000 kWh.
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
LBS_PER_MWH = "lbs_co2_per_mwh"
SIGNAL_TYPES: Mapping[Signal, str] = {Signal.MARGINAL: "co2_moer", Signal.AVERAGE: "co2_aoer"}
# `/v3/historical` allows 32 days per query; 30 keeps clear of the edge (as the official SDK does).
HISTORICAL_CHUNK = timedelta(days=30)
MAX_HORIZON_HOURS = 72
_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SCOPE_RE = re.compile(r"invalid scope|sufficient access|data.plans|subscription", re.IGNORECASE)
_MAX_ERROR_TEXT = 200
ParsedT = TypeVar("ParsedT")

# Our zone → WattTime region per signal, tried when the caller has no coordinates. WattTime regions
# are balancing authorities or sub-regions of them, so an ISO zone maps to ONE representative
# sub-region (the one holding the zone's main data-centre cluster); callers that know a site's
# coordinates should use `region_from_location` instead. Average regions are the parent
# balancing authorities; only `CAISO` is confirmed — a wrong guess costs one 4xx, mapped to
# NoDataForZone, and the chain moves on.
DEFAULT_REGIONS: Mapping[str, Mapping[Signal, str]] = {
    "US-CAL-CISO": {Signal.MARGINAL: "CAISO_NORTH", Signal.AVERAGE: "CAISO"},
    "US-TEX-ERCO": {Signal.MARGINAL: "ERCOT_NORTHCENTRAL", Signal.AVERAGE: "ERCOT"},
    "US-MIDA-PJM": {Signal.MARGINAL: "PJM_DC", Signal.AVERAGE: "PJM"},
    "US-MIDW-MISO": {Signal.MARGINAL: "MISO_INDIANAPOLIS", Signal.AVERAGE: "MISO"},
    "US-NY-NYIS": {Signal.MARGINAL: "NYISO_NYC"},
    "US-NE-ISNE": {Signal.MARGINAL: "ISONE_NEMA", Signal.AVERAGE: "ISONE"},
    "US-CENT-SWPP": {Signal.MARGINAL: "SPP_KC", Signal.AVERAGE: "SPP"},
    "US-NW-PSCO": {Signal.MARGINAL: "PSCO", Signal.AVERAGE: "PSCO"},
    "US-NW-BPAT": {Signal.MARGINAL: "BPA", Signal.AVERAGE: "BPA"},
    "US-CAL-LDWP": {Signal.MARGINAL: "LDWP", Signal.AVERAGE: "LDWP"},
    "US-SE-SOCO": {Signal.MARGINAL: "SOCO", Signal.AVERAGE: "SOCO"},
}


def label(signal: Signal, kind: str) -> str:
    """Provenance label of WattTime points, e.g. `watttime:co2_moer:forecast`."""
    return f"{UPSTREAM}:{SIGNAL_TYPES[signal]}:{kind}"


class _TokenRejected(ProviderAuthError):
    """A data call refused our token (401, or a 403 that does not name the plan).

    Internal: `_call` answers it with one re-login; if a fresh token is refused too, it raises
    `then` (the error this status means once the token is ruled out).
    """

    def __init__(self, message: str, *, then: type[ProviderError]) -> None:
        super().__init__(message, source=UPSTREAM)
        self.then = then


@dataclass(frozen=True, slots=True)
class _Token:
    value: SecretStr
    renew_at: float  # monotonic


class WattTimeProvider:
    """Async WattTime v3 client. Satisfies `SeriesSource` (`fetch`) for the marginal signal."""

    name = UPSTREAM
    signals = frozenset({Signal.MARGINAL, Signal.AVERAGE})

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: WattTimeSettings,
        *,
        regions: Mapping[str, Mapping[Signal, str]] = DEFAULT_REGIONS,
        breaker: CircuitBreaker | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not settings.username or settings.password is None:
            raise ValueError("WattTimeProvider needs settings.watttime.username and .password")
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._auth_url = settings.auth_base_url.rstrip("/")
        self._auth = httpx.BasicAuth(settings.username, settings.password.get_secret_value())
        self._regions = regions
        defaults = CacheSettings()
        self.breaker = breaker or CircuitBreaker(
            UPSTREAM,
            failure_threshold=defaults.breaker_failure_threshold,
            reset_s=defaults.breaker_reset_s,
            clock=monotonic,
        )
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        policy = RetryPolicy(max_retries=settings.max_retries, backoff_base_s=settings.backoff_base_s)

        def upstream(read: Callable[[str, httpx.Response], Any]) -> Upstream:
            return Upstream(
                UPSTREAM,
                http,
                deadline_s=settings.request_deadline_s,
                read_timeout_s=settings.read_timeout_s,
                connect_timeout_s=settings.connect_timeout_s,
                retry=policy,
                breaker=self.breaker,
                interpret=read,
                wall_clock=wall_clock,
                monotonic=monotonic,
                sleep=sleep,
                rng=rng,
            )

        # Two views of the one seam (same breaker): data calls, and `/login`, whose
        # 401/403 mean "credentials rejected" rather than "token rejected".
        self._upstream = upstream(interpret)
        self._login = upstream(lambda endpoint, response: interpret(endpoint, response, login=True))
        self._token: _Token | None = None
        self._recent_tokens: collections.deque[SecretStr] = collections.deque(maxlen=4)  # for scrubbing
        self._login_lock = asyncio.Lock()
        self._located: dict[tuple[float, float, Signal], tuple[str, float]] = {}
        self.logins = 0  # how many times we called /login (observable; WattTime rate-limits it)
        # The data calls' status is the source's: a login alone is no success (its failures are
        # recorded here by `_failed`).
        self.status: SourceStatus = self._upstream.status

    def __repr__(self) -> str:
        token = "cached" if self._token is not None else "none"
        state = self.breaker.state.value
        return f"WattTimeProvider(base_url={self._base_url!r}, token={token}, breaker={state})"

    # ----- coverage -----

    def covers(self, zone: str, signal: Signal = Signal.MARGINAL) -> bool:
        """Whether the zone table names a WattTime region for `signal` (no request)."""
        return signal in self._regions.get(zone, {})

    def region_for(self, zone: str, signal: Signal = Signal.MARGINAL) -> str:
        """The WattTime region of `zone` for `signal`, or NoDataForZone when the table has none."""
        region = self._regions.get(validate_zone(zone), {}).get(signal)
        if region is None:
            raise NoDataForZone(
                f"watttime has no {SIGNAL_TYPES[signal]} region for zone {zone!r}", source=UPSTREAM
            )
        return region

    async def region_from_location(
        self, latitude: float, longitude: float, signal: Signal = Signal.MARGINAL
    ) -> str:
        """`GET /v3/region-from-loc`, cached `region_cache_ttl_s` per (lat, lon, signal)."""
        if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
            raise ValueError("latitude/longitude out of range")
        key = (round(latitude, 4), round(longitude, 4), signal)
        cached = self._located.get(key)
        if cached is not None and cached[1] > self._monotonic():
            return cached[0]
        signal_type = SIGNAL_TYPES[signal]
        params = {"latitude": key[0], "longitude": key[1], "signal_type": signal_type}
        region = await self._call(
            "region-from-loc", "/region-from-loc", params, lambda body: parse_region(body, signal_type)
        )
        self._located[key] = (region, self._monotonic() + self._settings.region_cache_ttl_s)
        return region

    async def my_access(self) -> frozenset[tuple[str, str, str]]:
        """`GET /v3/my-access`: what the account's plan covers, as (signal_type, region, endpoint).

        E.g. `("co2_moer", "CAISO_NORTH", "v3/forecast")`. The ground truth for "where the plan
        allows" — a chain can call it once at start-up instead of learning from 403s.
        """
        return await self._call("my-access", "/my-access", {}, parse_access)

    async def can_access(self, zone: str, signal: Signal, endpoint: str = "v3/forecast") -> bool:
        """Whether the plan covers `endpoint` for the zone's region and `signal` (one request)."""
        if not self.covers(zone, signal):
            return False
        return (SIGNAL_TYPES[signal], self.region_for(zone, signal), endpoint) in await self.my_access()

    # ----- public endpoints -----

    async def fetch(self, request: SeriesRequest) -> Fetched:
        """Dispatch a `SeriesRequest` for `request.signal` to its endpoint (past-range → historical)."""
        signal = request.signal
        if request.kind is SeriesKind.FORECAST:
            return await self.forecast(request.zone, signal)
        if request.kind is SeriesKind.HISTORY:
            return await self.history(request.zone, signal)
        if request.kind is SeriesKind.LATEST:
            return await self.latest(request.zone, signal)
        if request.start is None or request.end is None:
            raise ValueError("past-range requests need start and end")
        return await self.historical(request.zone, request.start, request.end, signal)

    async def forecast(
        self,
        zone: str,
        signal: Signal = Signal.MARGINAL,
        horizon_hours: int | None = None,
        *,
        region: str | None = None,
    ) -> Fetched:
        """`GET /v3/forecast`: the newest forecast, 5-min points, `horizon_hours` 0–72.

        `region` overrides the zone table (e.g. from `region_from_location`). There is no average
        forecast, so `Signal.AVERAGE` is answered NoDataForZone without a request.
        """
        horizon = self._settings.forecast_horizon_hours if horizon_hours is None else horizon_hours
        if not 0 <= horizon <= MAX_HORIZON_HOURS:
            raise ValueError(f"horizon_hours must be within 0..{MAX_HORIZON_HOURS}")
        if signal is Signal.AVERAGE:
            raise NoDataForZone("watttime publishes no average (co2_aoer) forecast", source=UPSTREAM)
        region = self._region(zone, signal, region)
        signal_type = SIGNAL_TYPES[signal]

        def parse(body: Any) -> Fetched:
            parsed = parse_body(body, signal_type=signal_type, label=label(signal, "forecast"))
            return self._fetched(zone, parsed, parsed.generated_at)

        params = {"region": region, "signal_type": signal_type, "horizon_hours": horizon}
        return await self._call("forecast", "/forecast", params, parse)

    async def latest(
        self, zone: str, signal: Signal = Signal.MARGINAL, *, region: str | None = None
    ) -> Fetched:
        """The current value: the first point of the newest forecast (`horizon_hours=0`).

        WattTime recommends it over the newest historical point, which may lag by hours.
        """
        return await self.forecast(zone, signal, 0, region=region)

    async def history(
        self, zone: str, signal: Signal = Signal.MARGINAL, *, region: str | None = None
    ) -> Fetched:
        """The last 24 hours from `/v3/historical` (average values may lag up to 72 h)."""
        end = self._wall_clock()
        return await self.historical(zone, end - timedelta(hours=24), end, signal, region=region)

    async def historical(
        self,
        zone: str,
        start: datetime,
        end: datetime,
        signal: Signal = Signal.MARGINAL,
        *,
        region: str | None = None,
    ) -> Fetched:
        """`GET /v3/historical` over [start, end), in ≤ 30-day chunks fetched concurrently.

        WattTime's `start`/`end` are both inclusive; points at or after `end` are dropped and the
        chunk seams' repeated points are de-duplicated.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("historical needs timezone-aware start and end")
        if end <= start:
            raise ValueError("historical needs start < end")
        region = self._region(zone, signal, region)
        signal_type = SIGNAL_TYPES[signal]
        point_label = label(signal, "history")
        chunks: list[tuple[datetime, datetime]] = []
        cursor = start
        while cursor < end:
            chunk_end = min(end, cursor + HISTORICAL_CHUNK)
            chunks.append((cursor, chunk_end))
            cursor = chunk_end

        def parse(body: Any) -> ParsedBody:
            return parse_body(body, signal_type=signal_type, label=point_label, allow_empty=True)

        parts = await asyncio.gather(
            *(
                self._call(
                    "historical",
                    "/historical",
                    {
                        "region": region,
                        "signal_type": signal_type,
                        "start": _wire_time(a),
                        "end": _wire_time(b),
                    },
                    parse,
                )
                for a, b in chunks
            )
        )
        points = [p for part in parts for p in part.points if start <= p.start < end]
        if not points:
            raise NoDataForZone(
                f"watttime: no {signal_type} history for zone {zone!r} in range", source=UPSTREAM
            )
        step = next((part.step for part in parts if part.step is not None), None)
        merged = ParsedBody(points=points, step=step, generated_at=None, region=parts[0].region)
        return self._fetched(zone, merged, None)

    # ----- transport -----

    async def _call(
        self, endpoint: str, path: str, params: Mapping[str, Any], parse: Callable[[Any], ParsedT]
    ) -> ParsedT:
        """One logical authenticated GET through the shared seam, with at most one re-login.

        The login, the data call and a re-login after a refused token share one deadline; the
        seam gives each its retries, the breaker and the metrics, and `interpret` (this module's
        status table) reads every answer. Parsing runs inside the attempt, so a 2xx body we
        cannot read counts as a failure.
        """
        deadline = Deadline(self._settings.request_deadline_s, clock=self._monotonic)
        relogged = False
        try:
            while True:
                token = await self._bearer(deadline)
                headers = {
                    "accept": "application/json",
                    "authorization": f"Bearer {token.value.get_secret_value()}",
                }
                try:
                    return await self._upstream.get_json(
                        endpoint,
                        self._base_url + path,
                        params=dict(params),
                        headers=headers,
                        parse=parse,
                        deadline=deadline,
                    )
                except _TokenRejected as exc:
                    if relogged:
                        raise exc.then(
                            f"{exc.message} (again after a fresh login)", source=UPSTREAM
                        ) from None
                    relogged = True
                    self._drop(token)
        except ProviderError as exc:
            self._failed(exc)
            raise

    async def _bearer(self, deadline: Deadline) -> _Token:
        """The cached token, or a new one from `/login` (one login however many callers wait)."""
        token = self._token
        if token is not None and token.renew_at > self._monotonic():
            return token
        async with self._login_lock:
            token = self._token
            if token is not None and token.renew_at > self._monotonic():
                return token
            self.logins += 1
            value = await self._login.get_json(
                "login",
                self._auth_url + "/login",
                headers={"accept": "application/json"},
                auth=self._auth,
                parse=parse_token,
                deadline=deadline,
            )
            lifetime = max(0.0, self._settings.token_ttl_s - self._settings.token_refresh_margin_s)
            token = _Token(value, self._monotonic() + lifetime)
            self._token = token
            self._recent_tokens.append(token.value)
            log.info("watttime: logged in; token renewed in %.0f s", lifetime)
            return token

    def _drop(self, token: _Token) -> None:
        """Forget a refused token (unless another caller has already replaced it)."""
        if self._token is token:
            self._token = None

    def _failed(self, exc: ProviderError) -> ProviderError:
        """Record the failure; return `exc` with any secret scrubbed from its message."""
        clean = self._scrub(exc.message)
        if clean != exc.message:
            exc.message = clean
            exc.args = (clean,)
        self.status.last_failure = self._wall_clock()
        self.status.last_error = f"{type(exc).__name__}: {clean}"
        return exc

    def _scrub(self, text: str) -> str:
        secrets = [self._settings.password, *self._recent_tokens]
        for secret in (s.get_secret_value() for s in secrets if s is not None):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _region(self, zone: str, signal: Signal, region: str | None) -> str:
        validate_zone(zone)
        if region is None:
            return self.region_for(zone, signal)
        if not _REGION_RE.match(region):
            raise ValueError(f"invalid WattTime region {region[:64]!r}")
        return region

    def _fetched(self, zone: str, parsed: ParsedBody, issued_at: datetime | None) -> Fetched:
        series = points_to_series(
            zone, parsed.points, step=parsed.step, emission_factor_type="direct", source=UPSTREAM
        )
        return Fetched(series=series, fetched_at=self._wall_clock(), issued_at=issued_at)


# ----- status → error (pure) -----


def interpret(endpoint: str, response: httpx.Response, *, login: bool = False) -> Any:
    """Map one HTTP response to its decoded JSON body or raise the domain error (table above)."""
    status = response.status_code
    what = f"watttime {endpoint}"
    if 200 <= status < 300:
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedUpstreamResponse(f"{what}: body is not JSON", source=UPSTREAM) from exc
    text, is_json = _error_text(response)
    if login and status in (401, 403):
        # Never echo the body: a login error page might quote what we sent.
        raise ProviderAuthError(f"{what}: credentials rejected (HTTP {status})", source=UPSTREAM)
    if status == 401:
        raise _TokenRejected(f"{what}: token rejected (HTTP 401)", then=ProviderAuthError)
    if status == 403:
        if _SCOPE_RE.search(text):
            raise ProviderNotEntitled(f"{what}: plan does not cover this request ({text})", source=UPSTREAM)
        if is_json:
            raise _TokenRejected(f"{what}: forbidden ({text or 'HTTP 403'})", then=ProviderNotEntitled)
        raise _TokenRejected(f"{what}: access denied (HTTP 403)", then=ProviderAuthError)
    if status in (400, 404, 422):
        raise NoDataForZone(f"{what}: no data for this request ({text or f'HTTP {status}'})", source=UPSTREAM)
    if status == 429:
        raise ProviderRateLimited(
            f"{what}: rate limited",
            source=UPSTREAM,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        raise ProviderUnavailable(f"{what}: HTTP {status}", source=UPSTREAM, retryable=True)
    raise ProviderUnavailable(f"{what}: unexpected HTTP {status}", source=UPSTREAM)


def _error_text(response: httpx.Response) -> tuple[str, bool]:
    """The upstream's own words (`message`, `msg`, `error`, FastAPI `detail`) and whether it was JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_ERROR_TEXT], False
    if not isinstance(body, Mapping):
        return "", True
    parts = [str(body[k]) for k in ("error", "message", "msg") if isinstance(body.get(k), str)]
    detail = body.get("detail")
    if isinstance(detail, list):
        parts += [str(d.get("msg")) for d in detail if isinstance(d, Mapping) and d.get("msg")]
    elif isinstance(detail, str):
        parts.append(detail)
    return " — ".join(parts)[:_MAX_ERROR_TEXT], True


# ----- parsing (pure) -----


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A data body reduced to what the series needs: points in g/kWh, their period, provenance."""

    points: list[Point]
    step: timedelta | None
    generated_at: datetime | None
    region: str | None


def lbs_per_mwh_to_g_per_kwh(value: float) -> float:
    """Convert lbs CO2/MWh to g CO2/kWh (870 → 394.63)."""
    return value * LBS_PER_MWH_TO_G_PER_KWH


def parse_token(body: Any) -> SecretStr:
    """`/login` 200 body `{"token": "…"}` → the token, wrapped so it never prints."""
    token = body.get("token") if isinstance(body, Mapping) else None
    if not isinstance(token, str) or not token:
        raise MalformedUpstreamResponse("watttime login: no token in body", source=UPSTREAM)
    return SecretStr(token)


def parse_access(body: Any) -> frozenset[tuple[str, str, str]]:
    """`/v3/my-access` body (signal types → regions → endpoints) → flat (signal, region, endpoint)."""
    signal_types = body.get("signal_types") if isinstance(body, Mapping) else None
    if not isinstance(signal_types, list):
        raise MalformedUpstreamResponse("watttime my-access: no `signal_types` list", source=UPSTREAM)
    granted: set[tuple[str, str, str]] = set()
    for entry in signal_types:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("signal_type"), str):
            continue
        for region in entry.get("regions") or []:
            if not isinstance(region, Mapping) or not isinstance(region.get("region"), str):
                continue
            for endpoint in region.get("endpoints") or []:
                if isinstance(endpoint, Mapping) and isinstance(endpoint.get("endpoint"), str):
                    granted.add((entry["signal_type"], region["region"], endpoint["endpoint"].strip("/")))
    return frozenset(granted)


def parse_region(body: Any, signal_type: str) -> str:
    """`/v3/region-from-loc` 200 body → the region code (checked against the asked signal)."""
    region = body.get("region") if isinstance(body, Mapping) else None
    if not isinstance(region, str) or not _REGION_RE.match(region):
        raise MalformedUpstreamResponse("watttime region-from-loc: no valid `region`", source=UPSTREAM)
    answered = body.get("signal_type") if isinstance(body, Mapping) else None
    if answered is not None and answered != signal_type:
        raise MalformedUpstreamResponse(
            f"watttime region-from-loc: answered for {answered!r}, asked {signal_type!r}", source=UPSTREAM
        )
    return region


def parse_body(body: Any, *, signal_type: str, label: str, allow_empty: bool = False) -> ParsedBody:
    """A `{"data": [{point_time, value}], "meta": {...}}` body → points in g CO2/kWh.

    The conversion is keyed on `meta.units` (only `lbs_co2_per_mwh` is an emissions rate we know;
    `percentile` or anything else is refused rather than mislabelled). Null values become NaN.
    """
    if not isinstance(body, Mapping):
        raise MalformedUpstreamResponse("watttime: body is not an object", source=UPSTREAM)
    data, meta = body.get("data"), body.get("meta")
    if not isinstance(data, list) or not all(isinstance(p, Mapping) for p in data):
        raise MalformedUpstreamResponse("watttime: `data` is not a list of objects", source=UPSTREAM)
    if not isinstance(meta, Mapping):
        raise MalformedUpstreamResponse("watttime: no `meta` object", source=UPSTREAM)
    units = meta.get("units")
    if not isinstance(units, str) or units.lower() != LBS_PER_MWH:
        raise MalformedUpstreamResponse(f"watttime: unexpected units {str(units)[:40]!r}", source=UPSTREAM)
    answered = meta.get("signal_type")
    if answered is not None and answered != signal_type:
        raise MalformedUpstreamResponse(
            f"watttime: answered {str(answered)[:40]!r}, asked {signal_type!r}", source=UPSTREAM
        )
    for warning in meta.get("warnings") or []:
        if isinstance(warning, Mapping):
            log.info("watttime warning %s: %s", warning.get("type"), str(warning.get("message"))[:200])
    if not data and not allow_empty:
        raise NoDataForZone("watttime: empty `data`", source=UPSTREAM)
    points = [Point(_point_time(p.get("point_time")), _point_value(p.get("value")), label) for p in data]
    period = meta.get("data_point_period_seconds")
    step = (
        timedelta(seconds=period)
        if isinstance(period, int) and not isinstance(period, bool) and period > 0
        else None
    )
    region = meta.get("region")
    return ParsedBody(
        points=points,
        step=step,
        generated_at=_parse_time(meta.get("generated_at")),
        region=region if isinstance(region, str) else None,
    )


def _point_time(value: Any) -> datetime:
    parsed = _parse_time(value)
    if parsed is None:
        raise MalformedUpstreamResponse("watttime: point without a valid point_time", source=UPSTREAM)
    return parsed


def _point_value(raw: Any) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return lbs_per_mwh_to_g_per_kwh(float(raw))
    raise MalformedUpstreamResponse("watttime: non-numeric value", source=UPSTREAM)


def _parse_time(value: Any) -> datetime | None:
    """Any ISO-8601 instant (`+00:00` or `Z`); naive times are read as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _wire_time(dt: datetime) -> str:
    """WattTime requires a zone on every timestamp; `Z` avoids the `+` that URLs mangle."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "DEFAULT_REGIONS",
    "LBS_PER_MWH_TO_G_PER_KWH",
    "SIGNAL_TYPES",
    "ParsedBody",
    "WattTimeProvider",
    "interpret",
    "label",
    "lbs_per_mwh_to_g_per_kwh",
    "parse_access",
    "parse_body",
    "parse_region",
    "parse_token",
]
