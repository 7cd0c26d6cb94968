"""Composition of the carbon-intensity data stack, called once per worker by the app lifespan.

Why a helper: the app factory is the single composition root, but which pieces the carbon data
needs (adapter, breaker, store, two-tier cache, layered assembly, background refresh) depends on
settings in ways the factory should not have to know. `build_carbon_stack` returns one object with
the provider the service calls plus the hooks the app needs for /health, /readyz and shutdown.

Settings map as follows:
- no `electricitymaps.api_key`  → `provider` is the offline provider itself; no live call ever.
- key set                       → `LayeredCarbonProvider(CachedSeriesSource(ElectricityMapsProvider))`
                                  with the offline provider beyond the horizon and on any failure.
- a shared `store` (the runtime's Redis) → behind the in-process tier; else a `MemoryStore`.
- `cache.background_refresh` and `electricitymaps.prefetch_zones` → a refresher task per worker
  (replicas coordinate through the Redis lock, so each entry is still fetched once); our
  forecaster's fits of those zones are refreshed the same way.
- `carbon_chain.forecast_live_history` (default on) with Electricity Maps on lifecycle factors →
  the forecaster fits on that source's measured history (`live_history.py`), else on the replay.
Nothing connects here: the runtime builds the one store (Redis is dialled lazily, gunicorn forks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from carbon_optimizer.domain.models import CarbonSeries
from carbon_optimizer.errors import UnknownZone
from carbon_optimizer.health import ComponentStatus
from carbon_optimizer.providers.carbon.base import BundledSeries, CarbonSource, SeriesKind
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.providers.carbon.forecast import SOURCE_NAME as FORECAST_SOURCE
from carbon_optimizer.providers.carbon.forecast import (
    ForecastBand,
    ForecastSource,
    HistoryFn,
    backtested_mape_pct,
)
from carbon_optimizer.providers.carbon.gb_intensity import UPSTREAM as GB_UPSTREAM
from carbon_optimizer.providers.carbon.gb_intensity import GBIntensityProvider
from carbon_optimizer.providers.carbon.live_history import HistorySource, LiveHistory
from carbon_optimizer.providers.carbon.offline import REPLAY_LABEL, OfflineCarbonProvider
from carbon_optimizer.providers.carbon.watttime import UPSTREAM as WATTTIME_UPSTREAM
from carbon_optimizer.providers.carbon.watttime import WattTimeProvider
from carbon_optimizer.providers.store import CacheStore, MemoryStore
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState, SourceStatus
from carbon_optimizer.settings import Settings


@dataclass
class CarbonStack:
    """The carbon data stack of one worker: what to call, and how to watch and stop it."""

    provider: CarbonChain
    store: CacheStore | None
    offline: BundledSeries | None = None
    live: ElectricityMapsProvider | None = None
    cache: CachedSeriesSource | None = None
    caches: tuple[CachedSeriesSource, ...] = ()
    forecast: ForecastSource | None = None  # our forecaster, when in the chain (bands per zone)

    async def aclose(self) -> None:
        """Stop background refresh tasks (the store belongs to the runtime, which closes it)."""
        for cache in self.caches or ((self.cache,) if self.cache is not None else ()):
            await cache.aclose()
        if self.forecast is not None:
            await self.forecast.aclose()

    def health(self) -> dict[str, object]:
        """Component status for /health: JSON-able, no I/O, no secrets."""
        offline_name = self.offline.name if self.offline is not None else "offline"
        sources: dict[str, object] = {"offline": {"name": offline_name, "status": ComponentStatus.OK}}
        others, circuits, others_degraded = self._other_sources()
        if self.live is None and not others:
            return {
                "status": ComponentStatus.OK,
                "mode": "offline",
                "cache": {"backend": "none", "status": ComponentStatus.DISABLED},
                "sources": {"electricitymaps": {"configured": False}, **sources},
                "circuit": {},
                "data_age_s": {},
            }
        cache = (
            self.cache.health()
            if self.cache is not None
            else {"backend": "none", "status": ComponentStatus.DISABLED}
        )
        em: dict[str, object] = {"configured": False}
        degraded = others_degraded or cache.get("status") is ComponentStatus.DEGRADED
        if self.live is not None:
            circuit = self.live.breaker.state
            em = {"configured": True, "circuit": circuit.value, **self.live.status.as_dict()}
            circuits = {self.live.name: circuit.value, **circuits}
            degraded = degraded or circuit is not CircuitState.CLOSED
        return {
            "status": ComponentStatus.DEGRADED if degraded else ComponentStatus.OK,
            "mode": "live",
            "cache": cache,
            "sources": {"electricitymaps": em, **others, **sources},
            "circuit": circuits,
            "data_age_s": self.provider.data_age_s(),
        }

    def _other_sources(self) -> tuple[dict[str, object], dict[str, str], bool]:
        """Entries, circuits and whether any is open, for the live sources besides Electricity Maps."""
        entries: dict[str, object] = {}
        circuits: dict[str, str] = {}
        degraded = False
        for cache in self.caches:
            source = cache.source
            if source is self.live:
                continue
            breaker = getattr(source, "breaker", None)
            state = breaker.state if isinstance(breaker, CircuitBreaker) else CircuitState.CLOSED
            status = getattr(source, "status", None)
            entry: dict[str, object] = {"configured": True, "circuit": state.value}
            if isinstance(status, SourceStatus):
                entry.update(status.as_dict())
            entries[source.name] = entry
            circuits[source.name] = state.value
            degraded = degraded or state is not CircuitState.CLOSED
        return entries, circuits, degraded

    async def ready(self) -> bool:
        """True when answerable: the cache is reachable, or there is no shared cache to reach."""
        return True if self.store is None else await self.store.ping()


_VERDICT_MARGIN_S = 0.05


def _electricitymaps(
    settings: Settings, http: httpx.AsyncClient
) -> tuple[ElectricityMapsProvider, str] | None:
    """The Electricity Maps adapter and its cache variant, when a key is configured."""
    em = settings.electricitymaps
    if em.api_key is None:
        return None
    breaker = CircuitBreaker(
        "electricitymaps",
        failure_threshold=settings.cache.breaker_failure_threshold,
        reset_s=settings.cache.breaker_reset_s,
    )
    # The variant keeps the key scheme entries have always had: `<eft>-h<horizon>`.
    return ElectricityMapsProvider(
        http, em, breaker=breaker
    ), f"{em.emission_factor_type}-h{em.forecast_horizon_hours}"


def _breaker(name: str, settings: Settings) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_threshold=settings.cache.breaker_failure_threshold,
        reset_s=settings.cache.breaker_reset_s,
    )


def _watttime(settings: Settings, http: httpx.AsyncClient) -> tuple[WattTimeProvider, str] | None:
    """The WattTime adapter (marginal and average), when a username and password are configured."""
    wt = settings.watttime
    if not wt.username or wt.password is None:
        return None
    # One variant for both signals: the cache appends `:marginal` to marginal keys.
    return WattTimeProvider(http, wt, breaker=_breaker(WATTTIME_UPSTREAM, settings)), WATTTIME_UPSTREAM


def _gb_intensity(settings: Settings, http: httpx.AsyncClient) -> tuple[GBIntensityProvider, str] | None:
    """The GB Carbon Intensity adapter (no key needed), when enabled."""
    gb = settings.gb_intensity
    if not gb.enabled:
        return None
    return GBIntensityProvider(http, gb, breaker=_breaker(GB_UPSTREAM, settings)), GB_UPSTREAM


# Every live carbon source, in default priority order: a builder returns (adapter, cache variant)
# or None when the source is not configured. A new source is one builder here (its variant must
# start with its name so its keys never meet another source's) plus its own settings section.
SOURCE_BUILDERS: tuple[Callable[[Settings, httpx.AsyncClient], tuple[CarbonSource, str] | None], ...] = (
    _electricitymaps,
    _watttime,
    _gb_intensity,
)


async def build_carbon_stack(
    settings: Settings,
    *,
    http: httpx.AsyncClient,
    offline: BundledSeries,
    store: CacheStore | None = None,
    clock: Callable[[], datetime] | None = None,
) -> CarbonStack:
    """Build the stack the settings ask for (see the module docstring); connects to nothing.

    `clock` is the wall clock that decides which hours are past (history) and future (forecast);
    the app passes its own so that one injected clock governs the whole request.
    """
    em = settings.electricitymaps
    cache_settings = settings.cache
    built = [b for b in (builder(settings, http) for builder in SOURCE_BUILDERS) if b is not None]
    routes = settings.carbon_chain.routes or None
    # Our forecaster needs hourly history: only over the real bundled data (not a test's flat fake).
    forecasting = settings.carbon_chain.forecast and isinstance(offline, OfflineCarbonProvider)
    if not built:
        if not (forecasting and settings.carbon_chain.forecast_offline):
            chain = CarbonChain((), offline, live_deadline_s=em.request_deadline_s, clock=clock)
            return CarbonStack(provider=chain, store=None, offline=offline)
        # Offline: history is the bundled replay itself; fits are cached per process.
        fitted = _forecast_source(
            settings, offline, store or MemoryStore(max_entries=cache_settings.local_max_entries), clock
        )
        chain = CarbonChain((fitted,), offline, live_deadline_s=em.request_deadline_s, clock=clock)
        return CarbonStack(provider=chain, store=None, offline=offline, forecast=fitted)
    if store is None:
        store = MemoryStore(max_entries=cache_settings.local_max_entries)
    caches = [
        CachedSeriesSource(
            source, store, cache_settings, key_prefix=settings.redis.key_prefix, variant=variant
        )
        for source, variant in built
    ]
    # Each adapter enforces its own request deadline and records the verdict (breaker failure)
    # when it expires; the chain's bound must fire a little later, or a cancelled fetch would
    # record nothing and the breaker would open late (a race between two equal deadlines).
    live_deadline_s = em.request_deadline_s + _VERDICT_MARGIN_S
    forecast: ForecastSource | None = None
    sources: list[CarbonSource] = list(caches)
    chain_ref: list[CarbonChain] = []  # the chain is built below; the history reads its routes
    if forecasting:
        # History: the zone's first live source that has measured history (kept in the store and
        # extended hourly, providers/carbon/live_history.py), the bundled replay for the rest.
        history: HistoryFn | None = None
        if settings.carbon_chain.forecast_live_history:
            history = _live_history(settings, caches, offline, store, chain_ref, clock)
        forecast = _forecast_source(settings, offline, store, clock, history_fn=history)
        sources.append(forecast)
        if routes is not None:  # last in every route: only where the zone's live sources stop
            routes = {
                z: [*names, FORECAST_SOURCE] if FORECAST_SOURCE not in names else names
                for z, names in routes.items()
            }
    chain = CarbonChain(sources, offline, live_deadline_s=live_deadline_s, routes=routes, clock=clock)
    chain_ref.append(chain)
    live = next((s for s, _ in built if isinstance(s, ElectricityMapsProvider)), None)
    cache = next((c for c in caches if c.source is live), caches[0])
    if cache_settings.background_refresh and em.prefetch_zones:
        cache.start_background_refresh(em.prefetch_zones)
        if forecast is not None:  # refit those zones ahead of expiry: no request waits for a fit
            fitted_zones = [z for z in em.prefetch_zones if forecast.covers(z)]
            forecast.cache.start_background_refresh(fitted_zones, kinds=(SeriesKind.FORECAST,))
    return CarbonStack(
        provider=chain,
        store=store,
        offline=offline,
        live=live,
        cache=cache,
        caches=tuple(caches),
        forecast=forecast,
    )


def _live_history(
    settings: Settings,
    caches: list[CachedSeriesSource],
    offline: BundledSeries,
    store: CacheStore,
    chain_ref: list[CarbonChain],
    clock: Callable[[], datetime] | None,
) -> LiveHistory | None:
    """The forecaster's live history over the configured sources whose values are lifecycle.

    Only sources of the bundled data's emission-factor type (Electricity Maps with `lifecycle`,
    the default): WattTime and GB Carbon Intensity publish direct (operational) emissions, and a
    history glued from both kinds would shift the forecast's level. The zone's sources are asked
    in the chain's priority order (`carbon_chain.routes`), the first one with history wins.
    """
    em = settings.electricitymaps
    by_name: dict[str, HistorySource] = {}
    for cache in caches:
        if isinstance(cache.source, ElectricityMapsProvider) and em.emission_factor_type == "lifecycle":
            by_name[cache.name] = HistorySource(cache.name, cache.source, cache, em.emission_factor_type)
    if not by_name:
        return None

    def route(zone: str) -> list[HistorySource]:
        ordered = chain_ref[0].route(zone) if chain_ref else ()
        return [by_name[s.name] for s in ordered if s.name in by_name]

    epoch = (lambda: clock().timestamp()) if clock is not None else time.time
    return LiveHistory(route, offline, store, key_prefix=settings.redis.key_prefix, clock=epoch)


def _forecast_source(
    settings: Settings,
    history: BundledSeries | CarbonChain,
    store: CacheStore,
    clock: Callable[[], datetime] | None,
    *,
    history_fn: HistoryFn | None = None,
) -> ForecastSource:
    """Our forecaster over `history_fn`, else `history` (a chain or the bundled data), in `store`."""
    offline = history.offline if isinstance(history, CarbonChain) else history

    async def read(zone: str, start: datetime, end: datetime) -> CarbonSeries:
        if isinstance(history, CarbonChain):
            return (await history.series(zone, start, end)).series
        return await history.series(zone, start, end)

    def covers(zone: str) -> bool:
        # Only zones with hourly history: a flat annual mean forecasts nothing.
        if not isinstance(offline, OfflineCarbonProvider):
            return False
        try:
            return offline.source_label(zone) == REPLAY_LABEL
        except UnknownZone:
            return False

    return ForecastSource(
        history_fn or read,
        store,
        settings.cache,
        covers=covers,
        key_prefix=settings.redis.key_prefix,
        clock=clock,
    )


# Re-exported for the service's uncertainty step (outside the wing only `stack` is imported).
__all__ = [
    "SOURCE_BUILDERS",
    "CarbonStack",
    "ForecastBand",
    "ForecastSource",
    "backtested_mape_pct",
    "build_carbon_stack",
]
