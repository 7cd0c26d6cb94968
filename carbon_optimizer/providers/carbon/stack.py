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
  (replicas coordinate through the Redis lock, so each entry is still fetched once).
Nothing connects here: the runtime builds the one store (Redis is dialled lazily, gunicorn forks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from carbon_optimizer.providers.carbon.base import BundledSeries
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.providers.store import CacheStore, MemoryStore
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState
from carbon_optimizer.settings import Settings


@dataclass
class CarbonStack:
    """The carbon data stack of one worker: what to call, and how to watch and stop it."""

    provider: CarbonChain
    store: CacheStore | None
    offline: BundledSeries | None = None
    live: ElectricityMapsProvider | None = None
    cache: CachedSeriesSource | None = None

    async def aclose(self) -> None:
        """Stop background refresh tasks (the store belongs to the runtime, which closes it)."""
        if self.cache is not None:
            await self.cache.aclose()

    def health(self) -> dict[str, object]:
        """Component status for /health: JSON-able, no I/O, no secrets."""
        offline_name = self.offline.name if self.offline is not None else "offline"
        sources: dict[str, object] = {"offline": {"name": offline_name, "status": "ok"}}
        if self.live is None:
            return {
                "status": "ok",
                "mode": "offline",
                "cache": {"backend": "none", "status": "healthy"},
                "sources": {"electricitymaps": {"configured": False}, **sources},
                "circuit": {},
                "data_age_s": {},
            }
        circuit = self.live.breaker.state
        cache = self.cache.health() if self.cache is not None else {"backend": "none", "status": "healthy"}
        degraded = circuit is not CircuitState.CLOSED or cache.get("status") != "healthy"
        return {
            "status": "degraded" if degraded else "ok",
            "mode": "live",
            "cache": cache,
            "sources": {
                "electricitymaps": {
                    "configured": True,
                    "circuit": circuit.value,
                    **self.live.status.as_dict(),
                },
                **sources,
            },
            "circuit": {self.live.name: circuit.value},
            "data_age_s": self.provider.data_age_s(),
        }

    async def ready(self) -> bool:
        """True when answerable: the cache is reachable, or there is no shared cache to reach."""
        return True if self.store is None else await self.store.ping()


_VERDICT_MARGIN_S = 0.05


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
    if em.api_key is None:
        chain = CarbonChain((), offline, live_deadline_s=em.request_deadline_s, clock=clock)
        return CarbonStack(provider=chain, store=None, offline=offline)
    cache_settings = settings.cache
    if store is None:
        store = MemoryStore(max_entries=cache_settings.local_max_entries)
    breaker = CircuitBreaker(
        "electricitymaps",
        failure_threshold=cache_settings.breaker_failure_threshold,
        reset_s=cache_settings.breaker_reset_s,
    )
    live = ElectricityMapsProvider(http, em, breaker=breaker)
    cache = CachedSeriesSource(
        live,
        store,
        cache_settings,
        key_prefix=settings.redis.key_prefix,
        variant=f"{em.emission_factor_type}-h{em.forecast_horizon_hours}",
    )
    # The adapter enforces `request_deadline_s` itself and records the verdict (breaker failure)
    # when it expires; the outer bound must fire a little later, or a cancelled fetch would record
    # nothing and the breaker would open late (a race between two equal deadlines).
    live_deadline_s = em.request_deadline_s + _VERDICT_MARGIN_S
    layered = CarbonChain([cache], offline, live_deadline_s=live_deadline_s, clock=clock)
    if cache_settings.background_refresh and em.prefetch_zones:
        cache.start_background_refresh(em.prefetch_zones)
    return CarbonStack(provider=layered, store=store, offline=offline, live=live, cache=cache)
