"""`forecast:profile-ar` as one more carbon source: our own forecast where no provider's reaches.

Why a source and not a step in the service: the chain already paints each hour from the first
source that has it, so putting the forecaster after the live sources makes it fill exactly the
hours their forecasts do not reach (beyond Electricity Maps' 72 h, zones with no provider
forecast) and nothing else; offline it sits before the bundled replay (measured better:
docs/forecasting.md "Offline"). Its points are labelled `forecast:profile-ar` (or
`forecast:profile-ar-short`), so an option's `carbon_source` says when it relies on it.

Fitting never runs per request. The fit happens at cache fill: `_Fitter` (the wrapped source)
reads ~9 weeks of hourly history, fits and packs p10|p50|p90 into one series, which the shared
`CachedSeriesSource` stores like any other series (tiered: in-process tier, then the shared store;
single flight, so one fit per zone per TTL across workers) for `forecast_ttl_s` (1 h). Requests
read the packed entry, unpack it (a view, no copy) and hand the p50 to the chain; the band is
kept per zone for the uncertainty step (`bands`).

History: any `HistoryFn` (zone, start, end → hourly series). The stack passes the live source's
measured history when one is configured (`live_history.LiveHistory`: 9 weeks kept in the shared
store, extended hourly, gaps filled from the replay) and the bundled 2023 replay otherwise;
`ForecastBand.history` says which kind a fit used, because the backtested error differs: on
measured history the rolling-origin backtest applies (error by hour ahead); on replayed history
the forecast is one of the replayed week (lead 4–5 weeks in the emulation), with its own
measured flat error band (`OFFLINE_REL_BAND`). A `mixed` history (live hours, gaps replayed)
gets the replay's figures: the cautious ones, its own error was not measured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from carbon_optimizer.domain import forecast as fc
from carbon_optimizer.domain.forecast_series import LABEL_PREFIX, forecast_from_history, forecast_label
from carbon_optimizer.domain.models import CarbonSeries, FloatArray, SourceRun
from carbon_optimizer.errors import NoDataForZone
from carbon_optimizer.providers.carbon.base import HOUR, Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.store import CacheStore
from carbon_optimizer.providers.tiered import Lease
from carbon_optimizer.settings import CacheSettings

SOURCE_NAME = "forecast"
VARIANT = f"{SOURCE_NAME}-{fc.MODEL_NAME}"
FORECAST_TTL_S = 3600  # refit at most hourly: the model's inputs move by one hour per hour
HISTORY_HOURS = fc.FULL_HISTORY_HOURS
_PACKED_SUFFIX = ":packed"  # run label of the packed p10|p50|p90 entry (never shown to callers)

HistoryFn = Callable[[str, datetime, datetime], Awaitable[CarbonSeries]]

# Backtested p50 MAPE (%) of `profile-ar` per horizon bucket on live (measured) history, mean of
# the 19 replay zones (bench/bench_forecast.py --step 49; docs/forecasting.md "Results").
BACKTEST_MAPE_PCT: tuple[tuple[int, int, float], ...] = (
    (1, 1, 3.0),
    (2, 6, 7.0),
    (7, 24, 10.5),
    (25, 48, 13.4),
    (49, 72, 14.3),
    (73, 120, 15.1),
    (121, 168, 15.6),
)
# Offline (history = the bundled replay): the forecast of the replayed week stands in for this
# year's; measured by bench/bench_offline_forecast.py (docs/forecasting.md "Offline"). The error
# no longer depends on the hour ahead there, so one flat relative band and one MAPE apply.
OFFLINE_MAPE_PCT = 18.6  # p50 MAPE over 1–168 h, mean of zones (the replay: 19.7)
OFFLINE_REL_BAND = (-0.266, -0.001, 0.295)  # q10, q50, q90 of truth / p50 − 1, pooled (coverage 79.5–80.9 %)


def backtested_mape_pct(hours_ahead: int, history: str) -> float:
    """The backtested p50 MAPE for a forecast `hours_ahead` (1-based) on `history` (live/replay)."""
    if history != "live":
        return OFFLINE_MAPE_PCT
    for first, last, mape in BACKTEST_MAPE_PCT:
        if first <= hours_ahead <= last:
            return mape
    return BACKTEST_MAPE_PCT[-1][2]


@dataclass(frozen=True, eq=False, slots=True)
class ForecastBand:
    """The p10/p50/p90 paths of one zone's forecast, hour-aligned from `start`."""

    zone: str
    start: datetime
    paths: FloatArray  # (3, hours)
    model: str
    history: str  # "live": measured history; "replay": the bundled replay (offline); "mixed"

    def window(self, start: datetime, hours: int) -> FloatArray | None:
        """(3, hours) paths for [start, start + hours h), or None if not fully inside."""
        first = int((start - self.start) // HOUR)
        if first < 0 or first + hours > self.paths.shape[1]:
            return None
        return self.paths[:, first : first + hours]


def history_kind(series: CarbonSeries) -> str:
    """Return "live" when every history point was measured by a live source, "replay" if none was."""
    fallback = [run.label.startswith("fallback:") for run in series.runs]
    if all(fallback):
        return "replay"
    return "mixed" if any(fallback) else "live"


def pack(history: CarbonSeries, horizon: int = fc.MAX_HORIZON_HOURS) -> CarbonSeries:
    """Fit on `history` and pack p10|p50|p90 into one series (3 × horizon values) for the cache.

    The run label carries the model and the history kind (`forecast:profile-ar:packed:live`), so
    an entry read back by another worker knows both. Offline (replayed history) the band is the
    measured flat one around the p50 (the forecaster's own band is for leads of hours, not weeks).
    """
    fitted = forecast_from_history(history, horizon)
    kind = history_kind(history)
    band = np.array(fitted.band, dtype=np.float64)
    if kind != "live":
        p50 = band[1]
        q10, _, q90 = OFFLINE_REL_BAND
        band = np.stack([np.maximum(p50 * (1.0 + q10), 0.0), p50, p50 * (1.0 + q90)])
    values = band.reshape(-1)
    label = f"{forecast_label(fitted.model)}{_PACKED_SUFFIX}:{kind}"
    return CarbonSeries(
        zone=history.zone,
        start=fitted.series.start,
        step=HOUR,
        values=values,
        runs=(SourceRun(0, values.shape[0], label),),
        emission_factor_type=history.emission_factor_type,
    )


def unpack(series: CarbonSeries) -> tuple[CarbonSeries, ForecastBand]:
    """The p50 series (labelled `forecast:<model>`, `(stale)` kept) and the band of a packed entry."""
    label = series.runs[0].label
    stale = label.endswith("(stale)")
    head = label.removesuffix("(stale)")
    model_label, _, kind = head.partition(_PACKED_SUFFIX + ":")
    hours = len(series.values) // 3
    paths = np.asarray(series.values, dtype=np.float64)[: 3 * hours].reshape(3, hours)
    p50 = paths[1]
    public = model_label + ("(stale)" if stale else "")
    out = CarbonSeries(
        zone=series.zone,
        start=series.start,
        step=HOUR,
        values=p50,
        runs=(SourceRun(0, hours, public),),
        emission_factor_type=series.emission_factor_type,
    )
    band = ForecastBand(
        zone=series.zone,
        start=series.start,
        paths=paths,
        model=model_label.removeprefix(LABEL_PREFIX),
        history=kind or "replay",
    )
    return out, band


class _Fitter:
    """The raw source the cache wraps: reads history, fits, packs (runs only at cache fill)."""

    name = SOURCE_NAME
    signals = frozenset({Signal.AVERAGE})

    def __init__(self, history: HistoryFn, clock: Callable[[], datetime]) -> None:
        self._history = history
        self._clock = clock

    def covers(self, zone: str) -> bool:
        return True

    async def fetch(self, request: SeriesRequest) -> Fetched:
        if request.kind is not SeriesKind.FORECAST:
            raise NoDataForZone(f"{SOURCE_NAME} has no {request.kind.value} data")
        now = self._clock().astimezone(UTC)
        end = now.replace(minute=0, second=0, microsecond=0)
        history = await self._history(request.zone, end - timedelta(hours=HISTORY_HOURS), end)
        if history.step != HOUR or history.start > end - timedelta(hours=fc.min_history_hours()):
            raise NoDataForZone(f"not enough hourly history to forecast {request.zone}")
        history = _clip(history, end)
        if not np.isfinite(np.asarray(history.values)).all():
            raise NoDataForZone(f"history of {request.zone} has gaps; no forecast")
        # Fitting is tens of milliseconds of NumPy: off the event loop, once per zone per TTL.
        packed = await asyncio.to_thread(pack, history)
        return Fetched(series=packed, fetched_at=now, issued_at=end)


def _clip(series: CarbonSeries, end: datetime) -> CarbonSeries:
    """`series` cut to end at `end` (the chain may return a little more than asked)."""
    last = min(len(series.values), series.index_of(end))
    runs = tuple(
        SourceRun(r.start_index, min(r.end_index, last), r.label) for r in series.runs if r.start_index < last
    )
    return CarbonSeries(
        zone=series.zone,
        start=series.start,
        step=series.step,
        values=np.asarray(series.values)[:last],
        runs=runs,
        emission_factor_type=series.emission_factor_type,
    )


class ForecastSource:
    """The carbon source `forecast` (labels `forecast:<model>`): cached fits, bands per zone."""

    name = SOURCE_NAME
    signals = frozenset({Signal.AVERAGE})
    kinds = frozenset({SeriesKind.FORECAST})  # the chain asks it for nothing else

    def __init__(
        self,
        history: HistoryFn,
        store: CacheStore,
        settings: CacheSettings,
        *,
        covers: Callable[[str], bool],
        key_prefix: str = "co:v1",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._covers = covers
        ttl = settings.model_copy(update={"forecast_ttl_s": FORECAST_TTL_S})
        self.cache = CachedSeriesSource(
            _Fitter(history, clock or _utc_now), store, ttl, key_prefix=key_prefix, variant=VARIANT
        )
        self._bands: dict[str, ForecastBand] = {}
        self._served: dict[str, tuple[Fetched, Fetched]] = {}  # zone -> (cached entry, unpacked)
        self.generation = 0  # bumped whenever `_served` changes: what `peek` answers may change

    def covers(self, zone: str) -> bool:
        """Zones with hourly history (the bundled replay zones): a flat annual mean is no history."""
        return self._covers(zone)

    async def fetch(self, request: SeriesRequest) -> Fetched:
        """The cached fit's p50 (fitting only when the shared entry is missing or expired)."""
        if request.kind is not SeriesKind.FORECAST or request.signal is not Signal.AVERAGE:
            raise NoDataForZone(f"{SOURCE_NAME} answers average forecasts only")
        fetched = await self.cache.fetch(request)
        memo = self._served.get(request.zone)
        if memo is not None and memo[0] is fetched:
            return memo[1]  # the same cached entry as last time: nothing to unpack (warm path)
        series, band = unpack(fetched.series)
        self._bands[request.zone] = band
        out = Fetched(
            series=series,
            fetched_at=fetched.fetched_at,
            issued_at=fetched.issued_at,
            stale=fetched.stale,
            error=fetched.error,
        )
        self._served[request.zone] = (fetched, out)
        self.generation += 1
        return out

    def peek(self, request: SeriesRequest) -> Fetched | None:
        """What `fetch` would return from memory, synchronously, if already unpacked; else None."""
        got = self.peek_lease(request)
        return None if got is None else got[0]

    def peek_lease(self, request: SeriesRequest) -> tuple[Fetched, Lease] | None:
        """`peek` plus how long that object stays its answer: the cache's lease, and no new unpack."""
        if request.kind is not SeriesKind.FORECAST or request.signal is not Signal.AVERAGE:
            return None
        got = self.cache.peek_lease(request)
        if got is None:
            return None
        cached, lease = got
        memo = self._served.get(request.zone)
        if memo is None or memo[0] is not cached:
            return None
        return memo[1], lease.held_by(self)

    def band(self, zone: str) -> ForecastBand | None:
        """The band of the zone's forecast last served by this worker (None: never asked)."""
        return self._bands.get(zone)

    async def aclose(self) -> None:
        """Stop the cache's shared fetches (shutdown)."""
        await self.cache.aclose()


def _utc_now() -> datetime:
    return datetime.now(UTC)
