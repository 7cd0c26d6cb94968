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
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
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
from carbon_optimizer.api.security import PROBE_PATHS, extend_openapi, install_security
from carbon_optimizer.api.state import AppState
from carbon_optimizer.domain.models import PriceType
from carbon_optimizer.logging_config import AccessLogMiddleware
from carbon_optimizer.providers.base import CarbonIntensityProvider, PriceProvider
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import build_carbon_stack
from carbon_optimizer.providers.catalog import load_region_catalog
from carbon_optimizer.providers.prices.bundled import BundledPriceProvider
from carbon_optimizer.providers.prices.stack import build_price_stack
from carbon_optimizer.providers.store import CacheStore, FileStore, KeyValueStore, build_store
from carbon_optimizer.service import OptimizerService, utc_now
from carbon_optimizer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppOverrides:
    """Test seams: replace a data source, the HTTP client, the store or the clock.

    `http` is the one client every adapter uses (tests pass `httpx.AsyncClient(transport=
    httpx.MockTransport(...))`, so nothing patches httpx globally); `store` replaces the shared
    key-value store (e.g. a `MemoryStore`, or a store that fails on cue). Neither is closed by
    the runtime: whoever made them closes them.
    """

    carbon: CarbonIntensityProvider | None = None
    prices: PriceProvider | None = None
    clock: Callable[[], datetime] | None = None
    http: httpx.AsyncClient | None = None
    store: CacheStore | None = None


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

    The only place that builds the HTTP client, the store and the two stacks. Used by the app
    lifespan (once per worker) and by the CLI (`plan`, `estimate`, `prices refresh`), so all of
    them run the very same stack.
    """
    overrides = overrides or AppOverrides()
    async with AsyncExitStack() as stack:
        started = time.monotonic()
        http = overrides.http
        if http is None:
            http = await stack.enter_async_context(_http_client(settings))
        # One shared store per process (Redis when configured), for the carbon and the price cache.
        shared_store: CacheStore | None = overrides.store
        if shared_store is None:
            shared_store = build_store(settings.redis)
            if shared_store is not None:
                stack.push_async_callback(shared_store.aclose)
        catalog = load_region_catalog()
        offline = OfflineCarbonProvider()
        bundled = BundledPriceProvider()
        health_reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        readiness: list[Callable[[], Awaitable[bool]]] = []
        # Carbon: Electricity Maps through the two-tier cache when a key is set, else bundled data.
        clock = overrides.clock or utc_now
        carbon_stack = await build_carbon_stack(
            settings, http=http, offline=offline, store=shared_store, clock=clock
        )
        stack.push_async_callback(carbon_stack.aclose)
        carbon: CarbonIntensityProvider = overrides.carbon or carbon_stack.provider
        health_reporters["carbon"] = carbon_stack.health
        # Readiness deliberately does not follow Redis: every replica shares it, so failing readiness
        # on a Redis outage would take the whole fleet out of rotation while each pod still answers
        # from its in-process tier and bundled data. /health reports the degraded cache instead.

        # Prices: cache → live APIs (when enabled and credentialed) → bundled tables. They share the
        # store; without one (embedded) the local file cache that `prices refresh` writes.
        price_backend: KeyValueStore = (
            shared_store if shared_store is not None else FileStore(settings.pricing.file_cache_dir)
        )
        price_stack = await build_price_stack(settings, http=http, bundled=bundled, store=price_backend)
        health_reporters["cache"] = _cache_health(carbon_stack.health, shared_store)
        health_reporters["bundled_data"] = _bundled_data_health(bundled)
        stack.push_async_callback(price_stack.aclose)
        prices: PriceProvider = overrides.prices or price_stack.provider
        health_reporters["prices"] = price_stack.health

        service = OptimizerService(
            catalog=catalog,
            carbon=carbon,
            prices=prices,
            fallback_prices=bundled,
            max_window=timedelta(days=settings.max_window_days),
            onprem_pue=settings.onprem_pue,
            clock=clock,
        )
        state = AppState(
            settings=settings,
            http=http,
            price_store=price_backend,
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
        state.readiness.ready = True
        log.info("carbon-optimizer ready in %.2f s", time.monotonic() - started)
        try:
            yield state
        finally:
            state.readiness.ready = False


def _cache_health(
    carbon_health: Callable[[], dict[str, Any]], shared: KeyValueStore | None
) -> Callable[[], dict[str, Any]]:
    """Reporter for the shared cache: the carbon cache's view, else the price store's, else embedded."""

    def report() -> dict[str, Any]:
        cache = carbon_health().get("cache")
        if isinstance(cache, dict) and cache.get("backend") not in (None, "none"):
            return cache
        if shared is not None:
            return {"backend": shared.name, "status": "ok" if shared.healthy else "degraded"}
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


def _lifespan(
    settings: Settings, overrides: AppOverrides
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # Starlette copies the yielded mapping into every request's `request.state`.
        async with runtime(settings, overrides) as state:
            yield {"co": state}

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
