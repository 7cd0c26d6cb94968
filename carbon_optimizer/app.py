"""App factory: the single composition root.

`create_app()` builds a FastAPI app; its lifespan builds the per-worker clients (one
`httpx.AsyncClient`, the cache store, the data stacks) and closes them in reverse order. Nothing
connects at import time, so gunicorn can fork safely. Tests pass `settings` and `overrides`
(hand-written fakes for providers, a fixed clock) instead of patching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

from carbon_optimizer import __version__
from carbon_optimizer.api.errors import install_error_handlers, use_problem_media_type
from carbon_optimizer.api.middleware import RequestEdgeMiddleware
from carbon_optimizer.api.ratelimit import install_rate_limit
from carbon_optimizer.api.result_cache import ResultCache
from carbon_optimizer.api.routes import catalog, health, optimize
from carbon_optimizer.api.routes import ledger as ledger_routes
from carbon_optimizer.api.security import PROBE_PATHS, extend_openapi, install_security
from carbon_optimizer.api.state import AppState
from carbon_optimizer.cache import RedisStore
from carbon_optimizer.carbon_stack import build_carbon_stack
from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.ledger.ledger import Ledger, catalog_resolver, open_ledger
from carbon_optimizer.logging_config import AccessLogMiddleware
from carbon_optimizer.providers.base import CarbonIntensityProvider, PriceProvider
from carbon_optimizer.providers.bundled import load_region_catalog
from carbon_optimizer.providers.offline_carbon import OfflineCarbonProvider
from carbon_optimizer.providers.price_catalog import BundledPriceProvider
from carbon_optimizer.providers.prices.stack import build_price_stack
from carbon_optimizer.service import OptimizerService, utc_now
from carbon_optimizer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppOverrides:
    """Test seams: replace a data source or the clock without touching the network."""

    carbon: CarbonIntensityProvider | None = None
    prices: PriceProvider | None = None
    clock: Callable[[], datetime] | None = None


def _http_client(settings: Settings) -> httpx.AsyncClient:
    em = settings.electricitymaps
    return httpx.AsyncClient(
        timeout=httpx.Timeout(em.read_timeout_s, connect=em.connect_timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"user-agent": f"carbon-optimizer/{__version__}"},
    )


@asynccontextmanager
async def runtime(settings: Settings, overrides: AppOverrides | None = None) -> AsyncIterator[AppState]:
    """Build every per-process component (clients, caches, data stacks, service); close in reverse.

    Used by the app lifespan (once per worker) and by the CLI's in-process `plan`, so both run the
    very same stack.
    """
    overrides = overrides or AppOverrides()
    async with AsyncExitStack() as stack:
        started = time.monotonic()
        http = await stack.enter_async_context(_http_client(settings))
        catalog = load_region_catalog()
        offline = OfflineCarbonProvider()
        bundled = BundledPriceProvider()
        health_reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        readiness: list[Callable[[], Awaitable[bool]]] = []
        # Carbon: Electricity Maps through the two-tier cache when a key is set, else bundled data.
        clock = overrides.clock or utc_now
        carbon_stack = await build_carbon_stack(settings, http=http, offline=offline, clock=clock)
        stack.push_async_callback(carbon_stack.aclose)
        carbon: CarbonIntensityProvider = overrides.carbon or carbon_stack.provider
        health_reporters["carbon"] = carbon_stack.health
        # Readiness deliberately does not follow Redis: every replica shares it, so failing readiness
        # on a Redis outage would take the whole fleet out of rotation while each pod still answers
        # from its in-process tier and bundled data. /health reports the degraded cache instead.

        # Prices: cache → live APIs (when enabled and credentialed) → bundled tables. They share the
        # Redis store when one is configured; store=None (embedded) means the local file cache that
        # `carbon-optimizer prices refresh` writes.
        shared_store = carbon_stack.store if isinstance(carbon_stack.store, RedisStore) else None
        if shared_store is None and settings.redis.url is not None:
            shared_store = RedisStore.from_settings(settings.redis)
            stack.push_async_callback(shared_store.aclose)
        price_stack = await build_price_stack(settings, http=http, bundled=bundled, store=shared_store)
        health_reporters["cache"] = _cache_health(carbon_stack.health, shared_store)
        health_reporters["bundled_data"] = _bundled_data_health(bundled)
        stack.push_async_callback(price_stack.aclose)
        prices: PriceProvider = overrides.prices or price_stack.provider
        health_reporters["prices"] = price_stack.health

        service = OptimizerService(
            catalog=catalog,
            carbon=carbon,
            prices=prices,
            fallback_carbon=offline,
            fallback_prices=bundled,
            max_window=timedelta(days=settings.max_window_days),
            onprem_pue=settings.onprem_pue,
            clock=clock,
        )
        state = AppState(
            settings=settings,
            service=service,
            catalog=catalog,
            bundled_prices=bundled,
            started_at=started,
            health_reporters=health_reporters,
            readiness_checks=readiness,
            result_cache=ResultCache(
                max_entries=settings.result_cache_entries if settings.result_cache_ttl_s > 0 else 0,
                ttl_s=settings.result_cache_ttl_s,
            ),
        )
        health_reporters.setdefault("carbon", lambda: {"status": "embedded", "source": "bundled"})
        # Warm the bundled data now so the first request and /readyz see it loaded.
        now = service.clock()
        await offline.series("DE", now, now + timedelta(hours=1))
        await bundled.offers("aws", "us-east-1", PriceType.ON_DEMAND)
        state.ready = True
        log.info("carbon-optimizer ready in %.2f s", time.monotonic() - started)
        try:
            yield state
        finally:
            state.ready = False


def _cache_health(
    carbon_health: Callable[[], dict[str, Any]], shared: RedisStore | None
) -> Callable[[], dict[str, Any]]:
    """Reporter for the shared cache: the carbon cache's view, else the price store's, else embedded."""

    def report() -> dict[str, Any]:
        cache = carbon_health().get("cache")
        if isinstance(cache, dict) and cache.get("backend") not in (None, "none"):
            return cache
        if shared is not None:
            return {"backend": "redis", "status": "ok" if shared.healthy else "degraded"}
        return {"backend": "memory", "status": "embedded"}

    return report


def _bundled_data_health(bundled: BundledPriceProvider) -> Callable[[], dict[str, Any]]:
    """Reporter for the bundled fallback data: what it is and how old the price tables are."""
    summary: dict[str, Any] = {}

    def report() -> dict[str, Any]:
        if not summary:  # computed once, on the first /health call, never on the request path
            today = datetime.now(UTC).date()
            prices: dict[str, Any] = {}
            for provider in ("aws", "azure", "gcp", "lambda"):
                newest = bundled.newest_as_of(provider)
                prices[provider] = {
                    "newest_as_of": newest.isoformat() if newest else None,
                    "age_days": (today - newest).days if newest else None,
                }
            summary.update(
                status="ok",
                carbon="Electricity Maps hourly 2023 (19 zones, replayed) + yearly averages (ODbL)",
                prices=prices,
            )
        return summary

    return report


@asynccontextmanager
async def _ledger(settings: Settings, state: AppState) -> AsyncIterator[Ledger | None]:
    """The savings ledger (issue 15): database, write queue and reconciler; None when disabled.

    Reconciles with the same carbon provider the service ranks with (live history through the
    cache when configured, the bundled data offline), through the `CarbonIntensityProvider` protocol.
    """
    if not settings.database.enabled:
        yield None
        return
    async with open_ledger(
        settings.database,
        settings.ledger,
        carbon=state.service.carbon,
        fallback=state.service.fallback_carbon,
        resolver=catalog_resolver(state.catalog),
        clock=state.service.clock,
        signal=f"location-based average, {settings.electricitymaps.emission_factor_type}",
    ) as ledger:
        state.health_reporters["ledger"] = ledger.health
        yield ledger


def _lifespan(settings: Settings, overrides: AppOverrides) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime(settings, overrides) as state, _ledger(settings, state) as ledger:
            app.state.co = state
            app.state.ledger = ledger
            yield

    return lifespan


def create_app(settings: Settings | None = None, overrides: AppOverrides | None = None) -> FastAPI:
    """Build the ASGI app (gunicorn/uvicorn call this as a factory)."""
    settings = settings or Settings()
    overrides = overrides or AppOverrides()
    app = FastAPI(
        title="carbon-optimizer",
        version=__version__,
        description=(
            "Ranks (location, start time) placements of a compute workload by carbon and price, "
            "explains its answer and keeps answering when data sources fail. Carbon intensity data: "
            "Electricity Maps (electricitymaps.com), 2023 hourly datasets, ODbL."
        ),
        lifespan=_lifespan(settings, overrides),
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    install_error_handlers(app)
    app.include_router(optimize.router)
    app.include_router(catalog.router)
    app.include_router(health.router)
    ledger_routes.install(app)
    extend_openapi(app, use_problem_media_type)
    # Security layer (issue 6), installed before the instrumentator so 401/429 are counted too.
    # Resulting order, outermost first: access log → request edge → metrics → security headers →
    # CORS → rate limit → API-key auth → routes (see api/security.py).
    install_security(app, settings)
    install_rate_limit(app, settings)
    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=False
    )
    app.add_middleware(RequestEdgeMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, skip_paths=PROBE_PATHS)
    return app
